"""`ServerConnection` and `ClientConnection`: legal order, refusals, EOF, trailing data, bounds.

Each machine is driven alone with the RFC vectors, and both are driven against each other:
the bytes one `send()` returns are what the other `receive_data()` gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from socks5d.errors import (
    AddressTypeNotSupported,
    CommandNotSupported,
    LocalProtocolError,
    ProtocolError,
)
from socks5d.proto import (
    NEED_DATA,
    Address,
    AuthMethod,
    AuthResult,
    ClientConnection,
    Command,
    CommandReply,
    CommandRequest,
    ConnectionClosed,
    DomainName,
    Event,
    Greeting,
    GssapiMessageType,
    GssapiToken,
    MethodSelected,
    Reply,
    ServerConnection,
    Socks4Reply,
    Socks4Request,
    Socks4Response,
    State,
    UserPassAuth,
)
from socks5d.proto.connection import Connection
from vectors import (
    AUTH_FAILURE,
    AUTH_RESULTS,
    AUTH_SUCCESS,
    EXAMPLE,
    FAILURE_REPLIES,
    GREETING_ALL_STANDARD,
    GREETING_NOAUTH,
    GREETING_NOAUTH_USERPASS,
    GREETING_USERPASS,
    GREETINGS,
    GSSAPI_MESSAGES,
    IPV4,
    IPV4_BOUND,
    METHOD_NO_ACCEPTABLE,
    METHOD_NOAUTH,
    METHOD_SELECTIONS,
    METHOD_USERPASS,
    REPLIES,
    REPLY_SUCCEEDED,
    REPLY_SUCCEEDED_PEER,
    REQUEST_BIND_IPV4,
    REQUEST_CONNECT_DOMAIN,
    REQUEST_CONNECT_IPV4,
    REQUESTS,
    SOCKS4_BIND,
    SOCKS4_CONNECT,
    SOCKS4_GRANTED,
    SOCKS4_REQUESTS,
    SOCKS4_RESPONSES,
    SOCKS4A_CONNECT,
    USERPASS_ALICE,
    USERPASS_REQUESTS,
    Vector,
)

from .three_ways import (
    assert_decodes_three_ways,
    assert_rejects_three_ways,
    connection,
)

NO_AUTH = AuthMethod.NO_AUTHENTICATION_REQUIRED
USERPASS = AuthMethod.USERNAME_PASSWORD
GSSAPI = AuthMethod.GSSAPI

CONNECT_IPV4 = CommandRequest(Command.CONNECT, Address(IPV4, 80))
BIND_IPV4 = CommandRequest(Command.BIND, Address(IPV4, 80))
UDP_ASSOCIATE = CommandRequest(Command.UDP_ASSOCIATE, Address(IPV4, 0))
SUCCEEDED = CommandReply(Reply.SUCCEEDED, Address(IPV4_BOUND, 1080))
SUCCEEDED_PEER = CommandReply(Reply.SUCCEEDED, Address(IPV4, 80))
ALICE = UserPassAuth("alice", "s3cret")
TOKEN = GssapiToken(GssapiMessageType.AUTHENTICATION, b"token")
ABORT = GssapiToken(GssapiMessageType.ABORT)
PAYLOAD = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def receive(conn: Connection, data: bytes) -> Any:
    """Feed `data` and return the next event."""
    conn.receive_data(data)
    return conn.next_event()


def deliver(sender: Connection, message: Event, receiver: Connection) -> Any:
    """Send `message` from one machine to the other; the receiver must read back the same."""
    event = receive(receiver, sender.send(message))
    assert event == message
    return event


# --- machines brought to the state in which they read a message ---------------------------------


def server_at_greeting() -> ServerConnection:
    return ServerConnection()


def socks4_server_at_greeting() -> ServerConnection:
    return ServerConnection(accept_socks4=True)


def server_at_request(
    method: int = NO_AUTH, greeting: bytes = GREETING_ALL_STANDARD
) -> ServerConnection:
    server = ServerConnection()
    assert isinstance(receive(server, greeting), Greeting)
    server.send(MethodSelected(method))
    return server


def server_at_userpass() -> ServerConnection:
    server = server_at_request(USERPASS)
    assert server.state is State.USERPASS
    return server


def server_at_gssapi() -> ServerConnection:
    server = server_at_request(GSSAPI)
    assert server.state is State.GSSAPI
    return server


def client_at_method(methods: tuple[int, ...] = (NO_AUTH, GSSAPI, USERPASS)) -> ClientConnection:
    client = ClientConnection()
    client.send(Greeting(methods))
    return client


def client_after_method(method: int) -> ClientConnection:
    client = client_at_method()
    assert receive(client, bytes([0x05, method])) == MethodSelected(method)
    return client


def client_at_auth_result() -> ClientConnection:
    client = client_after_method(USERPASS)
    client.send(ALICE)
    return client


def client_at_reply(request: CommandRequest = CONNECT_IPV4) -> ClientConnection:
    client = client_after_method(NO_AUTH)
    client.send(request)
    return client


def client_at_second_reply() -> ClientConnection:
    client = client_at_reply(BIND_IPV4)
    assert receive(client, REPLY_SUCCEEDED) == SUCCEEDED
    assert client.state is State.SECOND_REPLY
    return client


def client_at_socks4_reply() -> ClientConnection:
    client = ClientConnection()
    client.send(Socks4Request(Command.CONNECT, Address(IPV4, 80)))
    return client


READERS: list[tuple[str, Callable[[], Connection], list[Vector]]] = [
    ("server_greeting", server_at_greeting, GREETINGS),
    ("server_socks4", socks4_server_at_greeting, SOCKS4_REQUESTS),
    ("server_socks4_accepts_socks5", socks4_server_at_greeting, GREETINGS),
    ("server_userpass", server_at_userpass, USERPASS_REQUESTS),
    ("server_gssapi", server_at_gssapi, GSSAPI_MESSAGES),
    ("server_request", server_at_request, REQUESTS),
    ("client_method", client_at_method, METHOD_SELECTIONS),
    ("client_auth_result", client_at_auth_result, AUTH_RESULTS),
    ("client_gssapi", lambda: client_after_method(GSSAPI), GSSAPI_MESSAGES),
    ("client_reply", client_at_reply, REPLIES),
    ("client_second_reply", client_at_second_reply, REPLIES),
    ("client_socks4_reply", client_at_socks4_reply, SOCKS4_RESPONSES),
]


@pytest.mark.parametrize(
    ("make", "vector"),
    [
        pytest.param(make, vector, id=f"{role}-{vector.name}")
        for role, make, vectors in READERS
        for vector in vectors
    ],
)
def test_machine_reads_each_message_of_its_state_whole_bytewise_and_with_trailing_data(
    make: Callable[[], Connection], vector: Vector
) -> None:
    assert_decodes_three_ways(connection(make), vector.data, vector.event)


# --- the server alone, on the RFC bytes ---------------------------------------------------------


def test_server_no_auth_connect_reaches_established_with_rfc_bytes() -> None:
    server = ServerConnection()
    assert server.state is State.GREETING
    assert receive(server, GREETING_NOAUTH) == Greeting((NO_AUTH,))
    assert server.state is State.METHOD
    assert server.send(MethodSelected(NO_AUTH)) == METHOD_NOAUTH
    assert server.state is State.REQUEST
    assert receive(server, REQUEST_CONNECT_IPV4) == CONNECT_IPV4
    assert server.state is State.REPLY
    assert server.request == CONNECT_IPV4
    assert server.send(SUCCEEDED) == REPLY_SUCCEEDED
    assert server.state is State.ESTABLISHED


def test_server_username_password_success_moves_to_request() -> None:
    server = ServerConnection()
    receive(server, GREETING_USERPASS)
    assert server.send(MethodSelected(USERPASS)) == METHOD_USERPASS
    assert receive(server, USERPASS_ALICE) == ALICE
    assert server.state is State.USERPASS_STATUS
    assert server.send(AuthResult(0x00)) == AUTH_SUCCESS
    assert server.state is State.REQUEST


def test_server_username_password_failure_closes() -> None:
    server = server_at_userpass()
    receive(server, USERPASS_ALICE)
    assert server.send(AuthResult(0x01)) == AUTH_FAILURE
    assert server.state is State.CLOSED


def test_server_no_acceptable_methods_closes() -> None:
    server = ServerConnection()
    receive(server, GREETING_USERPASS)
    assert server.send(MethodSelected(AuthMethod.NO_ACCEPTABLE_METHODS)) == METHOD_NO_ACCEPTABLE
    assert server.state is State.CLOSED


def test_server_answers_a_greeting_without_methods_with_no_acceptable_methods() -> None:
    server = ServerConnection()
    assert receive(server, bytes([0x05, 0x00])) == Greeting(())
    server.send(MethodSelected(AuthMethod.NO_ACCEPTABLE_METHODS))
    assert server.state is State.CLOSED


def test_server_bind_sends_two_replies_then_is_established() -> None:
    server = server_at_request()
    assert receive(server, REQUEST_BIND_IPV4) == BIND_IPV4
    assert server.send(SUCCEEDED) == REPLY_SUCCEEDED
    assert server.state is State.SECOND_REPLY
    assert server.next_event() is NEED_DATA
    assert server.send(SUCCEEDED_PEER) == REPLY_SUCCEEDED_PEER
    assert server.state is State.ESTABLISHED


def test_server_bind_second_reply_failure_closes() -> None:
    server = server_at_request()
    receive(server, REQUEST_BIND_IPV4)
    server.send(SUCCEEDED)
    server.send(CommandReply(Reply.TTL_EXPIRED))
    assert server.state is State.CLOSED


@pytest.mark.parametrize("vector", FAILURE_REPLIES, ids=lambda vector: vector.name)
def test_server_failure_reply_closes(vector: Vector) -> None:
    server = server_at_request()
    receive(server, REQUEST_CONNECT_IPV4)
    assert server.send(vector.event) == vector.data
    assert server.state is State.CLOSED


def test_server_udp_associate_is_established_after_one_reply() -> None:
    server = server_at_request()
    assert receive(server, bytes.fromhex("05 03 00 01 c0000201 0000")) == UDP_ASSOCIATE
    server.send(SUCCEEDED)
    assert server.state is State.ESTABLISHED


def test_server_gssapi_exchanges_tokens_until_authentication_complete() -> None:
    server = server_at_gssapi()
    assert receive(server, bytes([0x01, 0x01, 0x00, 0x05]) + b"token") == TOKEN
    assert server.state is State.GSSAPI
    assert server.send(TOKEN) == bytes([0x01, 0x01, 0x00, 0x05]) + b"token"
    assert server.state is State.GSSAPI
    server.authentication_complete()
    assert server.state is State.REQUEST
    assert receive(server, REQUEST_CONNECT_DOMAIN) == CommandRequest(
        Command.CONNECT, Address(EXAMPLE, 80)
    )


def test_server_sending_gssapi_abort_closes() -> None:
    server = server_at_gssapi()
    assert server.send(ABORT) == bytes([0x01, 0xFF])
    assert server.state is State.CLOSED


def test_authentication_complete_outside_gssapi_raises_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        server_at_userpass().authentication_complete()


def test_server_returns_need_data_while_it_is_its_turn_to_send() -> None:
    server = ServerConnection()
    receive(server, GREETING_NOAUTH + REQUEST_CONNECT_IPV4)
    assert server.state is State.METHOD
    assert server.next_event() is NEED_DATA
    server.send(MethodSelected(NO_AUTH))
    assert server.next_event() == CONNECT_IPV4


# --- SOCKS4 and SOCKS4a -------------------------------------------------------------------------


def test_server_accepting_socks4_reads_connect_and_is_established_after_granted() -> None:
    server = ServerConnection(accept_socks4=True)
    request = receive(server, SOCKS4_CONNECT)
    assert isinstance(request, Socks4Request)
    assert request.user_id == b"Fred"
    assert server.state is State.SOCKS4_REPLY
    assert server.request == request
    assert server.send(Socks4Response(Socks4Reply.GRANTED)) == SOCKS4_GRANTED
    assert server.state is State.ESTABLISHED


def test_server_accepting_socks4_reads_socks4a_domain_name() -> None:
    server = ServerConnection(accept_socks4=True)
    request = receive(server, SOCKS4A_CONNECT)
    assert request == Socks4Request(
        Command.CONNECT, Address(DomainName("example.com"), 80), b"Fred"
    )
    assert isinstance(request.destination.host, DomainName)


def test_server_socks4_bind_sends_two_replies() -> None:
    server = ServerConnection(accept_socks4=True)
    receive(server, SOCKS4_BIND)
    server.send(Socks4Response(Socks4Reply.GRANTED, Address(IPV4_BOUND, 1080)))
    assert server.state is State.SOCKS4_SECOND_REPLY
    server.send(Socks4Response(Socks4Reply.GRANTED, Address(IPV4, 21)))
    assert server.state is State.ESTABLISHED


@pytest.mark.parametrize(
    "status", [Socks4Reply.REJECTED, Socks4Reply.IDENTD_UNREACHABLE, Socks4Reply.IDENTD_MISMATCH]
)
def test_server_socks4_rejection_closes(status: Socks4Reply) -> None:
    server = ServerConnection(accept_socks4=True)
    receive(server, SOCKS4_CONNECT)
    server.send(Socks4Response(status))
    assert server.state is State.CLOSED


@pytest.mark.parametrize("data", [SOCKS4_CONNECT, SOCKS4A_CONNECT], ids=["socks4", "socks4a"])
def test_server_not_accepting_socks4_raises_protocol_error_on_version_4(data: bytes) -> None:
    server = ServerConnection(accept_socks4=False)
    with pytest.raises(ProtocolError):
        receive(server, data)
    assert server.state is State.ERROR
    assert_rejects_three_ways(connection(ServerConnection), data, ProtocolError)


@pytest.mark.parametrize("version", [0x00, 0x01, 0x06, 0xFF])
def test_server_raises_protocol_error_on_unknown_version(version: int) -> None:
    make = lambda: ServerConnection(accept_socks4=True)  # noqa: E731
    assert_rejects_three_ways(connection(make), bytes([version, 0x01, 0x00]), ProtocolError)


MALFORMED_REQUESTS = [
    pytest.param(
        bytes.fromhex("05 09 00 01 c0000201 0050"),
        CommandNotSupported,
        Reply.COMMAND_NOT_SUPPORTED,
        id="unknown_cmd",
    ),
    pytest.param(
        bytes.fromhex("05 01 00 02 c0000201 0050"),
        AddressTypeNotSupported,
        Reply.ADDRESS_TYPE_NOT_SUPPORTED,
        id="unknown_atyp",
    ),
    pytest.param(
        bytes.fromhex("05 01 01 01 c0000201 0050"), ProtocolError, Reply.GENERAL_FAILURE, id="rsv"
    ),
    pytest.param(
        bytes.fromhex("05 01 00 03 00 0050"), ProtocolError, Reply.GENERAL_FAILURE, id="empty_name"
    ),
]


@pytest.mark.parametrize(("data", "error", "reply"), MALFORMED_REQUESTS)
def test_server_answers_malformed_request_with_the_errors_reply_then_closes(
    data: bytes, error: type[ProtocolError], reply: Reply
) -> None:
    # RFC 1928 §6 has a REP for a bad request, so the server moves to REPLY instead of ERROR.
    server = server_at_request()
    with pytest.raises(error) as raised:
        receive(server, data)
    assert raised.value.reply == reply
    assert server.state is State.REPLY
    assert server.request is None
    answer = server.send(CommandReply(raised.value.reply))
    assert answer == bytes([0x05, reply, 0x00]) + bytes.fromhex("01 00000000 0000")
    assert server.state is State.CLOSED


def test_server_refuses_to_send_success_after_a_malformed_request() -> None:
    server = server_at_request()
    with pytest.raises(CommandNotSupported):
        receive(server, bytes.fromhex("05 09 00 01 c0000201 0050"))
    with pytest.raises(LocalProtocolError):
        server.send(SUCCEEDED)
    assert server.state is State.ERROR


def test_client_socks4_connect_is_established_after_granted() -> None:
    client = ClientConnection()
    request = Socks4Request(Command.CONNECT, Address(IPV4, 80), b"Fred")
    assert client.send(request) == bytes.fromhex("04 01 0050 c0000201") + b"Fred\x00"
    assert client.state is State.SOCKS4_REPLY
    assert receive(client, SOCKS4_GRANTED) == Socks4Response(Socks4Reply.GRANTED)
    assert client.state is State.ESTABLISHED


def test_client_socks4_rejection_closes() -> None:
    client = client_at_socks4_reply()
    receive(client, bytes.fromhex("00 5b 0000 00000000"))
    assert client.state is State.CLOSED


# --- the client alone ---------------------------------------------------------------------------


def test_client_no_auth_connect_reaches_established_with_rfc_bytes() -> None:
    client = ClientConnection()
    assert client.next_event() is NEED_DATA  # the client speaks first
    assert client.send(Greeting((NO_AUTH,))) == GREETING_NOAUTH
    assert client.state is State.METHOD
    assert receive(client, METHOD_NOAUTH) == MethodSelected(NO_AUTH)
    assert client.state is State.REQUEST
    assert client.send(CONNECT_IPV4) == REQUEST_CONNECT_IPV4
    assert client.state is State.REPLY
    assert receive(client, REPLY_SUCCEEDED) == SUCCEEDED
    assert client.state is State.ESTABLISHED


def test_client_username_password_success_and_failure() -> None:
    client = ClientConnection()
    assert client.send(Greeting((NO_AUTH, USERPASS))) == GREETING_NOAUTH_USERPASS
    receive(client, METHOD_USERPASS)
    assert client.send(ALICE) == USERPASS_ALICE
    assert client.state is State.USERPASS_STATUS
    assert receive(client, AUTH_SUCCESS) == AuthResult(0x00)
    assert client.state is State.REQUEST

    failing = client_at_auth_result()
    assert receive(failing, AUTH_FAILURE) == AuthResult(0x01)
    assert failing.state is State.CLOSED


def test_client_no_acceptable_methods_closes() -> None:
    client = client_at_method((USERPASS,))
    assert receive(client, METHOD_NO_ACCEPTABLE) == MethodSelected(0xFF)
    assert client.state is State.CLOSED


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        pytest.param((NO_AUTH,), USERPASS, id="userpass_not_offered"),
        pytest.param((USERPASS,), NO_AUTH, id="no_auth_not_offered"),
        pytest.param((NO_AUTH, USERPASS), GSSAPI, id="gssapi_not_offered"),
        pytest.param((NO_AUTH,), 0x80, id="private_method_not_offered"),
        pytest.param((0x80,), 0x80, id="offered_but_unknown_to_the_machine"),
    ],
)
def test_client_rejects_method_it_did_not_offer_with_protocol_error(
    offered: tuple[int, ...], chosen: int
) -> None:
    client = client_at_method(offered)
    with pytest.raises(ProtocolError):
        receive(client, bytes([0x05, chosen]))
    assert client.state is State.ERROR


def test_client_bind_reads_two_replies() -> None:
    client = client_at_reply(BIND_IPV4)
    assert receive(client, REPLY_SUCCEEDED) == SUCCEEDED
    assert client.state is State.SECOND_REPLY
    assert receive(client, REPLY_SUCCEEDED_PEER) == SUCCEEDED_PEER
    assert client.state is State.ESTABLISHED


@pytest.mark.parametrize("vector", FAILURE_REPLIES, ids=lambda vector: vector.name)
def test_client_failure_reply_closes(vector: Vector) -> None:
    client = client_at_reply()
    assert receive(client, vector.data) == vector.event
    assert client.state is State.CLOSED


def test_client_receiving_gssapi_abort_closes() -> None:
    client = client_after_method(GSSAPI)
    assert receive(client, bytes([0x01, 0xFF])) == ABORT
    assert client.state is State.CLOSED


# --- both machines against each other -----------------------------------------------------------


def establish(client: ClientConnection, server: ServerConnection, *messages: Event) -> None:
    """Deliver `messages` alternately, client first."""
    senders = [(client, server), (server, client)]
    for index, message in enumerate(messages):
        sender, receiver = senders[index % 2]
        deliver(sender, message, receiver)


def test_client_and_server_complete_no_auth_connect() -> None:
    client, server = ClientConnection(), ServerConnection()
    establish(
        client, server, Greeting((NO_AUTH,)), MethodSelected(NO_AUTH), CONNECT_IPV4, SUCCEEDED
    )
    assert client.state is server.state is State.ESTABLISHED
    assert server.request == client.request == CONNECT_IPV4


def test_client_and_server_complete_username_password_connect() -> None:
    client, server = ClientConnection(), ServerConnection()
    establish(
        client,
        server,
        Greeting((NO_AUTH, USERPASS)),
        MethodSelected(USERPASS),
        ALICE,
        AuthResult(0x00),
        CONNECT_IPV4,
        SUCCEEDED,
    )
    assert client.state is server.state is State.ESTABLISHED


def test_client_and_server_both_close_after_username_password_failure() -> None:
    client, server = ClientConnection(), ServerConnection()
    establish(
        client, server, Greeting((USERPASS,)), MethodSelected(USERPASS), ALICE, AuthResult(0x01)
    )
    assert client.state is server.state is State.CLOSED


def test_client_and_server_both_close_after_no_acceptable_methods() -> None:
    client, server = ClientConnection(), ServerConnection()
    establish(client, server, Greeting((GSSAPI,)), MethodSelected(0xFF))
    assert client.state is server.state is State.CLOSED


def test_client_and_server_complete_bind_with_two_replies() -> None:
    client, server = ClientConnection(), ServerConnection()
    establish(client, server, Greeting((NO_AUTH,)), MethodSelected(NO_AUTH), BIND_IPV4, SUCCEEDED)
    assert client.state is server.state is State.SECOND_REPLY
    deliver(server, SUCCEEDED_PEER, client)
    assert client.state is server.state is State.ESTABLISHED


@pytest.mark.parametrize("vector", FAILURE_REPLIES, ids=lambda vector: vector.name)
def test_client_and_server_both_close_after_failure_reply(vector: Vector) -> None:
    client, server = ClientConnection(), ServerConnection()
    establish(
        client, server, Greeting((NO_AUTH,)), MethodSelected(NO_AUTH), CONNECT_IPV4, vector.event
    )
    assert client.state is server.state is State.CLOSED


def test_client_and_server_complete_udp_associate() -> None:
    client, server = ClientConnection(), ServerConnection()
    establish(
        client, server, Greeting((NO_AUTH,)), MethodSelected(NO_AUTH), UDP_ASSOCIATE, SUCCEEDED
    )
    assert client.state is server.state is State.ESTABLISHED


def test_client_and_server_complete_gssapi_framing_then_connect() -> None:
    client, server = ClientConnection(), ServerConnection()
    establish(client, server, Greeting((GSSAPI,)), MethodSelected(GSSAPI), TOKEN, TOKEN)
    assert client.state is server.state is State.GSSAPI
    protection = GssapiToken(GssapiMessageType.PROTECTION_LEVEL, b"\x01")
    establish(client, server, protection, protection)
    client.authentication_complete()
    server.authentication_complete()
    establish(client, server, CONNECT_IPV4, SUCCEEDED)
    assert client.state is server.state is State.ESTABLISHED


@pytest.mark.parametrize(
    "request_",
    [
        Socks4Request(Command.CONNECT, Address(IPV4, 80), b"Fred"),
        Socks4Request(Command.CONNECT, Address(EXAMPLE, 80), b"Fred"),
    ],
    ids=["socks4", "socks4a"],
)
def test_client_and_server_complete_socks4_connect(request_: Socks4Request) -> None:
    client, server = ClientConnection(), ServerConnection(accept_socks4=True)
    establish(client, server, request_, Socks4Response(Socks4Reply.GRANTED))
    assert client.state is server.state is State.ESTABLISHED


def test_client_and_server_complete_socks4_bind_with_two_replies() -> None:
    client, server = ClientConnection(), ServerConnection(accept_socks4=True)
    bind = Socks4Request(Command.BIND, Address(IPV4, 21), b"Fred")
    establish(client, server, bind, Socks4Response(Socks4Reply.GRANTED, Address(IPV4_BOUND, 1080)))
    assert client.state is server.state is State.SOCKS4_SECOND_REPLY
    deliver(server, Socks4Response(Socks4Reply.GRANTED, Address(IPV4, 21)), client)
    assert client.state is server.state is State.ESTABLISHED


def test_client_and_server_both_close_after_socks4_rejection() -> None:
    client, server = ClientConnection(), ServerConnection(accept_socks4=True)
    establish(
        client,
        server,
        Socks4Request(Command.CONNECT, Address(IPV4, 80)),
        Socks4Response(Socks4Reply.REJECTED),
    )
    assert client.state is server.state is State.CLOSED


# --- out-of-order sends are our bug ------------------------------------------------------------


def _server_with_greeting() -> ServerConnection:
    server = ServerConnection()
    receive(server, GREETING_ALL_STANDARD)
    return server


def _established_server() -> ServerConnection:
    server = server_at_request()
    receive(server, REQUEST_CONNECT_IPV4)
    server.send(SUCCEEDED)
    return server


SERVER_OUT_OF_ORDER = [
    pytest.param(ServerConnection, SUCCEEDED, id="reply_before_greeting"),
    pytest.param(ServerConnection, MethodSelected(NO_AUTH), id="method_before_greeting"),
    pytest.param(server_at_request, MethodSelected(NO_AUTH), id="second_method_selection"),
    pytest.param(server_at_request, AuthResult(0x00), id="auth_result_after_no_auth"),
    pytest.param(server_at_userpass, SUCCEEDED, id="reply_before_userpass_request"),
    pytest.param(server_at_request, SUCCEEDED, id="reply_before_request"),
    pytest.param(server_at_request, TOKEN, id="gssapi_token_after_no_auth"),
    pytest.param(
        server_at_request, Socks4Response(Socks4Reply.GRANTED), id="socks4_reply_to_socks5"
    ),
    pytest.param(ServerConnection, Greeting((NO_AUTH,)), id="client_message_greeting"),
    pytest.param(ServerConnection, CONNECT_IPV4, id="client_message_request"),
    pytest.param(ServerConnection, ConnectionClosed(), id="not_a_message"),
    pytest.param(_server_with_greeting, MethodSelected(0x80), id="method_it_cannot_drive"),
    pytest.param(_established_server, SUCCEEDED, id="reply_after_established"),
]


CLIENT_OUT_OF_ORDER = [
    pytest.param(ClientConnection, CONNECT_IPV4, id="request_before_greeting"),
    pytest.param(ClientConnection, ALICE, id="userpass_before_greeting"),
    pytest.param(client_at_method, Greeting((NO_AUTH,)), id="second_greeting"),
    pytest.param(client_at_method, CONNECT_IPV4, id="request_before_method"),
    pytest.param(lambda: client_after_method(NO_AUTH), ALICE, id="userpass_after_no_auth"),
    pytest.param(lambda: client_after_method(USERPASS), CONNECT_IPV4, id="request_before_auth"),
    pytest.param(client_at_reply, CONNECT_IPV4, id="second_request"),
    pytest.param(
        client_at_reply, Socks4Request(Command.CONNECT, Address(IPV4, 80)), id="socks4_after_5"
    ),
    pytest.param(ClientConnection, MethodSelected(NO_AUTH), id="server_message_method"),
    pytest.param(ClientConnection, SUCCEEDED, id="server_message_reply"),
]


@pytest.mark.parametrize(("make", "message"), SERVER_OUT_OF_ORDER + CLIENT_OUT_OF_ORDER)
def test_out_of_order_send_raises_local_protocol_error_and_moves_to_error(
    make: Callable[[], Connection], message: Any
) -> None:
    conn = make()
    with pytest.raises(LocalProtocolError):
        conn.send(message)
    assert conn.state is State.ERROR


@pytest.mark.parametrize(
    ("make", "wrong", "legal"),
    [
        pytest.param(_server_with_greeting, SUCCEEDED, MethodSelected(NO_AUTH), id="server"),
        pytest.param(ClientConnection, CONNECT_IPV4, Greeting((NO_AUTH,)), id="client"),
    ],
)
def test_connection_in_error_refuses_even_a_message_legal_before(
    make: Callable[[], Connection], wrong: Event, legal: Event
) -> None:
    conn = make()
    with pytest.raises(LocalProtocolError):
        conn.send(wrong)
    with pytest.raises(LocalProtocolError):
        conn.send(legal)
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    assert conn.state is State.ERROR


def test_server_after_protocol_error_refuses_further_events() -> None:
    server = ServerConnection()
    with pytest.raises(ProtocolError):
        receive(server, bytes([0x06, 0x01, 0x00]))
    with pytest.raises(LocalProtocolError):
        server.next_event()


# --- end of stream ------------------------------------------------------------------------------

EOF_MID_MESSAGE = [
    pytest.param(ServerConnection, GREETING_USERPASS[:2], id="server_greeting"),
    pytest.param(server_at_userpass, USERPASS_ALICE[:7], id="server_userpass"),
    pytest.param(server_at_request, REQUEST_CONNECT_DOMAIN[:-1], id="server_request"),
    pytest.param(server_at_gssapi, bytes([0x01, 0x01, 0x00, 0x05]) + b"tok", id="server_gssapi"),
    pytest.param(
        lambda: ServerConnection(accept_socks4=True), SOCKS4_CONNECT[:-1], id="server_socks4"
    ),
    pytest.param(client_at_method, METHOD_NOAUTH[:1], id="client_method"),
    pytest.param(client_at_auth_result, AUTH_SUCCESS[:1], id="client_auth_result"),
    pytest.param(client_at_reply, REPLY_SUCCEEDED[:9], id="client_reply"),
    pytest.param(client_at_second_reply, REPLY_SUCCEEDED[:4], id="client_second_reply"),
    pytest.param(client_at_socks4_reply, SOCKS4_GRANTED[:7], id="client_socks4_reply"),
]


@pytest.mark.parametrize(("make", "partial"), EOF_MID_MESSAGE)
def test_eof_mid_message_yields_connection_closed_with_pending_byte_count(
    make: Callable[[], Connection], partial: bytes
) -> None:
    conn = make()
    conn.receive_data(partial)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(pending=len(partial))
    assert conn.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.next_event()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(ServerConnection, id="server_greeting"),
        pytest.param(server_at_request, id="server_request"),
        pytest.param(client_at_method, id="client_method"),
        pytest.param(client_at_reply, id="client_reply"),
    ],
)
def test_eof_between_messages_yields_connection_closed_with_nothing_pending(
    make: Callable[[], Connection],
) -> None:
    conn = make()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(pending=0)
    assert conn.state is State.CLOSED


def test_complete_message_before_eof_is_delivered_before_connection_closed() -> None:
    server = ServerConnection()
    server.receive_data(GREETING_NOAUTH)
    server.receive_data(b"")
    assert server.next_event() == Greeting((NO_AUTH,))
    server.send(MethodSelected(NO_AUTH))
    assert server.next_event() == ConnectionClosed(pending=0)


# --- trailing data belongs to the relay ---------------------------------------------------------


def test_server_keeps_bytes_after_the_request_for_the_relay() -> None:
    server = server_at_request()
    assert receive(server, REQUEST_CONNECT_IPV4 + PAYLOAD) == CONNECT_IPV4
    server.send(SUCCEEDED)
    assert server.state is State.ESTABLISHED
    assert server.trailing_data == PAYLOAD
    assert server.trailing_data == b""


def test_server_reads_a_pipelined_handshake_from_one_chunk_and_keeps_the_payload() -> None:
    server = ServerConnection()
    assert receive(server, GREETING_USERPASS + USERPASS_ALICE + REQUEST_CONNECT_IPV4 + PAYLOAD) == (
        Greeting((USERPASS,))
    )
    server.send(MethodSelected(USERPASS))
    assert server.next_event() == ALICE
    server.send(AuthResult(0x00))
    assert server.next_event() == CONNECT_IPV4
    server.send(SUCCEEDED)
    assert server.trailing_data == PAYLOAD


def test_server_keeps_bytes_after_a_socks4_request_for_the_relay() -> None:
    server = ServerConnection(accept_socks4=True)
    receive(server, SOCKS4A_CONNECT + PAYLOAD)
    server.send(Socks4Response(Socks4Reply.GRANTED))
    assert server.trailing_data == PAYLOAD


def test_server_keeps_bytes_arriving_after_established_for_the_relay() -> None:
    server = server_at_request()
    receive(server, REQUEST_CONNECT_IPV4)
    server.send(SUCCEEDED)
    server.receive_data(PAYLOAD)
    assert server.next_event() is NEED_DATA
    assert server.trailing_data == PAYLOAD


def test_client_keeps_bytes_after_the_reply_for_the_relay() -> None:
    client = client_at_reply()
    assert receive(client, REPLY_SUCCEEDED + b"HTTP/1.1 200 OK\r\n") == SUCCEEDED
    assert client.state is State.ESTABLISHED
    assert client.trailing_data == b"HTTP/1.1 200 OK\r\n"


def test_client_keeps_bytes_after_a_socks4_reply_for_the_relay() -> None:
    client = client_at_socks4_reply()
    receive(client, SOCKS4_GRANTED + b"banner")
    assert client.trailing_data == b"banner"


# --- buffer bound -------------------------------------------------------------------------------

BOUND = 16

#: Beginnings of valid messages longer than BOUND, one per reading state.
LONG_MESSAGE_STARTS = [
    pytest.param(
        lambda: ServerConnection(max_buffer=BOUND),
        bytes([0x05, 0xFF, *range(BOUND)]),
        State.ERROR,
        id="server_greeting_255_methods",
    ),
    pytest.param(
        lambda: ServerConnection(accept_socks4=True, max_buffer=BOUND),
        bytes.fromhex("04 01 0050 c0000201") + b"u" * BOUND,
        State.ERROR,
        id="server_socks4_userid",
    ),
    pytest.param(
        lambda: _bounded_server(USERPASS),
        bytes([0x01, 0xFF]) + b"u" * BOUND,
        State.ERROR,
        id="server_userpass",
    ),
    pytest.param(
        lambda: _bounded_server(GSSAPI),
        bytes([0x01, 0x01, 0x01, 0x00]) + b"t" * BOUND,
        State.ERROR,
        id="server_gssapi_token",
    ),
    pytest.param(
        lambda: _bounded_server(NO_AUTH),
        bytes([0x05, 0x01, 0x00, 0x03, 0xFF]) + b"n" * BOUND,
        State.REPLY,  # answerable: a reply with X'01' general failure
        id="server_request_domain",
    ),
    pytest.param(
        lambda: _bounded_client_at_reply(),
        bytes([0x05, 0x00, 0x00, 0x03, 0xFF]) + b"n" * BOUND,
        State.ERROR,
        id="client_reply_domain",
    ),
]


def _bounded_server(method: int) -> ServerConnection:
    server = ServerConnection(max_buffer=BOUND)
    receive(server, GREETING_ALL_STANDARD)
    server.send(MethodSelected(method))
    return server


def _bounded_client_at_reply() -> ClientConnection:
    client = ClientConnection(max_buffer=BOUND)
    client.send(Greeting((NO_AUTH,)))
    receive(client, METHOD_NOAUTH)
    client.send(CONNECT_IPV4)
    return client


@pytest.mark.parametrize(("make", "start", "state_after"), LONG_MESSAGE_STARTS)
def test_more_than_max_buffer_bytes_without_a_complete_message_raises_protocol_error(
    make: Callable[[], Connection], start: bytes, state_after: State
) -> None:
    conn = make()
    conn.receive_data(start[:BOUND])
    assert conn.next_event() is NEED_DATA, "exactly max_buffer bytes are still held"
    conn.receive_data(start[BOUND : BOUND + 1])
    with pytest.raises(ProtocolError):
        conn.next_event()
    assert conn.state is state_after


@pytest.mark.parametrize(("make", "start", "state_after"), LONG_MESSAGE_STARTS)
def test_buffer_bound_holds_when_bytes_arrive_one_at_a_time(
    make: Callable[[], Connection], start: bytes, state_after: State
) -> None:
    conn = make()
    with pytest.raises(ProtocolError):
        for byte in start:
            conn.receive_data(bytes([byte]))
            assert conn.next_event() is NEED_DATA


def test_complete_message_longer_than_max_buffer_in_one_chunk_is_still_read() -> None:
    # The bound is on bytes held for an *incomplete* message.
    server = ServerConnection(max_buffer=BOUND)
    greeting = bytes([0x05, 0x20, *range(0x20)])
    assert receive(server, greeting) == Greeting(tuple(range(0x20)))


def test_default_max_buffer_holds_the_longest_gssapi_token() -> None:
    server = server_at_gssapi()
    token = GssapiToken(GssapiMessageType.AUTHENTICATION, b"\xa5" * 0xFFFF)
    data = bytes([0x01, 0x01, 0xFF, 0xFF]) + token.token
    chunks = [data[start : start + 4096] for start in range(0, len(data), 4096)]
    for chunk in chunks[:-1]:
        server.receive_data(chunk)
        assert server.next_event() is NEED_DATA
    server.receive_data(chunks[-1])
    assert server.next_event() == token
