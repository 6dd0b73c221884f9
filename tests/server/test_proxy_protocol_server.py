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
    recv_exactly,
    request_bytes,
)

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
