"""Codecs of RFC 1929 username/password sub-negotiation.

RFC 1929 §2:
    +----+------+----------+------+----------+
    |VER | ULEN |  UNAME   | PLEN |  PASSWD  |
    +----+------+----------+------+----------+
    | 1  |  1   | 1 to 255 |  1   | 1 to 255 |
    +----+------+----------+------+----------+
"""

from __future__ import annotations

from socks5d.constants import USERPASS_VERSION
from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.buffer import Cursor
from socks5d.proto.events import AuthResult, UserPassAuth

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def _expect_version(cursor: Cursor) -> None:
    # RFC 1929 §2: "The VER field contains the current version of the subnegotiation,
    # which is X'01'."
    version = cursor.byte()
    if version != USERPASS_VERSION:
        raise ProtocolError(f"unsupported username/password version {version:#04x}")


def _field(value: str, name: str) -> bytes:
    raw = value.encode(_ENCODING, _ERRORS)
    if len(raw) > 255:
        raise LocalProtocolError(f"{name} longer than 255 octets")
    return bytes([len(raw)]) + raw


def encode_userpass(message: UserPassAuth) -> bytes:
    """VER, ULEN, UNAME, PLEN, PASSWD."""
    return (
        bytes([USERPASS_VERSION])
        + _field(message.username, "username")
        + _field(message.password, "password")
    )


def decode_userpass(cursor: Cursor) -> UserPassAuth:
    """Read a username/password request.

    A zero ULEN or PLEN is outside "1 to 255" but is read anyway (some clients send an empty
    password); it then simply fails authentication instead of breaking the framing.
    """
    _expect_version(cursor)
    username = cursor.take(cursor.byte()).decode(_ENCODING, _ERRORS)
    password = cursor.take(cursor.byte()).decode(_ENCODING, _ERRORS)
    return UserPassAuth(username, password)


def encode_auth_result(message: AuthResult) -> bytes:
    """VER, STATUS."""
    if not 0 <= message.status <= 0xFF:
        raise LocalProtocolError(f"STATUS {message.status} does not fit in one octet")
    return bytes([USERPASS_VERSION, message.status])


def decode_auth_result(cursor: Cursor) -> AuthResult:
    """Read the server's STATUS."""
    _expect_version(cursor)
    return AuthResult(cursor.byte())
