"""Transitions both roles share: what follows a method, a status, a reply or a GSS-API message.

The server applies them to messages it sends, the client to the same messages it receives.
"""

from __future__ import annotations

from socks5d.constants import AuthMethod, Command, GssapiMessageType, Reply, Socks4Reply
from socks5d.errors import LocalProtocolError
from socks5d.proto.connection import Connection, State
from socks5d.proto.events import AuthResult, CommandReply, GssapiToken, Socks4Response

STATE_AFTER_METHOD = {
    AuthMethod.NO_AUTHENTICATION_REQUIRED: State.REQUEST,
    AuthMethod.USERNAME_PASSWORD: State.USERPASS,
    AuthMethod.GSSAPI: State.GSSAPI,
    # RFC 1928 §3: "If the selected METHOD is X'FF', none of the methods listed by the client
    # are acceptable, and the client MUST close the connection."
    AuthMethod.NO_ACCEPTABLE_METHODS: State.CLOSED,
}


def after_auth_result(_connection: Connection, message: AuthResult) -> State:
    """RFC 1929 §2: "If the server returns a `failure' (STATUS value other than X'00')
    status, it MUST close the connection."
    """
    return State.REQUEST if message.success else State.CLOSED


def after_reply(connection: Connection, message: CommandReply) -> State:
    """RFC 1928 §6: a failure closes ("the SOCKS server MUST terminate the TCP connection
    shortly after sending the reply"); BIND has "two replies"; else the tunnel is up.
    """
    if message.reply != Reply.SUCCEEDED:
        return State.CLOSED
    request = connection.request
    if request is None:
        raise LocalProtocolError("success reply to a request that could not be read")
    if connection.state is State.REPLY and request.command == Command.BIND:
        return State.SECOND_REPLY
    return State.ESTABLISHED


def after_socks4_reply(connection: Connection, message: Socks4Response) -> State:
    """SOCKS4: "The SOCKS server closes its connection immediately after notifying the client
    of a failed or rejected request."; BIND has a second reply.
    """
    if message.status != Socks4Reply.GRANTED:
        return State.CLOSED
    request = connection.request
    if request is None:
        raise LocalProtocolError("granted reply to a request that could not be read")
    if connection.state is State.SOCKS4_REPLY and request.command == Command.BIND:
        return State.SOCKS4_SECOND_REPLY
    return State.ESTABLISHED


def after_gssapi_message(_connection: Connection, message: GssapiToken) -> State:
    """Tokens keep the sub-negotiation going; an abort ends the connection.

    RFC 1961 §3: on failure the peer sends the abort message and "the connection is closed".
    """
    if message.message_type == GssapiMessageType.ABORT:
        return State.CLOSED
    return State.GSSAPI
