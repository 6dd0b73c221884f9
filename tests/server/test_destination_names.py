"""Destination names are judged, resolved and logged in one canonical form (`socks5d.names`).

The attacks these tests repeat: rules compared the raw DST.ADDR while `getaddrinfo` stops at
the first NUL and IDNA-maps the rest, so `127.0.0.1\\x00.example.com` passed an allow-list of
`.example.com` and reached 127.0.0.1, and fullwidth or zero-width spellings of `localhost`
slipped past a block of `localhost`. Each test runs on both event loops (uvloop's resolver is
another implementation of the same mapping).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from socks5d.proto import Address, Command, DomainName, Reply, Socks4Reply, UdpDatagram
from socks5d.server.accesslog import TextFormatter
from socks5d.server.connect import Target, system_resolver

from .raw_client import (
    connect,
    echo_once,
    open_request,
    read_socks4_reply,
    read_until_eof,
    receive_relayed,
    socks4_request_bytes,
    udp_packet,
    udp_socket,
)
from .test_access_rules import ANYONE, assert_nothing_reached, echo, udp_address

__all__ = ["echo"]  # a fixture, used by name

EVENT_LOOPS = pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
NUL_NAME = "127.0.0.1\x00.example.com"
#: What a block of "localhost" must also block: each maps to "localhost" in the resolver.
LOCALHOST_SPELLINGS = [
    "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",  # fullwidth
    "local\u00adhost",  # soft hyphen
    "localhost\u200b",  # zero width space
    "\u2113ocalhost",  # U+2113 script small l
    "L\uff2fCALHOST",  # a fullwidth capital O
    "LocalHost.",
]
ALLOW_EXAMPLE_COM = {
    "rules": {"socks_default": "block"},
    "socks": [{"action": "pass", "to": [".example.com"]}],
}


def named(name: str, port: int) -> Address:
    return Address(DomainName(name), port)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """The service on 127.0.0.1 the attacker wants to reach."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(5)
        yield sock


@EVENT_LOOPS
def test_nul_in_a_name_is_refused_host_unreachable_before_any_lookup(
    start_server, listener, event_loop
) -> None:
    port = listener.getsockname()[1]
    server = start_server(event_loop=event_loop, **ALLOW_EXAMPLE_COM)
    client, reply = open_request(server, Command.CONNECT, named(NUL_NAME, port))
    with client:
        assert reply.reply == Reply.HOST_UNREACHABLE
        assert read_until_eof(client) == b""
    assert_nothing_reached(listener)
    record = server.wait_records(1)[0]
    assert record["outcome"] == "bad destination name"
    assert record["raw_destination"] == "127.0.0.1\\x00.example.com"
    assert record["destination"] is None


@EVENT_LOOPS
@pytest.mark.parametrize("spelling", LOCALHOST_SPELLINGS[:2])
def test_a_socks4a_name_is_judged_in_canonical_form(
    start_server, listener, event_loop, spelling
) -> None:
    # SOCKS4a ends the name at its NUL ("followed by another NULL"): no NUL inside, but the
    # same mapping.
    port = listener.getsockname()[1]
    server = start_server(event_loop=event_loop, socks=[{"action": "block", "to": ["localhost"]}])
    with connect(server) as client:
        client.sendall(socks4_request_bytes(Command.CONNECT, named(spelling, port)))
        assert read_socks4_reply(client).status == Socks4Reply.REJECTED
        assert read_until_eof(client) == b""
    assert_nothing_reached(listener)
    record = server.wait_records(1)[0]
    assert (record["protocol"], record["rule"]) == ("socks4a", "socks[0]")
    assert record["destination"] == f"localhost:{port}"


def test_a_bad_socks4a_name_is_rejected(start_server) -> None:
    server = start_server()
    with connect(server) as client:
        client.sendall(socks4_request_bytes(Command.CONNECT, named("a..example.com", 80)))
        assert read_socks4_reply(client).status == Socks4Reply.REJECTED
    record = server.wait_records(1)[0]
    assert (record["protocol"], record["outcome"]) == ("socks4a", "bad destination name")


@EVENT_LOOPS
def test_nul_in_a_udp_datagram_name_is_dropped(
    start_server_with_resolver, echo, event_loop
) -> None:
    echo_port = echo.getsockname()[1]
    delivered_to_attacker: list[str] = []

    async def resolver(name: DomainName, port: int) -> list[Target]:
        if name == "echo.example.com":
            return [(socket.AF_INET, ("127.0.0.1", port))]
        delivered_to_attacker.append(name)
        return await system_resolver(name, port)  # what resolves the attacker's name

    server = start_server_with_resolver(resolver, event_loop, **ALLOW_EXAMPLE_COM)
    control, reply = open_request(server, Command.UDP_ASSOCIATE, ANYONE)
    with control, udp_socket() as client:
        relay = (control.getpeername()[0], reply.bound.port)
        client.sendto(udp_packet(named(NUL_NAME, echo_port), b"attack"), relay)
        client.sendto(udp_packet(named("echo.example.com", echo_port), b"allowed"), relay)
        data, _ = echo_once(echo)
        assert data == b"allowed"  # the first datagram never reached 127.0.0.1
        assert receive_relayed(client) == UdpDatagram(udp_address(echo), b"allowed")
    assert delivered_to_attacker == []
    assert server.wait_records(1)[0]["dropped"] == 1


