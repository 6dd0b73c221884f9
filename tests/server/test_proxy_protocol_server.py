"""PROXY protocol headers at the server: from a `[proxy_protocol] from` source the header is
required and its source address is the client everywhere (rules, limits, throttle, UDP, log,
`/sessions`); from any other source a header is refused. Bad, truncated, stalled headers are
closed with a log line; a v2 LOCAL health check is closed without a session.

The balancer is this test, on 127.0.0.1; the clients it names are other addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest

from conftest import RunningServer
from socks5d.proto import Address, AuthMethod, Command, Reply
from socks5d.proto.proxy_protocol import encode_v1, encode_v2

from .logins import connect_from
from .raw_client import (
    greeting_bytes,
    loopback_address,
    read_reply,
    read_until_eof,
    receive_relayed,
    recv_exactly,
    request_bytes,
    udp_packet,
    udp_socket,
    userpass_bytes,
)
from .scrape import on_loop

BALANCER = "127.0.0.1"
TRUSTED = {"proxy_protocol": {"from": [BALANCER]}}
NO_AUTH = AuthMethod.NO_AUTHENTICATION_REQUIRED
pytestmark = pytest.mark.timeout(30)


def header(version: int, client: str, server: RunningServer, **extra: Any) -> bytes:
    source = Address(ipaddress.ip_address(client), 40000)
    host = ipaddress.ip_address(client)
    balancer = ipaddress.ip_address(server.host if host.version == 4 else "::1")
    destination = Address(balancer, server.port)
    if version == 1:
        return encode_v1(source, destination)
    return encode_v2(source, destination, **extra)


def proxied(server: RunningServer, client: str, version: int = 2, **extra: Any) -> socket.socket:
    """A connection from the balancer that sent the header naming `client`."""
    sock = connect_from(server, BALANCER)
    sock.sendall(header(version, client, server, **extra))
    return sock


def connect_through(sock: socket.socket, destination: Address) -> Reply:
    sock.sendall(greeting_bytes(NO_AUTH))
    assert recv_exactly(sock, 2) == bytes([5, NO_AUTH])
    sock.sendall(request_bytes(Command.CONNECT, destination))
    return read_reply(sock)[0].reply


@pytest.mark.parametrize("version", [1, 2])
def test_the_header_names_the_client_in_the_log(
    start_server: Callable[..., RunningServer], destination: socket.socket, version: int
) -> None:
    server = start_server(**TRUSTED)
    with (
        proxied(server, "192.0.2.7", version, unique_id=b"req-1")
        if version == 2
        else proxied(server, "192.0.2.7", version) as sock
    ):
        assert connect_through(sock, loopback_address(destination)) == Reply.SUCCEEDED
        peer, _ = destination.accept()
        with peer:
            sock.sendall(b"ping")
            assert recv_exactly(peer, 4) == b"ping"
    (record,) = server.wait_records(1)
    assert record["client"] == "192.0.2.7:40000"
    assert record["via"].startswith(f"{BALANCER}:")
    assert record["unique_id"] == ("req-1" if version == 2 else None)
    assert record["reply"] == "succeeded"


def test_header_greeting_and_request_in_one_segment(
    start_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    """ "the header and the SOCKS greeting may arrive in one segment": nothing after the
    header is lost."""
    server = start_server(**TRUSTED)
    target = loopback_address(destination)
    with connect_from(server, BALANCER) as sock:
        sock.sendall(
            header(2, "2001:db8::7", server)
            + greeting_bytes(NO_AUTH)
            + request_bytes(Command.CONNECT, target)
            + b"early"
        )
        assert recv_exactly(sock, 2) == bytes([5, NO_AUTH])
        assert read_reply(sock)[0].reply == Reply.SUCCEEDED
        peer, _ = destination.accept()
        with peer:
            assert recv_exactly(peer, 5) == b"early"
    assert server.wait_records(1)[0]["client"] == "[2001:db8::7]:40000"


def test_a_header_byte_by_byte(
    start_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    server = start_server(**TRUSTED)
    with connect_from(server, BALANCER) as sock:
        for octet in header(1, "192.0.2.8", server):
            sock.sendall(bytes([octet]))
        assert connect_through(sock, loopback_address(destination)) == Reply.SUCCEEDED
        destination.accept()[0].close()
    assert server.wait_records(1)[0]["client"] == "192.0.2.8:40000"


def test_a_header_from_an_untrusted_source_is_refused(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone could name any address: only `[proxy_protocol] from` may send a header."""
    server = start_server(proxy_protocol={"from": ["127.0.0.99"]})
    with caplog.at_level(logging.WARNING), connect_from(server, BALANCER) as sock:
        sock.sendall(header(2, "192.0.2.7", server) + greeting_bytes(NO_AUTH))
        assert read_until_eof(sock) == b""  # no method selection: the header was no greeting
        (record,) = server.wait_records(1)
    assert record["client"].startswith(f"{BALANCER}:")
    assert record["outcome"] == "PROXY header from an untrusted source"
    assert "PROXY header from an untrusted source" in caplog.text


