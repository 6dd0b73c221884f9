"""Addresses that name this host or a peer in another spelling are judged as what they reach.

The attacks these tests repeat: CONNECT to 0.0.0.0, :: or ::ffff:0.0.0.0 reaches this host on
Linux and passed a block of loopback; BIND naming ::ffff:127.0.0.1 turned away the genuine peer
127.0.0.1; BIND to a name under `block_private_destinations` got a listener, its addresses never
checked.
"""

from __future__ import annotations

import socket

import pytest

from socks5d.proto import Address, Command, CommandReply, DomainName, Reply
from socks5d.server.connect import Target

from .raw_client import open_request, read_reply, read_until_eof, recv_exactly
from .test_access_rules import assert_nothing_reached, connect_peer, no_host_name_lookup

__all__ = ["no_host_name_lookup"]  # a fixture, used by name

BLOCK_LOOPBACK = {"socks": [{"action": "block", "to": ["127.0.0.0/8", "::1"]}]}


def loopback_listener(host: str) -> socket.socket:
    """The service an unspecified address reaches: on 127.0.0.1 for 0.0.0.0, on ::1 for ::."""
    sock = socket.create_server(
        (host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET
    )
    sock.settimeout(5)
    return sock


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(
    ("unspecified", "reached"),
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("::ffff:0.0.0.0", "127.0.0.1")],
)
def test_connect_to_an_unspecified_address_is_blocked_by_a_loopback_block(
    start_server, unspecified, reached, event_loop
) -> None:
    with loopback_listener(reached) as service:
        port = service.getsockname()[1]
        server = start_server(event_loop=event_loop, **BLOCK_LOOPBACK)
        destination = Address.from_host(unspecified, port)
        client, reply = open_request(server, Command.CONNECT, destination)
        with client:
            assert reply == CommandReply(Reply.CONNECTION_NOT_ALLOWED)
            assert read_until_eof(client) == b""
        assert_nothing_reached(service)
    assert server.wait_records(1)[0]["rule"] == "socks[0]"


def test_connect_to_a_name_resolving_to_an_unspecified_address_is_blocked(
    start_server_with_resolver,
) -> None:
    async def to_zero(name: DomainName, port: int) -> list[Target]:
        return [(socket.AF_INET, ("0.0.0.0", port))]

    with loopback_listener("127.0.0.1") as service:
        port = service.getsockname()[1]
        server = start_server_with_resolver(to_zero, **BLOCK_LOOPBACK)
        destination = Address(DomainName("zero.test"), port)
        client, reply = open_request(server, Command.CONNECT, destination)
        with client:
            assert reply == CommandReply(Reply.CONNECTION_NOT_ALLOWED)
        assert_nothing_reached(service)


def test_bind_naming_the_ipv4_mapped_peer_accepts_that_peer(start_server) -> None:
    server = start_server(bind={"timeout": 5})
    client, first = open_request(server, Command.BIND, Address.from_host("::ffff:127.0.0.1", 0))
    with client:
        assert first.reply == Reply.SUCCEEDED
        with connect_peer(first.bound, "127.0.0.1") as peer:
            second, _ = read_reply(client)
            assert second == CommandReply(Reply.SUCCEEDED, Address.from_host(*peer.getsockname()))
            peer.sendall(b"hello")
            assert recv_exactly(client, 5) == b"hello"
    assert server.wait_records(1)[0]["reply"] == "succeeded"


def test_bind_to_a_name_of_a_private_address_is_refused_before_listening(
    start_server, no_host_name_lookup
) -> None:
    server = start_server(rules={"block_private_destinations": True})
    client, reply = open_request(server, Command.BIND, Address(DomainName("localhost"), 0))
    with client:
        assert reply == CommandReply(Reply.CONNECTION_NOT_ALLOWED)  # no first reply X'00'
        assert read_until_eof(client) == b""
    record = server.wait_records(1)[0]
    assert (record["command"], record["rule"]) == ("bind", "block_private_destinations")
