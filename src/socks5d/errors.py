"""The one exception hierarchy of socks5d; every class knows the RFC 1928 reply it maps to.

The server turns any `Socks5Error` into a reply with `exc.reply` at one boundary (the session);
the client raises the same classes from a non-zero REP.
"""

from __future__ import annotations

import errno
import socket
from typing import ClassVar

from socks5d.constants import Reply


class Socks5Error(Exception):
    """Base of every error socks5d raises; `reply` is the REP a server sends for it."""

    reply: ClassVar[Reply] = Reply.GENERAL_FAILURE  # X'01'


class ProtocolError(Socks5Error):
    """The peer broke the protocol (bad version, reserved byte, length, or order)."""


class UnsupportedVersion(ProtocolError):
    """The first octet is no SOCKS version we serve; `head` holds the first bytes received."""

    def __init__(self, version: int, head: bytes) -> None:
        super().__init__(f"unsupported SOCKS version {version:#04x}")
        self.head = head


class LocalProtocolError(Socks5Error):
    """Our own code tried to send a message the protocol state does not allow (a bug)."""


class CommandNotSupported(ProtocolError):
    """Unknown or disabled CMD."""

    reply = Reply.COMMAND_NOT_SUPPORTED  # X'07'


class AddressTypeNotSupported(ProtocolError):
    """Unknown ATYP."""

    reply = Reply.ADDRESS_TYPE_NOT_SUPPORTED  # X'08'


class NotAllowed(Socks5Error):
    """The request is refused by the server's rules."""

    reply = Reply.CONNECTION_NOT_ALLOWED  # X'02'


class NetworkUnreachable(Socks5Error, OSError):
    """No route to the destination's network (ENETUNREACH)."""

    reply = Reply.NETWORK_UNREACHABLE  # X'03'


class HostUnreachable(Socks5Error, OSError):
    """The destination did not answer: EHOSTUNREACH, DNS failure or connect timeout."""

    reply = Reply.HOST_UNREACHABLE  # X'04'


class ConnectionRefused(Socks5Error, ConnectionRefusedError):
    """The destination refused the connection (ECONNREFUSED)."""

    reply = Reply.CONNECTION_REFUSED  # X'05'


class TTLExpired(Socks5Error, TimeoutError):
    """The proxy reported TTL expired (X'06')."""

    reply = Reply.TTL_EXPIRED  # X'06'


class AuthFailed(Socks5Error):
    """Authentication failed; answered with method X'FF' or an RFC 1929 failure status, no REP."""


class ProxyTimeout(Socks5Error, TimeoutError):
    """A handshake, connect or idle deadline passed."""


class RequestRejected(Socks5Error):
    """A SOCKS4 proxy answered 91-93: "request rejected or failed" (it says no more)."""

    def __init__(self, message: str, status: int = 91) -> None:
        super().__init__(message)
        #: the SOCKS4 CD of the reply
        self.status = status


class ConfigError(ValueError):
    """A configuration error; never reaches the wire. The message names the offending key."""


#: The exception class for each reply code, used by the client to raise from a REP.
ERROR_FOR_REPLY: dict[Reply, type[Socks5Error]] = {
    Reply.GENERAL_FAILURE: Socks5Error,
    Reply.CONNECTION_NOT_ALLOWED: NotAllowed,
    Reply.NETWORK_UNREACHABLE: NetworkUnreachable,
    Reply.HOST_UNREACHABLE: HostUnreachable,
    Reply.CONNECTION_REFUSED: ConnectionRefused,
    Reply.TTL_EXPIRED: TTLExpired,
    Reply.COMMAND_NOT_SUPPORTED: CommandNotSupported,
    Reply.ADDRESS_TYPE_NOT_SUPPORTED: AddressTypeNotSupported,
}

#: The RFC 1928 §6 wording of each reply code.
REPLY_MEANING: dict[Reply, str] = {
    Reply.SUCCEEDED: "succeeded",
    Reply.GENERAL_FAILURE: "general SOCKS server failure",
    Reply.CONNECTION_NOT_ALLOWED: "connection not allowed by ruleset",
    Reply.NETWORK_UNREACHABLE: "Network unreachable",
    Reply.HOST_UNREACHABLE: "Host unreachable",
    Reply.CONNECTION_REFUSED: "Connection refused",
    Reply.TTL_EXPIRED: "TTL expired",
    Reply.COMMAND_NOT_SUPPORTED: "Command not supported",
    Reply.ADDRESS_TYPE_NOT_SUPPORTED: "Address type not supported",
}


def error_for_reply(reply: Reply) -> Socks5Error:
    """The exception a client raises for a failure REP, carrying the code and its meaning."""
    return ERROR_FOR_REPLY[reply](f"replied X'{reply:02X}' {REPLY_MEANING[reply]}")


#: errno values of a failed outbound connect and the error each maps to.
_ERROR_FOR_ERRNO: dict[int, type[Socks5Error]] = {
    errno.ECONNREFUSED: ConnectionRefused,
    errno.ENETUNREACH: NetworkUnreachable,
    errno.ENETDOWN: NetworkUnreachable,
    errno.EHOSTUNREACH: HostUnreachable,
    errno.EHOSTDOWN: HostUnreachable,
    errno.ETIMEDOUT: HostUnreachable,
    errno.EACCES: NotAllowed,
    errno.EPERM: NotAllowed,
}


def error_for_oserror(exc: BaseException) -> Socks5Error:
    """Map an exception from resolving or connecting to the `Socks5Error` to answer with.

    Args:
        exc: what `getaddrinfo` or `connect` raised.

    Returns:
        A new `Socks5Error` (subclass) whose `reply` is the code to send; `exc` itself when it
        already is one.
    """
    if isinstance(exc, Socks5Error):
        return exc
    if isinstance(exc, socket.gaierror):
        return HostUnreachable(f"cannot resolve: {exc.strerror}")
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return HostUnreachable("connect timed out")
    if isinstance(exc, OSError) and exc.errno in _ERROR_FOR_ERRNO:
        return _ERROR_FOR_ERRNO[exc.errno](exc.strerror or str(exc))
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionRefused(str(exc) or "connection refused")
    return Socks5Error(str(exc) or type(exc).__name__)
