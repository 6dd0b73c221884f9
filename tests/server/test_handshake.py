"""Method negotiation and RFC 1929 sub-negotiation over raw sockets, well-formed or not.

RFC 1928 §3: the server answers a greeting with one METHOD, X'FF' when none of the offered
ones is acceptable ("the client MUST close the connection"); RFC 1929 §2: STATUS X'00' is
success, anything else a failure after which "it MUST close the connection".
"""

from __future__ import annotations

import socket

import pytest

from socks5d.constants import USERPASS_VERSION, UserPassStatus
from socks5d.proto import SOCKS5_VERSION, Address, AuthMethod, Command, Reply

from .raw_client import (
    connect,
    greeting_bytes,
    loopback_address,
    read_reply,
    read_until_eof,
    recv_exactly,
    request_bytes,
    userpass_bytes,
)

NO_AUTH = AuthMethod.NO_AUTHENTICATION_REQUIRED
USERPASS = AuthMethod.USERNAME_PASSWORD
NO_ACCEPTABLE = bytes([SOCKS5_VERSION, AuthMethod.NO_ACCEPTABLE_METHODS])
USERS = {"alice": "secret"}
AUTH_SUCCESS = bytes([USERPASS_VERSION, UserPassStatus.SUCCESS])
AUTH_FAILURE = bytes([USERPASS_VERSION, UserPassStatus.FAILURE])


def method_selected(method: AuthMethod) -> bytes:
    return bytes([SOCKS5_VERSION, method])


@pytest.mark.parametrize(
    "first_bytes",
    [
        pytest.param(b"\x04\x01\x00\x50\x7f\x00\x00\x01alice\x00", id="socks4-request"),
        pytest.param(b"\x04\x01\x00", id="version-4-greeting"),
        pytest.param(b"\x06\x01\x00", id="version-6-greeting"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", id="http"),
        pytest.param(b"\x00", id="nul"),
        pytest.param(b"\xff" * 64, id="ff-bytes"),
    ],
)
def test_greeting_with_unsupported_version_is_closed_without_a_reply(
    start_server, first_bytes: bytes
) -> None:
    socks_server = start_server(socks4=False)
    with connect(socks_server) as sock:
        sock.sendall(first_bytes)
        assert read_until_eof(sock) == b""
    record = socks_server.wait_records(1)[0]
    assert record["reply"] is None
    assert record["outcome"].startswith("protocol error: unsupported SOCKS version")


def test_greeting_with_zero_methods_gets_no_acceptable_methods_then_close(socks_server) -> None:
    with connect(socks_server) as sock:
        sock.sendall(greeting_bytes())
        assert read_until_eof(sock) == NO_ACCEPTABLE
    record = socks_server.wait_records(1)[0]
    assert record["outcome"] == "auth failed: no acceptable method (offered none)"


@pytest.mark.parametrize(
    ("users", "offered"),
    [
        pytest.param(None, (USERPASS,), id="userpass-to-no-auth-server"),
        pytest.param(None, (AuthMethod.GSSAPI, 0x80, 0xFE), id="gssapi-and-private-to-no-auth"),
        pytest.param(USERS, (NO_AUTH,), id="no-auth-to-userpass-server"),
    ],
)
def test_greeting_without_an_acceptable_method_gets_ff_then_close(
    start_server, users: dict[str, str] | None, offered: tuple[int, ...]
) -> None:
    server = start_server(users=users)
    with connect(server) as sock:
        sock.sendall(greeting_bytes(*offered))
        assert read_until_eof(sock) == NO_ACCEPTABLE
    assert server.wait_records(1)[0]["outcome"].startswith("auth failed: no acceptable method")


@pytest.mark.parametrize(
    ("preference", "offered", "chosen"),
    [
        (["userpass", "none"], (NO_AUTH, USERPASS), USERPASS),
        (["userpass", "none"], (USERPASS, NO_AUTH), USERPASS),
        (["none", "userpass"], (USERPASS, NO_AUTH), NO_AUTH),
        (["none", "userpass"], (NO_AUTH, USERPASS), NO_AUTH),
        (["userpass", "none"], (AuthMethod.GSSAPI, NO_AUTH), NO_AUTH),
    ],
)
def test_server_preference_decides_among_offered_methods(
    start_server,
    listener: socket.socket,
    preference: list[str],
    offered: tuple[int, ...],
    chosen: AuthMethod,
) -> None:
    server = start_server(users=USERS, auth=preference)
    with connect(server) as sock:
        sock.sendall(greeting_bytes(*offered))
        assert recv_exactly(sock, 2) == method_selected(chosen)
        if chosen == USERPASS:
            sock.sendall(userpass_bytes("alice", "secret"))
            assert recv_exactly(sock, 2) == AUTH_SUCCESS
        sock.sendall(request_bytes(Command.CONNECT, loopback_address(listener)))
        reply, _ = read_reply(sock)
        assert reply.reply == Reply.SUCCEEDED
        listener.accept()[0].close()
    record = server.wait_records(1)[0]
    assert record["user"] == ("alice" if chosen == USERPASS else None)


def test_userpass_with_right_credentials_succeeds_and_connect_is_served(
    start_server, listener: socket.socket
) -> None:
    server = start_server(users=USERS)
    with connect(server) as sock:
        sock.sendall(greeting_bytes(USERPASS))
        assert recv_exactly(sock, 2) == method_selected(USERPASS)
        sock.sendall(userpass_bytes("alice", "secret"))
        assert recv_exactly(sock, 2) == AUTH_SUCCESS
        sock.sendall(request_bytes(Command.CONNECT, loopback_address(listener)))
        reply, _ = read_reply(sock)
        assert reply.reply == Reply.SUCCEEDED
        peer, _ = listener.accept()
        with peer:
            sock.sendall(b"hello")
            assert recv_exactly(peer, 5) == b"hello"
    record = server.wait_records(1)[0]
    assert record["user"] == "alice"
    assert record["reply"] == "succeeded"
    assert record["command"] == "connect"


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("alice", "wrong", id="wrong-password"),
        pytest.param("alice", "", id="empty-password"),
        pytest.param("mallory", "secret", id="unknown-user"),
        pytest.param("ALICE", "secret", id="username-is-case-sensitive"),
    ],
)
def test_userpass_with_bad_credentials_gets_failure_status_then_close(
    start_server, username: str, password: str
) -> None:
    server = start_server(users=USERS)
    with connect(server) as sock:
        sock.sendall(greeting_bytes(USERPASS))
        assert recv_exactly(sock, 2) == method_selected(USERPASS)
        sock.sendall(userpass_bytes(username, password))
        assert read_until_eof(sock) == AUTH_FAILURE
    record = server.wait_records(1)[0]
    assert record["user"] == username
    assert record["reply"] is None
    assert record["outcome"].startswith("auth failed: wrong username or password")


