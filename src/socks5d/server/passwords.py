"""The RFC 1929 password check of the server: `Authenticator`, which checks a username and
password against the `UserDatabase` without blocking the event loop.

The slow hash never runs on the event loop, nor unbounded: it goes through the server's
`HashPool`. Nothing here ever logs a password; nothing here speaks the protocol (that is
`socks5d.server.auth`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from socks5d.server.hashing import HashPool
from socks5d.users import PasswordHash, UserDatabase


@dataclass(slots=True)
class _SharedCheck:
    """One slow check, and how many logins wait for it."""

    future: asyncio.Future[bool]
    waiters: int = 0


class Authenticator:
    """Checks RFC 1929 credentials against a `UserDatabase` without blocking the loop.

    The slow hash (scrypt) runs in `pool`, bounded, and is paid once per user and password,
    not once per connection: a successful check is remembered for `cache_ttl` seconds as
    HMAC-SHA256(key, user, password) under a random key made at start, beside the stored hash
    it matched. A later login with the same password and an unchanged stored hash is accepted
    from memory, waiting in no queue; a wrong password does not evict it (else a flood of
    guesses at a name would send its owner to the back of the queue). Nothing that could be
    replayed or cracked offline leaves the process, failures are never cached, and a password
    changed in the users file misses the cache. An unknown user's check hashes a decoy
    through the same pool: it costs the same, so timing tells no names.
    """

    def __init__(
        self, users: UserDatabase | None, *, pool: HashPool, cache_ttl: float = 0.0
    ) -> None:
        self.users = users
        self.pool = pool
        self.cache_ttl = cache_ttl
        self._key = secrets.token_bytes(32)
        #: user -> (the stored hash that matched, proof of the password, expiry)
        self._verified: dict[str, tuple[PasswordHash, bytes, float]] = {}
        #: (user, proof) -> the slow check running or waiting for it
        self._checking: dict[tuple[str, bytes], _SharedCheck] = {}

    def _proof(self, username: str, password: str) -> bytes:
        message = f"{username}\0{password}".encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def cached(self, username: str, password: str) -> bool:
        """True when these credentials were verified within `cache_ttl`, against the hash
        the users file still has. Fast; a stale entry is dropped, a mismatch keeps it."""
        entry = self._verified.get(username)
        if entry is None:
            return False
        stored, proof, expiry = entry
        users = self.users
        if users is None or users.lookup(username) != stored or expiry <= time.monotonic():
            del self._verified[username]
            return False
        return hmac.compare_digest(proof, self._proof(username, password))

    async def verify(self, username: str, password: str) -> bool:
        """True when the credentials are valid: from the cache, else `check`.

        Raises:
            PoolFull: the password checks are all taken.
        """
        return self.cached(username, password) or await self.check(username, password)

    async def check(self, username: str, password: str) -> bool:
        """The slow check, in the pool. Logins with the same name and password at the same
        time share one; when the last of them stops waiting (cancelled), the check is given
        up (dropped from the queue if it has not started).

        Raises:
            PoolFull: the password checks are all taken.
        """
        users = self.users
        if users is None:
            return False
        stored = users.lookup(username)
        proof = self._proof(username, password)
        key = (username, proof)
        shared = self._checking.get(key)
        if shared is None or shared.future.cancelled():
            future = self.pool.submit(users.verify, username, password)
            shared = self._checking[key] = _SharedCheck(future)
            future.add_done_callback(lambda _: self._forget(key, future))
        shared.waiters += 1
        try:
            ok = await asyncio.shield(shared.future)
        finally:
            shared.waiters -= 1
            if not shared.waiters and not shared.future.done():
                shared.future.cancel()  # nobody waits for it any more
        if ok and stored is not None and self.cache_ttl > 0 and users is self.users:
            self._verified[username] = (stored, proof, time.monotonic() + self.cache_ttl)
        return ok

    def _forget(self, key: tuple[str, bytes], future: asyncio.Future[bool]) -> None:
        shared = self._checking.get(key)
        if shared is not None and shared.future is future:
            del self._checking[key]
