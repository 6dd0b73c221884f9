"""Codecs of the RFC 1928 TCP messages: greeting, method selection, request and reply."""

from __future__ import annotations

from socks5d.constants import RESERVED, SOCKS5_VERSION, Command, Reply
from socks5d.errors import CommandNotSupported, LocalProtocolError, ProtocolError
from socks5d.proto.address import decode_address, encode_address
from socks5d.proto.buffer import Cursor
from socks5d.proto.events import CommandReply, CommandRequest, Greeting, MethodSelected


def _expect_version(cursor: Cursor) -> None:
    version = cursor.byte()
    if version != SOCKS5_VERSION:
        raise ProtocolError(f"unsupported SOCKS version {version:#04x}")


def _expect_reserved(cursor: Cursor) -> None:
    # RFC 1928 §5: "Fields marked RESERVED (RSV) must be set to X'00'."
    reserved = cursor.byte()
    if reserved != RESERVED:
        raise ProtocolError(f"reserved octet is {reserved:#04x}, must be X'00'")


def encode_greeting(message: Greeting) -> bytes:
    """VER, NMETHODS, METHODS (RFC 1928 §3: METHODS is "1 to 255" octets)."""
    if not 1 <= len(message.methods) <= 255:
        raise LocalProtocolError("a greeting offers 1 to 255 methods")
    return bytes([SOCKS5_VERSION, len(message.methods), *map(_octet, message.methods)])


def _octet(value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{value} does not fit in one octet")
    return value


def decode_greeting(cursor: Cursor) -> Greeting:
    """Read a greeting. NMETHODS of 0 offers nothing, which the server answers with X'FF'."""
    _expect_version(cursor)
    count = cursor.byte()
    return Greeting(tuple(cursor.take(count)))


def encode_method_selected(message: MethodSelected) -> bytes:
    """VER, METHOD."""
    return bytes([SOCKS5_VERSION, _octet(message.method)])


def decode_method_selected(cursor: Cursor) -> MethodSelected:
    """Read the server's METHOD selection."""
    _expect_version(cursor)
    return MethodSelected(cursor.byte())


def encode_request(message: CommandRequest) -> bytes:
    """VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT."""
    return bytes([SOCKS5_VERSION, message.command, RESERVED]) + encode_address(message.destination)


def decode_request(cursor: Cursor) -> CommandRequest:
    """Read a request; an unknown CMD is `CommandNotSupported` (X'07'), ATYP X'08'."""
    _expect_version(cursor)
    command = cursor.byte()
    if command not in Command._value2member_map_:
        raise CommandNotSupported(f"unknown command {command:#04x}")
    _expect_reserved(cursor)
    return CommandRequest(Command(command), decode_address(cursor))


def encode_reply(message: CommandReply) -> bytes:
    """VER, REP, RSV, ATYP, BND.ADDR, BND.PORT."""
    return bytes([SOCKS5_VERSION, message.reply, RESERVED]) + encode_address(message.bound)


def decode_reply(cursor: Cursor) -> CommandReply:
    """Read a reply; REP values X'09' to X'FF' are "unassigned" and a protocol error."""
    _expect_version(cursor)
    reply = cursor.byte()
    if reply not in Reply._value2member_map_:
        raise ProtocolError(f"unassigned reply code {reply:#04x}")
    _expect_reserved(cursor)
    return CommandReply(Reply(reply), decode_address(cursor))
