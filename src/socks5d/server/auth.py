"""Authentication of one session: which method to select, the table of methods
(`AUTHENTICATORS`), and the RFC 1929 username/password subnegotiation (checking the password
through `Authenticator`, throttling the guessing).

Each method runs right after the server selected it, on the session's `SessionContext`, and
reads its own messages. Nothing here ever logs a password.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterable
from types import TracebackType

from socks5d import proto
from socks5d.constants import AuthMethod
from socks5d.errors import AuthFailed, ProtocolError
from socks5d.server.context import AuthenticationMethod, SessionContext
from socks5d.server.gssapi import authenticate_gssapi
from socks5d.server.hashing import PoolFull
from socks5d.server.passwords import Authenticator as Authenticator

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


async def _answer(context: SessionContext, success: bool) -> None:
    status = proto.UserPassStatus.SUCCESS if success else proto.UserPassStatus.FAILURE
    await context.send(proto.AuthResult(status))


async def authenticate_userpass(context: SessionContext) -> None:
    """RFC 1929: read the client's username and password, check them, and answer with the
    STATUS. A client that closes instead of sending them is left to the session, which sees
    the codec closed.

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
    event = await context.next_event()
    if isinstance(event, proto.ConnectionClosed):
        return
    if not isinstance(event, proto.UserPassAuth):
        raise ProtocolError(f"unexpected {type(event).__name__}")
    await check_userpass(context, event)


async def check_userpass(context: SessionContext, credentials: proto.UserPassAuth) -> None:
    """Check the RFC 1929 credentials the client sent, and answer with the STATUS.

    Raises:
        AuthFailed: see `authenticate_userpass`.
    """
    services = context.services
    username = credentials.username
    context.record["user"] = username
    client_ip = context.client_ip
    throttle = services.throttle
    stats = services.stats
    try:
        attempt = throttle.begin(client_ip, username, time.monotonic())
    except AuthFailed:
        stats.limit_refusal("logins")
        stats.auth("userpass", False)
        await _answer(context, False)
        raise
    authenticator = services.authenticator
    ok = authenticator.cached(username, credentials.password)
    if not ok:
        try:
            async with _ClientWatch(context.client) as watch:
                ok = await authenticator.check(username, credentials.password)
        except PoolFull:
            throttle.abandoned(attempt)
            stats.limit_refusal("hash_queue")
            stats.auth("userpass", False)
            await _answer(context, False)
            raise AuthFailed("too many password checks waiting") from None
        except BaseException:
            throttle.abandoned(attempt)
            raise
        if watch.gone:
            throttle.abandoned(attempt)
            raise AuthFailed("the client left before its password was checked")
    stats.auth("userpass", ok)
    if ok:
        throttle.succeeded(attempt)
        context.user = username
        await _answer(context, True)
        return
    block = throttle.failed(attempt, time.monotonic())
    if block is not None:
        log.warning("%s", block)
    await _answer(context, False)
    raise AuthFailed(f"wrong username or password for {username!r}")


async def _no_authentication(context: SessionContext) -> None:
    """X'00' NO AUTHENTICATION REQUIRED: no subnegotiation (RFC 1928 §3)."""


#: The one table from METHOD to the subnegotiation that authenticates with it (RFC 1928 §3:
#: "The client and server then enter a method-specific sub-negotiation").
AUTHENTICATORS: dict[AuthMethod, AuthenticationMethod] = {
    AuthMethod.NO_AUTHENTICATION_REQUIRED: _no_authentication,
    AuthMethod.USERNAME_PASSWORD: authenticate_userpass,
    AuthMethod.GSSAPI: authenticate_gssapi,
}
