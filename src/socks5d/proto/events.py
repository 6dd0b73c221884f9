"""The messages of SOCKS5 (RFC 1928, RFC 1929, RFC 1961 framing) and SOCKS4/4a as events.

Every message is a frozen dataclass; `encode` functions turn them into bytes and the
decoders in the codec modules turn bytes into them. Field names are spelled out; each
docstring gives the RFC field it carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from socks5d.constants import (
    AuthMethod,
    Command,
    GssapiMessageType,
    Reply,
    Socks4Reply,
    UserPassStatus,
)
from socks5d.proto.address import Address


class _NeedData:
    """Sentinel type of `NEED_DATA`."""

    _instance: _NeedData | None = None

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by `next_event()` when more bytes must be received first.
NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class Greeting:
    """Version identifier/method selection message (RFC 1928 §3): VER, NMETHODS, METHODS."""

    #: METHODS: the authentication methods the client supports (any octet values)
    methods: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MethodSelected:
    """METHOD selection message (RFC 1928 §3): VER, METHOD."""

    #: METHOD: the chosen method, or X'FF' NO ACCEPTABLE METHODS
    method: int

    @property
    def acceptable(self) -> bool:
        """False for X'FF': "the client MUST close the connection"."""
        return self.method != AuthMethod.NO_ACCEPTABLE_METHODS


@dataclass(frozen=True, slots=True)
class UserPassAuth:
    """Username/password request (RFC 1929 §2): VER, ULEN, UNAME, PLEN, PASSWD."""

    #: UNAME (octets decoded as UTF-8, undecodable bytes kept via surrogateescape)
    username: str
    #: PASSWD; never shown by repr() so it cannot leak into a log
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Username/password response (RFC 1929 §2): VER, STATUS."""

    #: STATUS: X'00' success, anything else failure
    status: int

    @property
    def success(self) -> bool:
        """True for STATUS X'00'."""
        return self.status == UserPassStatus.SUCCESS


@dataclass(frozen=True, slots=True)
class GssapiToken:
    """A GSS-API message of RFC 1961: VER, MTYP, LEN, TOKEN (abort: VER, MTYP X'FF' only)."""

    #: MTYP
    message_type: GssapiMessageType
    #: TOKEN, up to 2^16 - 1 octets
    token: bytes = b""


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """SOCKS request (RFC 1928 §4): VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT."""

    #: CMD
    command: Command
    #: ATYP, DST.ADDR, DST.PORT
    destination: Address


@dataclass(frozen=True, slots=True)
class CommandReply:
    """Reply (RFC 1928 §6): VER, REP, RSV, ATYP, BND.ADDR, BND.PORT."""

    #: REP
    reply: Reply
    #: ATYP, BND.ADDR, BND.PORT
    bound: Address = field(default_factory=Address.unspecified)


@dataclass(frozen=True, slots=True)
class Socks4Request:
    """SOCKS4 request (SOCKS4.protocol.txt, SOCKS4A.protocol.txt): VN, CD, DSTPORT, DSTIP, USERID.

    A SOCKS4a request carries a domain name after USERID; it is then `destination.host`.
    """

    #: CD: CONNECT or BIND
    command: Command
    #: DSTIP/DSTPORT, or the SOCKS4a host name and DSTPORT
    destination: Address
    #: USERID (octets, without the terminating NULL)
    user_id: bytes = b""


@dataclass(frozen=True, slots=True)
class Socks4Response:
    """SOCKS4 reply: VN (0), CD, DSTPORT, DSTIP."""

    #: CD: 90 granted, 91-93 rejected
    status: Socks4Reply
    #: DSTIP/DSTPORT (IPv4 only)
    bound: Address = field(default_factory=Address.unspecified)


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """UDP request header and data (RFC 1928 §7): RSV, FRAG, ATYP, DST.ADDR, DST.PORT, DATA."""

    #: ATYP, DST.ADDR, DST.PORT
    destination: Address
    #: DATA
    data: bytes
    #: FRAG: "Current fragment number"; X'00' is a standalone datagram
    fragment: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its sending side before the handshake was complete."""

    #: bytes of an incomplete message that were buffered when the stream ended
    pending: int = 0


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP proxy's answer to CONNECT (RFC 9112 §4): its status line; the header fields
    are read past (`proto.http_connect`)."""

    status: int
    reason: str

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300


Event = (
    Greeting
    | MethodSelected
    | UserPassAuth
    | AuthResult
    | GssapiToken
    | CommandRequest
    | CommandReply
    | Socks4Request
    | Socks4Response
    | HttpResponse
    | ConnectionClosed
)
