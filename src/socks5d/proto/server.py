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

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.buffer import Cursor
from socks5d.proto.connection import Connection, Decoder, State, Transition, plain
from socks5d.proto.constants import (
    SOCKS4_VERSION,
    SOCKS5_VERSION,
    AuthMethod,
    Command,
    Reply,
    Socks4Reply,
)
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
from socks5d.proto.gssapi import after_gssapi_message, decode_gssapi, encode_gssapi
from socks5d.proto.rfc1928 import (
    decode_greeting,
    decode_request,
    encode_method_selected,
    encode_reply,
)
from socks5d.proto.rfc1929 import decode_userpass, encode_auth_result
from socks5d.proto.socks4 import decode_socks4_request, encode_socks4_response

_STATE_AFTER_METHOD = {
    AuthMethod.NO_AUTHENTICATION_REQUIRED: State.REQUEST,
    AuthMethod.USERNAME_PASSWORD: State.USERPASS,
    AuthMethod.GSSAPI: State.GSSAPI,
    AuthMethod.NO_ACCEPTABLE_METHODS: State.CLOSED,
}


def _after_method(_connection: ServerConnection, message: MethodSelected) -> State:
    try:
        return _STATE_AFTER_METHOD[AuthMethod(message.method)]
    except ValueError:
        raise LocalProtocolError(f"no support for method {message.method:#04x}") from None


def _after_auth_result(_connection: ServerConnection, message: AuthResult) -> State:
    # RFC 1929 §2: "If the server returns a `failure' (STATUS value other than X'00') status,
    # it MUST close the connection."
    return State.REQUEST if message.success else State.CLOSED


def _after_reply(connection: ServerConnection, message: CommandReply) -> State:
    # RFC 1928 §6: "When a reply (REP value other than X'00') indicates a failure, the SOCKS
    # server MUST terminate the TCP connection shortly after sending the reply."
    if message.reply != Reply.SUCCEEDED:
        return State.CLOSED
    request = connection.request
    if request is None:
        raise LocalProtocolError("success reply to a request that could not be read")
    if connection.state is State.REPLY and request.command == Command.BIND:
        return State.SECOND_REPLY  # §6: "two replies are sent from the SOCKS server"
    return State.ESTABLISHED


def _after_socks4_reply(connection: ServerConnection, message: Socks4Response) -> State:
    # SOCKS4: "The SOCKS server closes its connection immediately after notifying the client
    # of a failed or rejected request."
    if message.status != Socks4Reply.GRANTED:
        return State.CLOSED
    request = connection.request
    if (
        connection.state is State.SOCKS4_REPLY
        and request is not None
        and request.command == Command.BIND
    ):
        return State.SOCKS4_SECOND_REPLY
    return State.ESTABLISHED


def _decode_first(connection: ServerConnection, cursor: Cursor) -> Event:
    """The first octet tells the version: X'05' a greeting, X'04' a SOCKS4/4a request."""
    version = cursor.byte()
    cursor.position = 0
    if version == SOCKS4_VERSION and connection.accept_socks4:
        return decode_socks4_request(cursor)
    if version != SOCKS5_VERSION:
        raise ProtocolError(f"unsupported SOCKS version {version:#04x}")
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
        (State.USERPASS_STATUS, AuthResult): _after_auth_result,
        (State.GSSAPI, GssapiToken): after_gssapi_message,
        (State.REPLY, CommandReply): _after_reply,
        (State.SECOND_REPLY, CommandReply): _after_reply,
        (State.SOCKS4_REPLY, Socks4Response): _after_socks4_reply,
        (State.SOCKS4_SECOND_REPLY, Socks4Response): _after_socks4_reply,
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
        #: the request received, once it has been
        self.request: CommandRequest | Socks4Request | None = None

    def _received(self, event: Event) -> None:
        if isinstance(event, CommandRequest | Socks4Request):
            self.request = event
