"""Codecs of SOCKS4 (SOCKS4.protocol.txt) and SOCKS4a (SOCKS4A.protocol.txt).

Request: VN (4), CD, DSTPORT, DSTIP, USERID, NULL. SOCKS4a: "the client should set the first
three bytes of DSTIP to NULL and the last byte to a non-zero value", then the domain name,
NULL-terminated, follows the USERID's NULL.
"""

from __future__ import annotations

import ipaddress

from socks5d.constants import SOCKS4_REPLY_VERSION, SOCKS4_VERSION, Command, Socks4Reply
from socks5d.errors import CommandNotSupported, LocalProtocolError, ProtocolError
from socks5d.proto.address import MAX_DOMAIN_LENGTH, Address, DomainName
from socks5d.proto.buffer import Cursor
from socks5d.proto.events import Socks4Request, Socks4Response

#: The longest USERID we read; the spec sets none, real ones are short login names.
MAX_USER_ID_LENGTH = 255


def _is_socks4a_marker(address: ipaddress.IPv4Address) -> bool:
    # SOCKS4A: "an address of the form 0.0.0.x, where x is nonzero".
    packed = address.packed
    return packed[:3] == b"\x00\x00\x00" and packed[3] != 0


def encode_socks4_request(message: Socks4Request) -> bytes:
    """VN, CD, DSTPORT, DSTIP, USERID, NULL [, HOST, NULL for SOCKS4a]."""
    if message.command not in (Command.CONNECT, Command.BIND):
        raise LocalProtocolError("SOCKS4 has CONNECT and BIND only")
    host = message.destination.host
    port = message.destination.port.to_bytes(2, "big")
    head = bytes([SOCKS4_VERSION, message.command]) + port
    user_id = _null_terminated(message.user_id, MAX_USER_ID_LENGTH, "USERID")
    if isinstance(host, ipaddress.IPv6Address):
        raise LocalProtocolError("SOCKS4 cannot carry an IPv6 address")
    if isinstance(host, DomainName):
        name = host.encode("utf-8", "surrogateescape")
        if not name:
            raise LocalProtocolError("empty SOCKS4a host name")
        return (
            head + bytes([0, 0, 0, 1]) + user_id + _null_terminated(name, MAX_DOMAIN_LENGTH, "host")
        )
    if _is_socks4a_marker(host):
        raise LocalProtocolError(f"{host} is the SOCKS4a marker, not a destination")
    return head + host.packed + user_id


def _null_terminated(field: bytes, limit: int, name: str) -> bytes:
    if b"\x00" in field:
        raise LocalProtocolError(f"{name} contains NUL")
    if len(field) > limit:
        raise LocalProtocolError(f"{name} longer than {limit} octets")
    return field + b"\x00"


def decode_socks4_request(cursor: Cursor) -> Socks4Request:
    """Read a SOCKS4 or SOCKS4a request."""
    version = cursor.byte()
    if version != SOCKS4_VERSION:
        raise ProtocolError(f"not a SOCKS4 request: version {version:#04x}")
    command = cursor.byte()
    if command not in (Command.CONNECT, Command.BIND):
        raise CommandNotSupported(f"unknown SOCKS4 command {command:#04x}")
    port = cursor.uint16()
    address = ipaddress.IPv4Address(cursor.take(4))
    user_id = cursor.until_null(MAX_USER_ID_LENGTH)
    if _is_socks4a_marker(address):
        name = cursor.until_null(MAX_DOMAIN_LENGTH)
        if not name:
            raise ProtocolError("empty SOCKS4a host name")
        host = DomainName(name.decode("utf-8", "surrogateescape"))
        return Socks4Request(Command(command), Address(host, port), user_id)
    return Socks4Request(Command(command), Address(address, port), user_id)


def encode_socks4_response(message: Socks4Response) -> bytes:
    """VN (0), CD, DSTPORT, DSTIP."""
    host = message.bound.host
    if not isinstance(host, ipaddress.IPv4Address):
        raise LocalProtocolError("a SOCKS4 reply carries an IPv4 address")
    return (
        bytes([SOCKS4_REPLY_VERSION, message.status])
        + message.bound.port.to_bytes(2, "big")
        + host.packed
    )


def decode_socks4_response(cursor: Cursor) -> Socks4Response:
    """Read a SOCKS4 reply."""
    version = cursor.byte()
    if version != SOCKS4_REPLY_VERSION:
        raise ProtocolError(f"SOCKS4 reply version {version:#04x}, expected 0")
    status = cursor.byte()
    if status not in Socks4Reply._value2member_map_:
        raise ProtocolError(f"unknown SOCKS4 reply code {status}")
    port = cursor.uint16()
    return Socks4Response(Socks4Reply(status), Address(ipaddress.IPv4Address(cursor.take(4)), port))
