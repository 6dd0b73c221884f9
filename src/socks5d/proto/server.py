"""The server side of the handshake as a state machine (no I/O).

    conn = ServerConnection()
    conn.receive_data(data)
    event = conn.next_event()          # Greeting, UserPassAuth, CommandRequest, ... or NEED_DATA
    writer.write(conn.send(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED)))

Policy (which method, which user, which destination) is the caller's; this only knows order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from socks5d.constants import (
    SOCKS4_VERSION,
    SOCKS5_VERSION,
    AuthMethod,
)
from socks5d.errors import LocalProtocolError, UnsupportedVersion
from socks5d.proto.buffer import Cursor
from socks5d.proto.connection import Connection, Decoder, State, Transition, plain
from socks5d.proto.events import (
    AuthResult,
    CommandReply,
    CommandRequest,
    Event,
    Greeting,
    GssapiToken,
    MethodSelected,
    Socks4Request,
    Socks4Response,
    UserPassAuth,
)
from socks5d.proto.gssapi import decode_gssapi, encode_gssapi
from socks5d.proto.rfc1928 import (
    decode_greeting,
    decode_request,
    encode_method_selected,
    encode_reply,
)
from socks5d.proto.rfc1929 import decode_userpass, encode_auth_result
from socks5d.proto.socks4 import decode_socks4_request, encode_socks4_response
from socks5d.proto.transitions import (
    STATE_AFTER_METHOD,
    after_auth_result,
    after_gssapi_message,
    after_reply,
    after_socks4_reply,
)


def _after_method(_connection: ServerConnection, message: MethodSelected) -> State:
    try:
        return STATE_AFTER_METHOD[AuthMethod(message.method)]
    except ValueError:
        raise LocalProtocolError(f"no support for method {message.method:#04x}") from None


def _decode_first(connection: ServerConnection, cursor: Cursor) -> Event:
    """The first octet tells the version: X'05' a greeting, X'04' a SOCKS4/4a request."""
    version = cursor.byte()
    cursor.position = 0
    if version == SOCKS4_VERSION and connection.accept_socks4:
        return decode_socks4_request(cursor)
    if version != SOCKS5_VERSION:
        raise UnsupportedVersion(version, cursor.peek(16))
    return decode_greeting(cursor)


class ServerConnection(Connection):
    """The server's view of one SOCKS connection.

    Args:
        accept_socks4: read a first octet X'04' as a SOCKS4/4a request; otherwise it is a
            `ProtocolError` like any other unknown version.
        max_buffer: most bytes held for one incomplete message.
    """

    decoders: ClassVar[Mapping[State, Decoder]] = {
        State.GREETING: _decode_first,
        State.USERPASS: plain(decode_userpass),
        State.GSSAPI: plain(decode_gssapi),
        State.REQUEST: plain(decode_request),
    }
    received: ClassVar[Mapping[tuple[State, type], Transition]] = {
        (State.GREETING, Greeting): State.METHOD,
        (State.GREETING, Socks4Request): State.SOCKS4_REPLY,
        (State.USERPASS, UserPassAuth): State.USERPASS_STATUS,
        (State.GSSAPI, GssapiToken): after_gssapi_message,
        (State.REQUEST, CommandRequest): State.REPLY,
    }
    sent: ClassVar[Mapping[tuple[State, type], Transition]] = {
        (State.METHOD, MethodSelected): _after_method,
        (State.USERPASS_STATUS, AuthResult): after_auth_result,
        (State.GSSAPI, GssapiToken): after_gssapi_message,
        (State.REPLY, CommandReply): after_reply,
        (State.SECOND_REPLY, CommandReply): after_reply,
        (State.SOCKS4_REPLY, Socks4Response): after_socks4_reply,
        (State.SOCKS4_SECOND_REPLY, Socks4Response): after_socks4_reply,
    }
    # RFC 1928 §6 has a REP for a bad CMD (X'07') and ATYP (X'08'): a malformed request is
    # answered with a reply, then the connection closes.
    answerable_errors: ClassVar[Mapping[State, State]] = {State.REQUEST: State.REPLY}
    encoders: ClassVar[Mapping[type, Callable[[Any], bytes]]] = {
        MethodSelected: encode_method_selected,
        AuthResult: encode_auth_result,
        GssapiToken: encode_gssapi,
        CommandReply: encode_reply,
        Socks4Response: encode_socks4_response,
    }

    def __init__(self, *, accept_socks4: bool = False, max_buffer: int = 0x10000 + 4) -> None:
        super().__init__(max_buffer)
        self.accept_socks4 = accept_socks4

    def _received(self, event: Event) -> None:
        if isinstance(event, CommandRequest | Socks4Request):
            self.request = event