def test_a_v1_header_from_an_untrusted_source_is_refused(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server()  # no [proxy_protocol] at all
    with connect_from(server, BALANCER) as sock:
        sock.sendall(header(1, "192.0.2.7", server))
        assert read_until_eof(sock) == b""
    assert server.wait_records(1)[0]["outcome"] == "PROXY header from an untrusted source"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(greeting_bytes(NO_AUTH), id="socks-greeting-without-header"),
        pytest.param(b"PROXY TCP4 192.0.2.010 127.0.0.1 1 2\r\n", id="malformed-v1"),
        pytest.param(b"\r\n\r\n\x00\r\nQUIT\n\x2f\x11\x00\x00", id="bad-v2-command"),
        pytest.param(b"PROXY TCP4 192.0.2.1", id="truncated-then-eof"),
        pytest.param(b"PROXY " + b"x" * 200, id="oversized-v1"),
        pytest.param(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x01\x00" + bytes(256), id="oversized-v2"),
    ],
)
def test_a_trusted_source_without_a_valid_header_is_closed(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture, data: bytes
) -> None:
    """ "The receiver MUST be configured to only receive the protocol described in this
    specification and MUST not try to guess whether the protocol header is present"."""
    server = start_server(**TRUSTED)
    with caplog.at_level(logging.WARNING), connect_from(server, BALANCER) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b""  # the warning is written before the close
    assert server.records == []  # no session was served
    assert f"refused {BALANCER}:" in caplog.text
    assert "bad PROXY header" in caplog.text


