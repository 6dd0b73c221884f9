"""[limits]: sessions, handshakes, UDP associations and BIND listeners, in all and per client
(an IP, or with `client_prefix_v4` / `client_prefix_v6` a network). The password-guessing
throttle is tested in test_login_throttle.py.

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

from .logins import CLIENT, connect_from, greet
from .raw_client import (
    loopback_address,
    open_request,
    open_tunnel,
    read_reply,
    read_until_eof,
    recv_exactly,
    request_bytes,
)

OTHER_CLIENT = "127.0.0.2"
NO_AUTH = AuthMethod.NO_AUTHENTICATION_REQUIRED
#: VER alone: a greeting cut after its first octet.
HALF_GREETING = bytes([SOCKS5_VERSION])
#: UDP ASSOCIATE's DST.ADDR/DST.PORT when the client does not know its own port yet.
UNKNOWN = Address.from_host("0.0.0.0", 0)
#: BIND's DST.ADDR: the loopback peer that is expected (and never comes).
LOOPBACK_PEER = Address.from_host("127.0.0.1", 0)


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    """Closes whatever the test registers, at the latest at teardown."""
    with ExitStack() as stack:
        yield stack


def assert_refused_before_greeting(sock: socket.socket) -> None:
    """The server closed the connection without sending a single octet."""
    assert read_until_eof(sock) == b""


def admitted(server, stack: ExitStack, source: str = CLIENT) -> socket.socket:
    """A connection the server took: its greeting is answered."""
    sock = stack.enter_context(connect_from(server, source))
    greet(sock, NO_AUTH)
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


# --- per client network ------------------------------------------------------------------------


def test_clients_of_one_prefix_share_their_per_client_limit(
    start_server, sockets: ExitStack
) -> None:
    server = start_server(limits={"client_prefix_v4": 24, "max_sessions_per_client": 1})
    admitted(server, sockets, "127.0.0.2")
    # 127.0.0.3 is in the same /24: the one session slot is taken.
    assert_refused_before_greeting(sockets.enter_context(connect_from(server, "127.0.0.3")))
    assert refused(server) == {"sessions: limit of 1 per client reached": 1}
    admitted(server, sockets, "127.0.1.2")  # another /24