@EVENT_LOOPS
@pytest.mark.parametrize("spelling", LOCALHOST_SPELLINGS)
def test_every_spelling_of_a_blocked_name_is_blocked(
    start_server, listener, event_loop, spelling
) -> None:
    port = listener.getsockname()[1]
    server = start_server(event_loop=event_loop, socks=[{"action": "block", "to": ["localhost"]}])
    client, reply = open_request(server, Command.CONNECT, named(spelling, port))
    with client:
        assert reply.reply == Reply.CONNECTION_NOT_ALLOWED
    assert_nothing_reached(listener)
    record = server.wait_records(1)[0]
    assert (record["destination"], record["rule"]) == (f"localhost:{port}", "socks[0]")
    assert record["raw_destination"] == "".join(
        chr(b) if 0x21 <= b <= 0x7E else f"\\x{b:02x}" for b in spelling.encode()
    )


@EVENT_LOOPS
def test_the_canonical_name_is_what_gets_resolved_and_logged(
    start_server_with_resolver, listener, event_loop
) -> None:
    asked: list[str] = []

    async def resolver(name: DomainName, port: int) -> list[Target]:
        asked.append(name)
        return [(socket.AF_INET, ("127.0.0.1", port))]

    port = listener.getsockname()[1]
    server = start_server_with_resolver(resolver, event_loop)
    client, reply = open_request(server, Command.CONNECT, named("B\u00fccher.Example.", port))
    with client:
        assert reply.reply == Reply.SUCCEEDED
        listener.accept()[0].close()
    assert asked == ["xn--bcher-kva.example"]
    record = server.wait_records(1)[0]
    assert record["destination"] == f"xn--bcher-kva.example:{port}"
    assert record["raw_destination"] == "B\\xc3\\xbccher.Example."


def test_a_name_already_canonical_logs_no_raw_destination(start_server, listener) -> None:
    port = listener.getsockname()[1]
    server = start_server()
    client, reply = open_request(server, Command.CONNECT, named("localhost", port))
    with client:
        assert reply.reply == Reply.SUCCEEDED
        listener.accept()[0].close()
    record = server.wait_records(1)[0]
    assert (record["destination"], record["raw_destination"]) == (f"localhost:{port}", None)


@pytest.mark.parametrize(
    "name",
    ["a..example.com", "x" * 64 + ".example.com", "exa\tmple.com", "\udcff.example.com", "."],
)
def test_names_that_are_no_host_names_are_host_unreachable(start_server, name) -> None:
    server = start_server()
    client, reply = open_request(server, Command.CONNECT, named(name, 80))
    with client:
        assert reply.reply == Reply.HOST_UNREACHABLE
    assert server.wait_records(1)[0]["outcome"] == "bad destination name"


def test_bind_to_a_bad_name_is_refused_without_a_listener(start_server) -> None:
    server = start_server()
    client, reply = open_request(server, Command.BIND, named(NUL_NAME, 0))
    with client:
        assert reply.reply == Reply.HOST_UNREACHABLE
    record = server.wait_records(1)[0]
    assert (record["command"], record["outcome"]) == ("bind", "bad destination name")


@pytest.mark.parametrize("number", ["2130706433", "0x7f.1", "127.1", "\uff11\uff12\uff17.1"])
def test_a_name_the_resolver_reads_as_a_number_is_checked_as_that_address(
    start_server, listener, number
) -> None:
    port = listener.getsockname()[1]
    server = start_server(socks=[{"action": "block", "to": ["127.0.0.0/8"]}])
    client, reply = open_request(server, Command.CONNECT, named(number, port))
    with client:
        assert reply.reply == Reply.CONNECTION_NOT_ALLOWED
    assert_nothing_reached(listener)
    assert server.wait_records(1)[0]["rule"] == "socks[0]"


def test_debug_lines_escape_a_destination_name_sent_in_a_udp_datagram(start_server, echo) -> None:
    """A name with a line break must not forge a log line at debug level."""
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.setFormatter(TextFormatter())
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    logger = logging.getLogger("socks5d")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        server = start_server()
        forged = "x\n2026-01-01T00:00:00.000Z INFO socks5d.access session forged=1\r\x1b[2J"
        control, reply = open_request(server, Command.UDP_ASSOCIATE, ANYONE)
        with control, udp_socket() as client:
            relay = (control.getpeername()[0], reply.bound.port)
            client.sendto(udp_packet(named(forged, 9), b"data"), relay)
            client.sendto(udp_packet(udp_address(echo), b"after"), relay)  # handled in order
            assert echo_once(echo)[0] == b"after"
            assert receive_relayed(client).data == b"after"
        server.wait_records(1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    dropped = [line for line in lines if "dropped" in line and "forged" in line]
    assert dropped, lines
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