def test_a_connection_closed_before_any_byte_is_no_warning(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A balancer's TCP health check connects and closes: not worth a warning each time."""
    server = start_server(**TRUSTED)
    with caplog.at_level(logging.DEBUG), connect_from(server, BALANCER) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b""
    assert "closed before its PROXY header" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert server.records == []


def greet_userpass(sock: socket.socket, password: str) -> int:
    """Offer username/password as alice; the RFC 1929 STATUS."""
    sock.sendall(greeting_bytes(AuthMethod.USERNAME_PASSWORD))
    assert recv_exactly(sock, 2) == bytes([5, AuthMethod.USERNAME_PASSWORD])
    sock.sendall(userpass_bytes("alice", password))
    return recv_exactly(sock, 2)[1]


def test_client_rules_see_the_header_address(
    start_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    server = start_server(
        client=[{"action": "block", "from": ["192.0.2.0/24"]}],
        **TRUSTED,
    )
    with proxied(server, "192.0.2.7") as sock:  # the balancer (127.0.0.1) is not blocked
        assert read_until_eof(sock) == b""
    with proxied(server, "198.51.100.7") as sock:
        assert connect_through(sock, loopback_address(destination)) == Reply.SUCCEEDED
        destination.accept()[0].close()
    (record,) = server.wait_records(1)
    assert record["client"] == "198.51.100.7:40000"


def test_socks_rules_see_the_header_address(
    start_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    server = start_server(
        socks=[{"action": "pass", "from": ["198.51.100.0/24"]}],
        rules={"socks_default": "block"},
        **TRUSTED,
    )
    with proxied(server, "192.0.2.7") as sock:
        assert connect_through(sock, loopback_address(destination)) == Reply.CONNECTION_NOT_ALLOWED
    with proxied(server, "198.51.100.7") as sock:
        assert connect_through(sock, loopback_address(destination)) == Reply.SUCCEEDED
        destination.accept()[0].close()


def test_per_client_limits_count_the_header_address(
    start_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    """One client at its limit does not cap everyone else behind the same balancer."""
    server = start_server(limits={"max_sessions_per_client": 1}, **TRUSTED)
    target = loopback_address(destination)
    with proxied(server, "192.0.2.7") as first:
        assert connect_through(first, target) == Reply.SUCCEEDED
        with destination.accept()[0]:
            with proxied(server, "192.0.2.7") as second:
                assert read_until_eof(second) == b""  # refused: the same client
            with proxied(server, "192.0.2.8") as other:
                assert connect_through(other, target) == Reply.SUCCEEDED
                destination.accept()[0].close()


def test_the_login_throttle_blocks_only_the_guessing_client(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(
        users={"alice": "right"}, limits={"auth_failures_before_block": 2}, **TRUSTED
    )
    for _ in range(2):
        with proxied(server, "192.0.2.66") as sock:
            assert greet_userpass(sock, "wrong") != 0
    with proxied(server, "192.0.2.66") as sock:  # blocked: closed before the greeting
        assert read_until_eof(sock) == b""
    with proxied(server, "192.0.2.67") as sock:  # another client behind the same balancer
        assert greet_userpass(sock, "right") == 0


def test_udp_expects_datagrams_from_the_header_address(
    start_server: Callable[..., RunningServer],
) -> None:
    """The association is the client's, not the balancer's: datagrams come straight from the
    client (127.0.0.21 here), and those are relayed both ways; the balancer's are not."""
    server = start_server(**TRUSTED)
    with (
        udp_socket("127.0.0.21") as client,
        udp_socket("127.0.0.1") as balancer_udp,
        udp_socket("127.0.0.1") as echo,
        proxied(server, "127.0.0.21") as control,
    ):
        control.sendall(greeting_bytes(NO_AUTH))
        assert recv_exactly(control, 2) == bytes([5, NO_AUTH])
        any_address = Address(ipaddress.IPv4Address(0), 0)
        control.sendall(request_bytes(Command.UDP_ASSOCIATE, any_address))
        reply, _ = read_reply(control)
        assert reply.reply == Reply.SUCCEEDED
        relay = (str(reply.bound.host), reply.bound.port)
        target = loopback_address(echo)
        balancer_udp.sendto(udp_packet(target, b"from the balancer"), relay)
        client.sendto(udp_packet(target, b"from the client"), relay)
        data, sender = echo.recvfrom(0x10000)
        assert data == b"from the client"  # the balancer's datagram was dropped before it
        echo.sendto(b"answer", sender)
        answer = receive_relayed(client)
        assert answer.data == b"answer"
        assert answer.destination == target


def test_a_local_health_check_is_closed_without_a_session(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(**TRUSTED)
    with caplog.at_level(logging.DEBUG), connect_from(server, BALANCER) as sock:
        sock.sendall(encode_v2(None, None, local=True))
        assert read_until_eof(sock) == b""
    assert "PROXY LOCAL" in caplog.text
    assert server.records == []


def test_a_header_without_an_address_keeps_the_balancer_as_client(
    start_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    """v1 UNKNOWN: "SHOULD accept the connection and use the real connection's parameters"."""
    server = start_server(**TRUSTED)
    with connect_from(server, BALANCER) as sock:
        sock.sendall(b"PROXY UNKNOWN\r\n")
        assert connect_through(sock, loopback_address(destination)) == Reply.SUCCEEDED
        destination.accept()[0].close()
    (record,) = server.wait_records(1)
    assert record["client"].startswith(f"{BALANCER}:")
    assert record["via"].startswith(f"{BALANCER}:")


@pytest.mark.parametrize("sent", [b"", b"PROXY TCP4 ", b"header"], ids=["nothing", "half", "all"])
def test_the_handshake_timeout_covers_the_header(
    start_server: Callable[..., RunningServer], sent: bytes
) -> None:
    """A balancer (or whoever spoofs one) that stalls in the header, or after it, is closed
    when the handshake timeout counted from the accept passes."""
    server = start_server(timeouts={"handshake": 0.3}, **TRUSTED)
    with connect_from(server, BALANCER) as sock:
        sock.sendall(header(2, "192.0.2.7", server) if sent == b"header" else sent)
        assert read_until_eof(sock) == b""
    if sent == b"header":
        assert server.wait_records(1)[0]["outcome"] == "handshake timeout"


def test_connections_waiting_for_a_header_hold_handshakes_in_all(
    start_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    """Before its header no client is known: the connection counts against max_handshakes
    only, so a balancer's many connections are not one client's."""
    server = start_server(limits={"max_handshakes": 2, "max_handshakes_per_client": 1}, **TRUSTED)
    with connect_from(server, BALANCER) as one, connect_from(server, BALANCER) as two:
        with connect_from(server, BALANCER) as third:
            assert read_until_eof(third) == b""  # both handshakes are held
        for sock, client in ((one, "192.0.2.1"), (two, "192.0.2.2")):
            sock.sendall(header(2, client, server))
            assert connect_through(sock, loopback_address(destination)) == Reply.SUCCEEDED
            destination.accept()[0].close()


def test_sessions_and_metrics_show_the_balancer(
    start_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    server = start_server(**TRUSTED)
    with proxied(server, "192.0.2.7") as sock:
        assert connect_through(sock, loopback_address(destination)) == Reply.SUCCEEDED
        with destination.accept()[0]:
            (listed,) = on_loop(server, lambda: server.server.session_list(10))
            assert listed["client"] == "192.0.2.7:40000"
            assert listed["via"].startswith(f"{BALANCER}:")
    with connect_from(server, BALANCER) as sock:
        sock.sendall(b"garbage\r\n")
        assert read_until_eof(sock) == b""
    snapshot = on_loop(server, server.server.metrics_snapshot)
    counters = {
        labels["result"]: value
        for labels, value in snapshot["counters"]["socks5d_proxy_headers_total"]
    }
    assert counters == {"proxied": 1, "invalid": 1}
