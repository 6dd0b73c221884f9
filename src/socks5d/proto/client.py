"""The client side of the handshake as a state machine (no I/O).

conn = ClientConnection()
writer.write(conn.send(Greeting((AuthMethod.NO_AUTHENTICATION_REQUIRED,))))
conn.receive_data(await reader.read(512))
event = conn.next_event()            # MethodSelected, AuthResult, CommandReply, ... NEED_DATA
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from socks5d.constants import AuthMethod
from socks5d.errors import ProtocolError
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
    decode_method_selected,
    decode_reply,
    encode_greeting,
    encode_request,
)
from socks5d.proto.rfc1929 import decode_auth_result, encode_userpass
from socks5d.proto.socks4 import decode_socks4_response, encode_socks4_request
from socks5d.proto.transitions import (
    STATE_AFTER_METHOD,
    after_auth_result,
    after_gssapi_message,
    after_reply,
    after_socks4_reply,
)


def _after_method(connection: ClientConnection, message: MethodSelected) -> State:
    offered = connection.greeting.methods if connection.greeting else ()
    if message.acceptable and message.method not in offered:
        raise ProtocolError(f"server chose method {message.method:#04x}, which was not offered")
    try:
        return STATE_AFTER_METHOD[AuthMethod(message.method)]
    except ValueError:
        raise ProtocolError(f"server chose unknown method {message.method:#04x}") from None


class ClientConnection(Connection):
    """The client's view of one SOCKS connection."""

    decoders: ClassVar[Mapping[State, Decoder]] = {
        State.METHOD: plain(decode_method_selected),
        State.USERPASS_STATUS: plain(decode_auth_result),
        State.GSSAPI: plain(decode_gssapi),
        State.REPLY: plain(decode_reply),
        State.SECOND_REPLY: plain(decode_reply),
        State.SOCKS4_REPLY: plain(decode_socks4_response),
        State.SOCKS4_SECOND_REPLY: plain(decode_socks4_response),
    }
    received: ClassVar[Mapping[tuple[State, type], Transition]] = {
        (State.METHOD, MethodSelected): _after_method,
        (State.USERPASS_STATUS, AuthResult): after_auth_result,
        (State.GSSAPI, GssapiToken): after_gssapi_message,
        (State.REPLY, CommandReply): after_reply,
        (State.SECOND_REPLY, CommandReply): after_reply,
        (State.SOCKS4_REPLY, Socks4Response): after_socks4_reply,
        (State.SOCKS4_SECOND_REPLY, Socks4Response): after_socks4_reply,
    }
    sent: ClassVar[Mapping[tuple[State, type], Transition]] = {
        (State.GREETING, Greeting): State.METHOD,
        (State.GREETING, Socks4Request): State.SOCKS4_REPLY,
        (State.USERPASS, UserPassAuth): State.USERPASS_STATUS,
        (State.GSSAPI, GssapiToken): after_gssapi_message,
        (State.REQUEST, CommandRequest): State.REPLY,
    }
    encoders: ClassVar[Mapping[type, Callable[[Any], bytes]]] = {
        Greeting: encode_greeting,
        Socks4Request: encode_socks4_request,
        UserPassAuth: encode_userpass,
        GssapiToken: encode_gssapi,
        CommandRequest: encode_request,
    }

    def __init__(self, max_buffer: int = 0x10000 + 4) -> None:
        super().__init__(max_buffer)
        self.greeting: Greeting | None = None

    def send(self, message: Event) -> bytes:
        data = super().send(message)
        if isinstance(message, Greeting):
            self.greeting = message
        elif isinstance(message, CommandRequest | Socks4Request):
            self.request = message
        return data