def test_userpass_with_wrong_subnegotiation_version_is_closed_without_status(
    start_server,
) -> None:
    server = start_server(users=USERS)
    with connect(server) as sock:
        sock.sendall(greeting_bytes(USERPASS))
        assert recv_exactly(sock, 2) == method_selected(USERPASS)
        sock.sendall(userpass_bytes("alice", "secret", version=SOCKS5_VERSION))
        assert read_until_eof(sock) == b""
    record = server.wait_records(1)[0]
    assert record["outcome"].startswith("protocol error: unsupported username/password version")


#: (server users, messages sent whole with the replies they get, message cut in half)
TRUNCATIONS = {
    "greeting": (None, [], greeting_bytes(NO_AUTH, AuthMethod.GSSAPI, USERPASS)),
    "userpass": (
        USERS,
        [(greeting_bytes(USERPASS), method_selected(USERPASS))],
        userpass_bytes("alice", "secret"),
    ),
    "ipv4-request": (
        None,
        [(greeting_bytes(NO_AUTH), method_selected(NO_AUTH))],
        request_bytes(Command.CONNECT, Address.from_host("127.0.0.1", 80)),
    ),
    "domain-request": (
        None,
        [(greeting_bytes(NO_AUTH), method_selected(NO_AUTH))],
        request_bytes(Command.CONNECT, Address.from_host("example.com", 443)),
    ),
    "userpass-then-request": (
        USERS,
        [
            (greeting_bytes(USERPASS), method_selected(USERPASS)),
            (userpass_bytes("alice", "secret"), AUTH_SUCCESS),
        ],
        request_bytes(Command.CONNECT, Address.from_host("::1", 80)),
    ),
}


