"""The relay remembers the headers of datagrams it checked and relayed (an address literal,
FRAG X'00', allowed by the rules) and sends the next datagram with the same header without
parsing it. What must not change: every datagram is relayed and counted, a blocked address
stays blocked, a header that differs in any byte (FRAG, RSV, the port) is judged afresh, and
answers keep their header.

Drops are proven as in tests/server/test_udp.py: the datagram that must be dropped goes first,
one that must pass goes after it, and the first to arrive must be that one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from socks5d.proto import Address, Command, UdpDatagram

from .raw_client import echo_once, open_request, receive_relayed, udp_packet, udp_socket

pytestmark = pytest.mark.timeout(30)

UNKNOWN = Address.from_host("0.0.0.0", 0)
OTHER_HOST = "127.0.0.2"
#: Datagrams to one destination: all but the first take the remembered header.
REPEATS = 50


def address_of(sock: socket.socket) -> Address:
    host, port = sock.getsockname()[:2]
    return Address.from_host(host, port)


@pytest.fixture
def echo() -> Iterator[socket.socket]:
    with udp_socket() as sock:
        yield sock


@pytest.fixture
def client_udp() -> Iterator[socket.socket]:
    with udp_socket() as sock:
        yield sock


def test_every_datagram_to_one_destination_is_relayed_and_counted(
    socks_server, client_udp, echo
) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control:
        relay = (control.getpeername()[0], reply.bound.port)
        for number in range(REPEATS):
            data = b"datagram %d" % number
            client_udp.sendto(udp_packet(address_of(echo), data), relay)
            assert echo_once(echo)[0] == data
            assert receive_relayed(client_udp) == UdpDatagram(address_of(echo), data)
    record = socks_server.wait_records(1)[0]
    sent = sum(len(b"datagram %d" % number) for number in range(REPEATS))
    assert (record["bytes_up"], record["bytes_down"], record["dropped"]) == (sent, sent, 0)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda packet: packet[:2] + b"\x01" + packet[3:], id="frag"),
        pytest.param(lambda packet: b"\x00\x01" + packet[2:], id="rsv"),
    ],
)
def test_a_header_that_differs_after_a_relayed_one_is_judged_afresh(
    socks_server, client_udp, echo, variant
) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control:
        relay = (control.getpeername()[0], reply.bound.port)
        packet = udp_packet(address_of(echo), b"first")
        client_udp.sendto(packet, relay)
        assert echo_once(echo)[0] == b"first"
        receive_relayed(client_udp)
        client_udp.sendto(variant(udp_packet(address_of(echo), b"dropped")), relay)
        client_udp.sendto(udp_packet(address_of(echo), b"second"), relay)
        assert echo_once(echo)[0] == b"second"  # the variant did not go out before it
        receive_relayed(client_udp)
    record = socks_server.wait_records(1)[0]
    assert record["dropped"] == 1


def test_a_blocked_address_stays_blocked_beside_an_allowed_one(start_server, echo) -> None:
    server = start_server(socks=[{"action": "block", "to": [f"{OTHER_HOST}/32"]}])
    control, reply = open_request(server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, udp_socket() as client, udp_socket(OTHER_HOST) as blocked:
        relay = (control.getpeername()[0], reply.bound.port)
        for number in range(3):
            client.sendto(udp_packet(address_of(blocked), b"blocked"), relay)
            client.sendto(udp_packet(address_of(echo), b"allowed %d" % number), relay)
            assert echo_once(echo)[0] == b"allowed %d" % number
            receive_relayed(client)
        blocked.setblocking(False)
        with pytest.raises(BlockingIOError):
            blocked.recv(1024)
    record = server.wait_records(1)[0]
    assert record["dropped"] == 3
    assert record["rule"] == "socks[0]"


def test_another_port_of_a_remembered_host_is_a_destination_of_its_own(
    socks_server, client_udp
) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, udp_socket() as first, udp_socket() as second:
        relay = (control.getpeername()[0], reply.bound.port)
        for sock in (first, second, first, second):
            client_udp.sendto(udp_packet(address_of(sock), b"to %d" % sock.fileno()), relay)
            assert echo_once(sock)[0] == b"to %d" % sock.fileno()
            answer = receive_relayed(client_udp)
            assert answer.destination == address_of(sock)  # each answer names its own sender
