"""Sans-I/O SOCKS protocol: bytes in, events out; events in, bytes out.

No sockets, no asyncio, no logging, no clocks here: the server and client packages do I/O and
decide policy. Shared by both.
"""

from socks5d.constants import (
    SOCKS4_VERSION,
    SOCKS5_VERSION,
    AddressType,
    AuthMethod,
    Command,
    GssapiMessageType,
    ProtectionLevel,
    Reply,
    Socks4Reply,
    UserPassStatus,
)
from socks5d.proto.address import Address, DomainName, Host, decode_address, encode_address
from socks5d.proto.client import ClientConnection
from socks5d.proto.connection import State
from socks5d.proto.events import (
    NEED_DATA,
    AuthResult,
    CommandReply,
    CommandRequest,
    ConnectionClosed,
    Event,
    Greeting,
    GssapiToken,
    MethodSelected,
    Socks4Request,
    Socks4Response,
    UdpDatagram,
    UserPassAuth,
)
from socks5d.proto.server import ServerConnection
from socks5d.proto.udp import decode_udp, encode_udp

__all__ = [
    "NEED_DATA",
    "SOCKS4_VERSION",
    "SOCKS5_VERSION",
    "Address",
    "AddressType",
    "AuthMethod",
    "AuthResult",
    "ClientConnection",
    "Command",
    "CommandReply",
    "CommandRequest",
    "ConnectionClosed",
    "DomainName",
    "Event",
    "Greeting",
    "GssapiMessageType",
    "GssapiToken",
    "Host",
    "MethodSelected",
    "ProtectionLevel",
    "Reply",
    "ServerConnection",
    "Socks4Reply",
    "Socks4Request",
    "Socks4Response",
    "State",
    "UdpDatagram",
    "UserPassAuth",
    "UserPassStatus",
    "decode_address",
    "decode_udp",
    "encode_address",
    "encode_udp",
]
