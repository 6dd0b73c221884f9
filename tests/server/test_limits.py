"""[limits]: sessions, handshakes, UDP associations and BIND listeners, in all and per client
IP; failed logins delayed, then the IP blocked.

A connection refused by a session or handshake limit (or a block) is closed before the
greeting: the client reads EOF and not one byte, and `Server.refused` counts the reason.
UDP and BIND limits apply to a request: the extra one is answered X'01' (general failure).
A second client IP on the same machine is 127.0.0.2 (bound before connecting).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from socks5d.proto import SOCKS5_VERSION, Address, AuthMethod, Command, Reply
from socks5d.proto.constants import USERPASS_VERSION

from .raw_client import (
    IO_TIMEOUT,
    greeting_bytes,
    loopback_address,
    open_request,
    open_tunnel,
    read_reply,
    read_until_eof,
    recv_exactly,
    request_bytes,
    userpass_bytes,
)

CLIENT = "127.0.0.1"
OTHER_CLIENT = "127.0.0.2"
NO_AUTH = AuthMethod.NO_AUTHENTICATION_REQUIRED
USERPASS = AuthMethod.USERNAME_PASSWORD
#: VER alone: a greeting cut after its first octet.
HALF_GREETING = bytes([SOCKS5_VERSION])
#: UDP ASSOCIATE's DST.ADDR/DST.PORT when the client does not know its own port yet.
UNKNOWN = Address.from_host("0.0.0.0", 0)
#: BIND's DST.ADDR: the loopback peer that is expected (and never comes).
LOOPBACK_PEER = Address.from_host("127.0.0.1", 0)
#: RFC 1929 STATUS X'00': success; anything else is a failure.
LOGIN_SUCCESS = 0


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    """Closes whatever the test registers, at the latest at teardown."""
    with ExitStack() as stack:
        yield stack


def connect_from(server, source: str = CLIENT) -> socket.socket:
    """A TCP connection to the server from the loopback address `source`."""
    sock = socket.create_connection(server.address, timeout=IO_TIMEOUT, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def greet(sock: socket.socket, method: int = NO_AUTH) -> None:
    """Send a one-method greeting; the server must select that method."""
    sock.sendall(greeting_bytes(method))
    assert recv_exactly(sock, 2) == bytes([SOCKS5_VERSION, method])


def assert_refused_before_greeting(sock: socket.socket) -> None:
    """The server closed the connection without sending a single octet."""
    assert read_until_eof(sock) == b""


def admitted(server, stack: ExitStack, source: str = CLIENT) -> socket.socket:
    """A connection the server took: its greeting is answered."""
    sock = stack.enter_context(connect_from(server, source))
    greet(sock)
    return sock


def stalled(server, stack: ExitStack, source: str = CLIENT) -> socket.socket:
    """A connection stuck half-way through its greeting (no answer is owed yet)."""
    sock = stack.enter_context(connect_from(server, source))
    sock.sendall(HALF_GREETING)
    return sock


def finish_handshake(sock: socket.socket, destination: Address) -> None:
    """Complete a stalled greeting, then a CONNECT; the tunnel must be up."""
    sock.sendall(bytes([1, NO_AUTH]))  # NMETHODS, METHODS
    assert recv_exactly(sock, 2) == bytes([SOCKS5_VERSION, NO_AUTH])
    sock.sendall(request_bytes(Command.CONNECT, destination))
    assert read_reply(sock)[0].reply == Reply.SUCCEEDED


def refused(running) -> Counter[str]:
    return running.server.refused


# --- sessions -----------------------------------------------------------------------------------


def test_a_connection_beyond_max_sessions_is_closed_before_the_greeting_and_counted(
    start_server, listener: socket.socket, sockets: ExitStack
) -> None:
    server = start_server(limits={"max_sessions": 2})
    with ExitStack() as first_two:
        # Two tunnels: sessions hold their slot past the handshake.
        for _ in range(2):
            client, reply = open_tunnel(server, loopback_address(listener))
            first_two.enter_context(client)
            first_two.enter_context(listener.accept()[0])
            assert reply.reply == Reply.SUCCEEDED

        third = sockets.enter_context(connect_from(server))
        assert_refused_before_greeting(third)
        assert refused(server) == {"sessions: limit of 2 reached": 1}

        other_ip = sockets.enter_context(connect_from(server, OTHER_CLIENT))
        assert_refused_before_greeting(other_ip)  # the total counts every client
        assert refused(server) == {"sessions: limit of 2 reached": 2}
    server.wait_records(2)  # both tunnels ended: their slots are back

    with ExitStack() as again:
        admitted(server, again)
        admitted(server, again)
        assert_refused_before_greeting(sockets.enter_context(connect_from(server)))
    assert refused(server) == {"sessions: limit of 2 reached": 3}


def test_max_sessions_per_client_still_admits_another_client_ip(
    start_server, listener: socket.socket, sockets: ExitStack
) -> None:
    server = start_server(limits={"max_sessions_per_client": 2})
    with ExitStack() as first_two:
        for _ in range(2):
            client, reply = open_tunnel(server, loopback_address(listener))
            first_two.enter_context(client)
            first_two.enter_context(listener.accept()[0])
            assert reply.reply == Reply.SUCCEEDED

        assert_refused_before_greeting(sockets.enter_context(connect_from(server)))
        assert refused(server) == {"sessions: limit of 2 per client reached": 1}

        # 127.0.0.2 has a limit of its own, untouched by 127.0.0.1's sessions.
        admitted(server, first_two, OTHER_CLIENT)
        admitted(server, first_two, OTHER_CLIENT)
        assert_refused_before_greeting(sockets.enter_context(connect_from(server, OTHER_CLIENT)))
        assert refused(server) == {"sessions: limit of 2 per client reached": 2}
    server.wait_records(4)

    with ExitStack() as again:
        admitted(server, again)
        admitted(server, again)
    assert refused(server) == {"sessions: limit of 2 per client reached": 2}


# --- handshakes ---------------------------------------------------------------------------------


def test_stalled_handshakes_fill_max_handshakes_and_a_completed_one_frees_its_slot(
    start_server, listener: socket.socket, sockets: ExitStack
) -> None:
    server = start_server(limits={"max_handshakes": 2})
    first = stalled(server, sockets)
    stalled(server, sockets, OTHER_CLIENT)

    # The accept queue is first come, first served: the two stalled ones were admitted first.
    assert_refused_before_greeting(sockets.enter_context(connect_from(server)))
    assert_refused_before_greeting(sockets.enter_context(connect_from(server, OTHER_CLIENT)))
    assert refused(server) == {"handshakes in progress: limit of 2 reached": 2}

    # A handshake that completes gives its slot back; its tunnel holds only a session slot.
    finish_handshake(first, loopback_address(listener))
    with listener.accept()[0]:
        admitted(server, sockets)
        assert_refused_before_greeting(sockets.enter_context(connect_from(server)))
    assert refused(server) == {"handshakes in progress: limit of 2 reached": 3}


def test_max_handshakes_per_client_still_admits_another_client_ip(
    start_server, listener: socket.socket, sockets: ExitStack
) -> None:
    server = start_server(limits={"max_handshakes_per_client": 2})
    first = stalled(server, sockets)
    stalled(server, sockets)
    assert_refused_before_greeting(sockets.enter_context(connect_from(server)))
    assert refused(server) == {"handshakes in progress: limit of 2 per client reached": 1}

    stalled(server, sockets, OTHER_CLIENT)
    admitted(server, sockets, OTHER_CLIENT)

    finish_handshake(first, loopback_address(listener))
    with listener.accept()[0]:
        admitted(server, sockets)
    assert refused(server) == {"handshakes in progress: limit of 2 per client reached": 1}


def test_handshake_slots_come_back_when_stalled_clients_leave(
    start_server, settled_active_sessions
) -> None:
    server = start_server(limits={"max_handshakes": 3, "max_handshakes_per_client": 2})
    for round_number in range(1, 4):
        with ExitStack() as round_sockets:
            stalled(server, round_sockets)
            stalled(server, round_sockets)
            stalled(server, round_sockets, OTHER_CLIENT)
            assert_refused_before_greeting(round_sockets.enter_context(connect_from(server)))
        records = server.wait_records(3 * round_number)
        assert {record["outcome"] for record in records} == {"client closed during handshake"}
    assert refused(server) == {"handshakes in progress: limit of 3 reached": 3}
    assert settled_active_sessions(server) == 0


# --- UDP associations and BIND listeners -------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "destination", "setting", "outcome"),
    [
        pytest.param(
            Command.UDP_ASSOCIATE,
            UNKNOWN,
            "max_udp_associations_per_client",
            "UDP associations: limit of 2 per client reached",
            id="udp",
        ),
        pytest.param(
            Command.BIND,
            LOOPBACK_PEER,
            "max_bind_listeners_per_client",
            "BIND listeners: limit of 2 per client reached",
            id="bind",
        ),
    ],
)
def test_the_request_beyond_the_per_client_limit_gets_general_failure_and_slots_come_back(
    start_server,
    settled_active_sessions,
    command: Command,
    destination: Address,
    setting: str,
    outcome: str,
) -> None:
    server = start_server(limits={setting: 2}, udp={"address": CLIENT}, bind={"address": CLIENT})
    for round_number in range(1, 3):
        with ExitStack() as held:
            for _ in range(2):
                control, reply = open_request(server, command, destination)
                held.enter_context(control)
                assert reply.reply == Reply.SUCCEEDED

            extra, reply = open_request(server, command, destination)
            with extra:
                assert reply.reply == Reply.GENERAL_FAILURE
                assert read_until_eof(extra) == b""
            record = server.wait_records(4 * (round_number - 1) + 1)[-1]
            assert record["outcome"] == outcome
            assert record["reply"] == "general_failure"

            # Another client IP has slots of its own.
            control, reply = open_request(server, command, destination, source=OTHER_CLIENT)
            held.enter_context(control)
            assert reply.reply == Reply.SUCCEEDED
        # Every control connection closed: all slots free, the same number fits again.
        server.wait_records(4 * round_number)
    assert not refused(server)
    assert settled_active_sessions(server) == 0


# --- password guessing --------------------------------------------------------------------------

GUESSING_LIMITS = {
    "auth_failure_delay": 0.05,
    "auth_max_delay": 0.4,
    "auth_failures_before_block": 4,
    "auth_block_time": 60,
}
BLOCKED = "blocked after repeated failed logins"


def start_login(server, source: str = CLIENT) -> socket.socket:
    """A connection that offered username/password and had it selected."""
    sock = connect_from(server, source)
    try:
        greet(sock, USERPASS)
    except BaseException:
        sock.close()
        raise
    return sock


def send_login(sock: socket.socket, username: str, password: str) -> int:
    """Send RFC 1929 credentials; returns STATUS (after a failure, the server closes)."""
    sock.sendall(userpass_bytes(username, password))
    version, status = recv_exactly(sock, 2)
    assert version == USERPASS_VERSION
    if status != LOGIN_SUCCESS:
        assert read_until_eof(sock) == b""
    return status


def log_in(server, password: str, source: str = CLIENT) -> int:
    with start_login(server, source) as sock:
        return send_login(sock, "alice", password)


def failure_outcome(delay: str) -> str:
    return f"auth failed: wrong username or password for 'alice' (answered after {delay} s)"


def test_failed_logins_are_answered_ever_later_then_the_ip_is_blocked_but_not_others(
    start_server, listener: socket.socket, sockets: ExitStack
) -> None:
    server = start_server(users={"alice": "secret"}, limits=GUESSING_LIMITS)
    for count, delay in enumerate(["0.05", "0.1", "0.2"], start=1):
        assert log_in(server, "guess") != LOGIN_SUCCESS
        # The server's own statement of how long it held the answer back.
        assert server.wait_records(count)[-1]["outcome"] == failure_outcome(delay)
    assert not refused(server)

    assert log_in(server, "guess") != LOGIN_SUCCESS  # the 4th: the IP is blocked from now on
    assert server.wait_records(4)[-1]["outcome"].startswith("auth failed: wrong username")
    assert_refused_before_greeting(sockets.enter_context(connect_from(server)))
    assert_refused_before_greeting(sockets.enter_context(connect_from(server)))
    assert refused(server) == {BLOCKED: 2}

    # Meanwhile 127.0.0.2 logs in and is served.
    with start_login(server, OTHER_CLIENT) as sock:
        assert send_login(sock, "alice", "secret") == LOGIN_SUCCESS
        sock.sendall(request_bytes(Command.CONNECT, loopback_address(listener)))
        assert read_reply(sock)[0].reply == Reply.SUCCEEDED
        with listener.accept()[0] as destination:
            sock.sendall(b"ping")
            assert recv_exactly(destination, 4) == b"ping"
    assert server.wait_records(5)[-1]["user"] == "alice"
    assert refused(server) == {BLOCKED: 2}


def test_the_delay_doubles_up_to_auth_max_delay(start_server) -> None:
    server = start_server(
        users={"alice": "secret"},
        limits={**GUESSING_LIMITS, "auth_failures_before_block": 10},
    )
    delays = ["0.05", "0.1", "0.2", "0.4", "0.4"]
    for _ in delays:
        assert log_in(server, "guess") != LOGIN_SUCCESS
    outcomes = [record["outcome"] for record in server.wait_records(len(delays))]
    assert outcomes == [failure_outcome(delay) for delay in delays]


def test_a_successful_login_resets_the_failure_count(start_server, sockets: ExitStack) -> None:
    server = start_server(users={"alice": "secret"}, limits=GUESSING_LIMITS)
    assert log_in(server, "guess") != LOGIN_SUCCESS
    assert log_in(server, "guess") != LOGIN_SUCCESS
    assert log_in(server, "secret") == LOGIN_SUCCESS
    # Counting starts over: three more failures make 5 in all, yet no block and delays anew.
    for _ in range(3):
        assert log_in(server, "guess") != LOGIN_SUCCESS
    outcomes = [record["outcome"] for record in server.wait_records(6)]
    assert outcomes[:2] == [failure_outcome("0.05"), failure_outcome("0.1")]
    assert outcomes[3:] == [failure_outcome(d) for d in ["0.05", "0.1", "0.2"]]
    sockets.enter_context(start_login(server))  # not blocked
    assert not refused(server)


def test_the_failure_that_blocks_is_answered_after_the_documented_delay(start_server) -> None:
    server = start_server(users={"alice": "secret"}, limits=GUESSING_LIMITS)
    for _ in range(4):
        assert log_in(server, "guess") != LOGIN_SUCCESS
    assert server.wait_records(4)[-1]["outcome"] == failure_outcome("0.4")


def test_a_blocked_ip_cannot_log_in_on_a_connection_opened_before_the_block(
    start_server,
) -> None:
    server = start_server(users={"alice": "secret"}, limits=GUESSING_LIMITS)
    with ExitStack() as stack:
        early = [stack.enter_context(start_login(server)) for _ in range(5)]
        for sock in early[:4]:
            assert send_login(sock, "alice", "guess") != LOGIN_SUCCESS
        assert server.wait_records(4)
        with connect_from(server) as late:
            assert_refused_before_greeting(late)  # blocked now
        assert send_login(early[4], "alice", "secret") != LOGIN_SUCCESS
