"""The RFC 1961 message framing: VER, MTYP, LEN (2 octets), TOKEN; abort is VER, MTYP only.

RFC 1961 §3:
    +------+------+------+.......................+
    + ver  | mtyp | len  |       token           |
    +------+------+------+.......................+
    + 0x01 | 0x01 | 0x02 | up to 2^16 - 1 octets |
    +------+------+------+.......................+
and the abort message "+ 0x01 | 0xff +". Only the framing lives here; context establishment
and per-message protection need a GSS-API library and live outside `proto`.
"""

from __future__ import annotations

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.buffer import Cursor
from socks5d.proto.constants import GSSAPI_VERSION, GssapiMessageType
from socks5d.proto.events import GssapiToken

#: "up to 2^16 - 1 octets"
MAX_TOKEN_LENGTH = 0xFFFF


def encode_gssapi(message: GssapiToken) -> bytes:
    """Frame one GSS-API message."""
    if message.message_type == GssapiMessageType.ABORT:
        if message.token:
            raise LocalProtocolError("an abort message carries no token")
        return bytes([GSSAPI_VERSION, GssapiMessageType.ABORT])
    if len(message.token) > MAX_TOKEN_LENGTH:
        raise LocalProtocolError("GSS-API token longer than 65535 octets")
    return (
        bytes([GSSAPI_VERSION, message.message_type])
        + len(message.token).to_bytes(2, "big")
        + message.token
    )


def decode_gssapi(cursor: Cursor) -> GssapiToken:
    """Read one GSS-API message."""
    version = cursor.byte()
    if version != GSSAPI_VERSION:
        raise ProtocolError(f"unsupported GSS-API message version {version:#04x}")
    message_type = cursor.byte()
    if message_type not in GssapiMessageType._value2member_map_:
        raise ProtocolError(f"unknown GSS-API message type {message_type:#04x}")
    if message_type == GssapiMessageType.ABORT:
        return GssapiToken(GssapiMessageType.ABORT)
    length = cursor.uint16()
    return GssapiToken(GssapiMessageType(message_type), cursor.take(length))
