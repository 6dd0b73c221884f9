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

from socks5d.constants import GSSAPI_VERSION, GssapiMessageType
from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.buffer import Cursor, NeedData, ReceiveBuffer
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


#: The most bytes one framed message takes: VER, MTYP, LEN and the longest TOKEN.
MAX_MESSAGE_LENGTH = 4 + MAX_TOKEN_LENGTH


def encode_encapsulated(token: bytes) -> bytes:
    """Frame one per-message token (RFC 1961 §5: "All encapsulated messages are prefixed by
    the following framing", MTYP 3).
    """
    return encode_gssapi(GssapiToken(GssapiMessageType.ENCAPSULATION, token))


def _decode_encapsulated(cursor: Cursor) -> bytes:
    message = decode_gssapi(cursor)
    if message.message_type == GssapiMessageType.ABORT:
        raise ProtocolError("the peer aborted the GSS-API session")
    if message.message_type != GssapiMessageType.ENCAPSULATION:
        raise ProtocolError(
            f"GSS-API message type {message.message_type:#04x} where encapsulated data "
            "(MTYP 3) was expected"
        )
    return message.token


class EncapsulatedStream:
    """Splits a protected byte stream into its per-message tokens (RFC 1961 §5).

    A token does not line up with a read: `feed()` takes whatever arrived and `next_token()`
    returns complete tokens one at a time, or None until the rest arrives. At most one
    framed message (65539 octets) is held incomplete.

        stream.feed(data)
        while (token := stream.next_token()) is not None:
            plaintext = unwrap(token)
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = ReceiveBuffer(MAX_MESSAGE_LENGTH)

    def feed(self, data: bytes) -> None:
        """Buffer received bytes; `b""` is the end of the stream."""
        self._buffer.feed(data)

    def next_token(self) -> bytes | None:
        """The next complete token, or None.

        Raises:
            ProtocolError: not an encapsulation message, or the stream ended inside one.
        """
        token = self._buffer.parse(_decode_encapsulated)
        if token is None and self._buffer.eof and len(self._buffer):
            raise ProtocolError(
                f"the stream ended inside an encapsulated message ({len(self._buffer)} octets)"
            )
        return token

    @property
    def pending(self) -> int:
        """Octets of an incomplete message held."""
        return len(self._buffer)


def decode_encapsulated_datagram(data: bytes) -> bytes:
    """The token of a UDP datagram that is exactly one framed MTYP 3 message.

    Raises:
        ProtocolError: anything else: truncated, trailing octets, another MTYP.
    """
    cursor = Cursor(data)
    try:
        token = _decode_encapsulated(cursor)
    except NeedData:
        raise ProtocolError(f"truncated encapsulated datagram ({len(data)} octets)") from None
    if cursor.position != len(data):
        raise ProtocolError(f"{len(data) - cursor.position} octets after the encapsulated token")
    return token
