"""The UDP request header of RFC 1928 §7, one whole datagram at a time.

+----+------+------+----------+----------+----------+
|RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
+----+------+------+----------+----------+----------+
| 2  |  1   |  1   | Variable |    2     | Variable |
+----+------+------+----------+----------+----------+
"""

from __future__ import annotations

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.address import decode_address, encode_address
from socks5d.proto.buffer import Cursor, NeedData
from socks5d.proto.events import UdpDatagram

#: "RSV  Reserved X'0000'"
_RESERVED = b"\x00\x00"


def encode_udp(message: UdpDatagram) -> bytes:
    """Header and data of one datagram."""
    if not 0 <= message.fragment <= 0xFF:
        raise LocalProtocolError("FRAG is one octet")
    header = _RESERVED + bytes([message.fragment]) + encode_address(message.destination)
    return header + message.data


def decode_udp(datagram: bytes) -> UdpDatagram:
    """Parse one received datagram; a datagram is complete, so a short one is an error."""
    cursor = Cursor(datagram)
    try:
        if cursor.take(2) != _RESERVED:
            raise ProtocolError("UDP header RSV must be X'0000'")
        fragment = cursor.byte()
        destination = decode_address(cursor)
    except NeedData:
        raise ProtocolError("datagram shorter than its UDP request header") from None
    return UdpDatagram(destination, datagram[cursor.position :], fragment)
