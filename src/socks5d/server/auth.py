"""Authentication policy: which method to select, and checking usernames and passwords."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

from socks5d.proto.constants import AuthMethod
from socks5d.users import PasswordHash, UserDatabase


def choose_method(offered: Iterable[int], preference: Iterable[AuthMethod]) -> int:
    """The first method of the server's `preference` the client offered, else X'FF'.

    RFC 1928 §3: "The server selects from one of the methods given in METHODS, and sends a
    METHOD selection message"; "If the selected METHOD is X'FF', none of the methods listed by
    the client are acceptable".
    """
    offered_set = set(offered)
    for method in preference:
        if method in offered_set:
            return method
    return AuthMethod.NO_ACCEPTABLE_METHODS


class Authenticator:
    """Checks RFC 1929 credentials against a `UserDatabase` without blocking the loop.

    The slow hash (scrypt) is paid once per user and password, not once per connection: a
    successful check is remembered for `cache_ttl` seconds as HMAC-SHA256(key, user, password)
    under a random key made at start, beside the stored hash it matched. A later login with
    the same password and an unchanged stored hash is accepted from memory. Nothing that could
    be replayed or cracked offline leaves the process, failures are never cached (they stay
    slow, and are throttled), and a password changed in the users file misses the cache.
    """

    def __init__(self, users: UserDatabase | None, cache_ttl: float = 0.0) -> None:
        self.users = users
        self.cache_ttl = cache_ttl
        self._key = secrets.token_bytes(32)
        #: user -> (the stored hash that matched, proof of the password, expiry)
        self._verified: dict[str, tuple[PasswordHash, bytes, float]] = {}
        #: (user, proof) -> the slow check running for it
        self._checking: dict[tuple[str, bytes], asyncio.Future[bool]] = {}

    def _proof(self, username: str, password: str) -> bytes:
        message = f"{username}\0{password}".encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def verify(self, username: str, password: str) -> bool:
        """True when the credentials are valid; the slow hash runs in a worker thread."""
        users = self.users
        if users is None:
            return False
        stored = users.lookup(username)
        proof = self._proof(username, password)
        now = time.monotonic()
        cached = self._verified.get(username)
        if cached is not None:
            if cached[0] == stored and cached[2] > now and hmac.compare_digest(cached[1], proof):
                return True
            del self._verified[username]
        # Logins with the same name and password at the same time share one slow check.
        key = (username, proof)
        check = self._checking.get(key)
        if check is None:
            check = self._checking[key] = asyncio.ensure_future(
                asyncio.to_thread(users.verify, username, password)
            )
            check.add_done_callback(lambda _: self._checking.pop(key, None))
        ok = await asyncio.shield(check)
        if ok and stored is not None and self.cache_ttl > 0:
            self._verified[username] = (stored, proof, now + self.cache_ttl)
        return ok
