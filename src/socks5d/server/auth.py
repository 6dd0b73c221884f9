"""Authentication policy: which method to select, and the RFC 1929 username/password
subnegotiation of one session (checking the password, throttling the guessing).

The slow hash never runs on the event loop, nor unbounded: it goes through the server's
`HashPool`. Nothing here ever logs a password.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from socks5d import proto
from socks5d.errors import AuthFailed
from socks5d.proto.constants import AuthMethod
from socks5d.server.hashing import HashPool, PoolFull
from socks5d.users import PasswordHash, UserDatabase

if TYPE_CHECKING:
    from socks5d.server.session import Session

log = logging.getLogger(__name__)


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


class _ClientWatch:
    """While the block runs, notice the client closing its connection, and cancel the block.

    The socket is watched for readability and peeked at (MSG_PEEK: nothing is consumed, the
    protocol codec reads every byte): b"" (EOF) or an error means the client is gone. Data
    means a client that sends ahead (its request after the credentials); watching stops there.
    Cancelling and telling that cancellation from any other (the handshake deadline, the
    server closing) follows `asyncio.timeout`: `Task.cancel` and `Task.uncancel`. The block
    is one `await` (the check): the cancellation always lands in it, never after it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = 0
        self._watching = False
        #: the client closed while the block ran
        self.gone = False

    async def __aenter__(self) -> _ClientWatch:
        self._cancelling = self._task.cancelling()
        self._loop.add_reader(self._fd, self._peek)
        self._watching = True
        return self

    def _stop(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._fd)

    def _peek(self) -> None:
        try:
            data = self._sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ECONNRESET and the like: gone as well
            data = b""
        self._stop()
        if not data:
            self.gone = True
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self._stop()
        if self.gone and self._task.uncancel() <= self._cancelling:
            return exc_type is asyncio.CancelledError  # ours: swallowed, `gone` tells
        return False


async def _answer(session: Session, success: bool) -> None:
    status = proto.UserPassStatus.SUCCESS if success else proto.UserPassStatus.FAILURE
    await session.send(proto.AuthResult(status))


async def authenticate_userpass(session: Session, credentials: proto.UserPassAuth) -> None:
    """RFC 1929: check the client's username and password, and answer with the STATUS.

    RFC 1929 §2: "A STATUS field of X'00' indicates success. If the server returns a
    `failure' (STATUS value other than X'00') status, it MUST close the connection."

    Every login is counted by the server's `AuthThrottle` from its start: a client over its
    limit of failed and pending logins, or blocked, is refused before any hash. A login that
    finds the password checks all taken is refused at once, and is no failed login. The
    client leaving while its password waits gives the check up.

    Raises:
        AuthFailed: after the failure status (the session then closes); without one when
            the client left before its password was checked.
    """
    server = session.server
    username = credentials.username
    session.record["user"] = username
    client_ip = session.peer.host
    assert not isinstance(client_ip, proto.DomainName)
    throttle = server.throttle
    try:
        attempt = throttle.begin(client_ip, username, time.monotonic())
    except AuthFailed:
        await _answer(session, False)
        raise
    authenticator = server.authenticator
    ok = authenticator.cached(username, credentials.password)
    if not ok:
        try:
            async with _ClientWatch(session.client) as watch:
                ok = await authenticator.check(username, credentials.password)
        except PoolFull:
            throttle.abandoned(attempt)
            await _answer(session, False)
            raise AuthFailed("too many password checks waiting") from None
        except BaseException:
            throttle.abandoned(attempt)
            raise
        if watch.gone:
            throttle.abandoned(attempt)
            raise AuthFailed("the client left before its password was checked")
    if ok:
        throttle.succeeded(attempt)
        session.user = username
        await _answer(session, True)
        return
    block = throttle.failed(attempt, time.monotonic())
    if block is not None:
        log.warning("%s", block)
    await _answer(session, False)
    raise AuthFailed(f"wrong username or password for {username!r}")