@pytest.mark.parametrize("stage", TRUNCATIONS)
def test_message_truncated_by_client_eof_closes_the_connection(start_server, stage: str) -> None:
    users, exchanges, message = TRUNCATIONS[stage]
    server = start_server(users=users)
    with connect(server) as sock:
        for sent, answer in exchanges:
            sock.sendall(sent)
            assert recv_exactly(sock, len(answer)) == answer
        sock.sendall(message[: len(message) // 2])
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b""
    record = server.wait_records(1)[0]
    assert record["outcome"] == "client closed during handshake"
    assert record["reply"] is None


@pytest.mark.parametrize("stage", ["nothing-sent", *TRUNCATIONS])
def test_client_stalling_mid_handshake_is_dropped_after_handshake_timeout(
    start_server, stage: str
) -> None:
    users, exchanges, message = TRUNCATIONS.get(stage, (None, [], b""))
    server = start_server(users=users, timeouts={"handshake": 0.5})
    with connect(server) as sock:
        for sent, answer in exchanges:
            sock.sendall(sent)
            assert recv_exactly(sock, len(answer)) == answer
        sock.sendall(message[: len(message) // 2])
        assert read_until_eof(sock) == b""  # the server's FIN, well before IO_TIMEOUT
    record = server.wait_records(1)[0]
    assert record["outcome"] == "handshake timeout"


def test_client_stalling_after_the_greeting_is_dropped_after_handshake_timeout(
    start_server,
) -> None:
    server = start_server(timeouts={"handshake": 0.5})
    with connect(server) as sock:
        sock.sendall(greeting_bytes(NO_AUTH))
        assert recv_exactly(sock, 2) == method_selected(NO_AUTH)
        assert read_until_eof(sock) == b""
    assert server.wait_records(1)[0]["outcome"] == "handshake timeout"


def _send_one_byte_at_a_time(sock: socket.socket, data: bytes) -> None:
    for octet in data:
        sock.sendall(bytes([octet]))


@pytest.mark.parametrize("users", [None, USERS], ids=["no-auth", "userpass"])
def test_handshake_sent_one_byte_at_a_time_is_served(
    start_server, listener: socket.socket, users: dict[str, str] | None
) -> None:
    server = start_server(users=users)
    method = USERPASS if users else NO_AUTH
    with connect(server) as sock:
        _send_one_byte_at_a_time(sock, greeting_bytes(method))
        assert recv_exactly(sock, 2) == method_selected(method)
        if users:
            _send_one_byte_at_a_time(sock, userpass_bytes("alice", "secret"))
            assert recv_exactly(sock, 2) == AUTH_SUCCESS
        _send_one_byte_at_a_time(sock, request_bytes(Command.CONNECT, loopback_address(listener)))
        reply, _ = read_reply(sock)
        assert reply.reply == Reply.SUCCEEDED
        peer, _ = listener.accept()
        with peer:
            sock.sendall(b"dribbled")
            assert recv_exactly(peer, 8) == b"dribbled"
    record = server.wait_records(1)[0]
    assert record["reply"] == "succeeded"
    assert record["bytes_up"] == 8


@pytest.mark.parametrize("users", [None, USERS], ids=["no-auth", "userpass"])
def test_pipelined_greeting_request_and_data_in_one_send_are_served(
    start_server, listener: socket.socket, users: dict[str, str] | None
) -> None:
    server = start_server(users=users)
    data = b"GET / HTTP/1.0\r\n\r\n" * 100
    handshake = greeting_bytes(USERPASS if users else NO_AUTH)
    if users:
        handshake += userpass_bytes("alice", "secret")
    handshake += request_bytes(Command.CONNECT, loopback_address(listener))
    with connect(server) as sock:
        sock.sendall(handshake + data)
        expected = method_selected(USERPASS if users else NO_AUTH)
        if users:
            expected += AUTH_SUCCESS
        assert recv_exactly(sock, len(expected)) == expected
        reply, _ = read_reply(sock)
        assert reply.reply == Reply.SUCCEEDED
        peer, _ = listener.accept()
        with peer:
            assert recv_exactly(peer, len(data)) == data
            peer.sendall(b"answer")
            assert recv_exactly(sock, 6) == b"answer"
    record = server.wait_records(1)[0]
    assert record["bytes_up"] == len(data)
    assert record["bytes_down"] == 6
