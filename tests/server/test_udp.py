"""UDP ASSOCIATE over loopback (RFC 1928 §6, §7): the reply, the relay, and what it drops.

The test thread plays every part: the client's UDP socket, and the echo servers (`echo_once`
answers exactly one datagram). Drops are proven without waiting for silence: the datagram that
must be dropped is sent first, a datagram that must pass is sent after it through the same relay
socket, and the first thing to arrive has to be the one that passes; the record's `dropped`
then counts what the relay threw away.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from socks5d.proto import Address, AddressType, Command, Reply, UdpDatagram
from socks5d.server.udprelay import MAX_DATAGRAM

from .raw_client import (
    IO_TIMEOUT,
    echo_once,
    open_request,
    read_until_eof,
    receive_relayed,
    udp_packet,
    udp_socket,
)

#: "If the client is not in possesion of the information at the time of the UDP ASSOCIATE,
#: the client MUST use a port number and address of all zeros."
UNKNOWN = Address.from_host("0.0.0.0", 0)
#: A second loopback address: a foreign host without leaving the machine.
OTHER_HOST = "127.0.0.2"
#: RFC 5737 TEST-NET-1: advertised, never sent to.
ADVERTISED = "192.0.2.10"
#: RSV, FRAG, ATYP and an IPv4 DST.ADDR/DST.PORT.
IPV4_HEADER_SIZE = 10


def address_of(sock: socket.socket) -> Address:
    """The SOCKS address of a socket's own end."""
    host, port = sock.getsockname()[:2]
    return Address.from_host(host, port)


def relay_of(client: socket.socket, bound: Address) -> tuple[str, int]:
    """Where to send datagrams: BND.PORT at the address the client reached the server on."""
    return client.getpeername()[0], bound.port


def assert_nothing_waiting(sock: socket.socket) -> None:
    """Nothing more was delivered to `sock` (checked after the traffic that would carry it)."""
    sock.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(0x10000)
    finally:
        sock.settimeout(IO_TIMEOUT)


@pytest.fixture
def echo() -> Iterator[socket.socket]:
    """A UDP echo server's socket on 127.0.0.1 (answer with `echo_once`)."""
    with udp_socket() as sock:
        yield sock


@pytest.fixture
def client_udp() -> Iterator[socket.socket]:
    """The client's UDP socket on 127.0.0.1."""
    with udp_socket() as sock:
        yield sock


def round_trip(
    client_udp: socket.socket,
    relay: tuple[str, int],
    echo: socket.socket,
    data: bytes,
    destination: Address | None = None,
) -> UdpDatagram:
    """Send `data` through the relay to `echo` (or to `destination`, which must lead to it),
    echo it, and return what the relay hands back to the client."""
    client_udp.sendto(udp_packet(destination or address_of(echo), data), relay)
    received, sender = echo_once(echo)
    assert received == data
    assert sender.port == relay[1]  # one relay socket per association, both ways
    return receive_relayed(client_udp)


@pytest.mark.parametrize(
    ("listen", "host"), [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")], ids=["ipv4", "ipv6"]
)
def test_reply_names_the_client_connections_local_address_and_a_working_udp_port(
    start_server, listen: str, host: str
) -> None:
    server = start_server(listen=[listen])
    control, reply = open_request(server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, udp_socket(host) as client, udp_socket(host) as echo_socket:
        assert reply.reply == Reply.SUCCEEDED
        assert str(reply.bound.host) not in ("0.0.0.0", "::")  # never a wildcard
        assert reply.bound == Address.from_host(control.getsockname()[0], reply.bound.port)
        assert reply.bound.port != 0
        relay = (str(reply.bound.host), reply.bound.port)
        answer = round_trip(client, relay, echo_socket, b"ping")
        assert answer == UdpDatagram(address_of(echo_socket), b"ping")
    record = server.wait_records(1)[0]
    assert (record["command"], record["reply"]) == ("udp_associate", "succeeded")


def test_advertise_address_changes_only_bnd_addr(start_server, client_udp, echo) -> None:
    server = start_server(udp={"advertise_address": ADVERTISED})
    control, reply = open_request(server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control:
        assert reply.reply == Reply.SUCCEEDED
        assert reply.bound.host == Address.from_host(ADVERTISED, 0).host
        # Never sent to the advertised address: the port is tried on the one we connected to.
        answer = round_trip(client_udp, relay_of(control, reply.bound), echo, b"still works")
        assert answer == UdpDatagram(address_of(echo), b"still works")


def test_datagram_to_a_domain_destination_is_resolved_and_answered_from_the_ip(
    socks_server, client_udp
) -> None:
    family, _, _, _, sockaddr = socket.getaddrinfo(
        "localhost", 0, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    if family != socket.AF_INET:
        pytest.skip(f"localhost resolves to {sockaddr[0]} first")
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, udp_socket(sockaddr[0]) as echo_socket:
        named = Address.from_host("localhost", address_of(echo_socket).port)
        relay = relay_of(control, reply.bound)
        for data in (b"by name", b"by cached name"):
            answer = round_trip(client_udp, relay, echo_socket, data, destination=named)
            assert answer == UdpDatagram(address_of(echo_socket), data)
            assert answer.destination.type == AddressType.IPV4


def test_datagram_of_the_largest_size_is_relayed_intact_both_ways(
    socks_server, client_udp, echo
) -> None:
    for sock in (client_udp, echo):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MAX_DATAGRAM)
    data = bytes(i % 253 for i in range(MAX_DATAGRAM - IPV4_HEADER_SIZE))
    assert len(udp_packet(address_of(echo), data)) == MAX_DATAGRAM
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control:
        answer = round_trip(client_udp, relay_of(control, reply.bound), echo, data)
        assert answer == UdpDatagram(address_of(echo), data)
    record = socks_server.wait_records(1)[0]
    assert (record["bytes_up"], record["bytes_down"], record["dropped"]) == (
        len(data),
        len(data),
        0,
    )


def test_named_client_port_lets_no_other_port_of_the_same_ip_through(
    socks_server, client_udp, echo
) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, address_of(client_udp))
    with control, udp_socket() as other_port:
        relay = relay_of(control, reply.bound)
        other_port.sendto(udp_packet(address_of(echo), b"not me"), relay)
        answer = round_trip(client_udp, relay, echo, b"me")  # the first datagram echo sees
        assert answer.data == b"me"
        other_port.sendto(udp_packet(address_of(echo), b"still not me"), relay)
        assert round_trip(client_udp, relay, echo, b"me again").data == b"me again"
        assert_nothing_waiting(other_port)
    record = socks_server.wait_records(1)[0]
    assert record["dropped"] == 2
    assert (record["bytes_up"], record["bytes_down"]) == (10, 10)


def test_all_zeros_request_locks_onto_the_first_datagrams_port(
    socks_server, client_udp, echo
) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, udp_socket() as second:
        relay = relay_of(control, reply.bound)
        assert round_trip(client_udp, relay, echo, b"first").data == b"first"
        second.sendto(udp_packet(address_of(echo), b"second"), relay)
        assert round_trip(client_udp, relay, echo, b"first again").data == b"first again"
        assert_nothing_waiting(second)
    record = socks_server.wait_records(1)[0]
    assert record["dropped"] == 1


def test_datagrams_from_another_host_are_dropped(socks_server, client_udp, echo) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, udp_socket(OTHER_HOST) as foreign:
        relay = relay_of(control, reply.bound)
        # Sent before the client's first datagram: it must not lock the association either.
        foreign.sendto(udp_packet(address_of(echo), b"foreign"), relay)
        assert round_trip(client_udp, relay, echo, b"client").data == b"client"
        assert_nothing_waiting(foreign)
    record = socks_server.wait_records(1)[0]
    assert record["dropped"] == 1


def test_datagram_from_a_host_the_client_never_sent_to_never_reaches_the_client(
    socks_server, client_udp, echo
) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, udp_socket() as stranger:
        relay = relay_of(control, reply.bound)
        assert round_trip(client_udp, relay, echo, b"hello").data == b"hello"
        stranger.sendto(b"unsolicited", relay)
        echo.sendto(b"solicited", relay)
        assert receive_relayed(client_udp) == UdpDatagram(address_of(echo), b"solicited")
        assert_nothing_waiting(client_udp)
    record = socks_server.wait_records(1)[0]
    assert record["dropped"] == 1
    assert (record["bytes_up"], record["bytes_down"]) == (5, 5 + 9)


@pytest.mark.parametrize("fragment", [0x01, 0x7F, 0x80, 0x81, 0xFF])
def test_fragment_other_than_zero_is_dropped(socks_server, client_udp, echo, fragment) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control:
        relay = relay_of(control, reply.bound)
        client_udp.sendto(udp_packet(address_of(echo), b"fragment", fragment), relay)
        assert round_trip(client_udp, relay, echo, b"whole").data == b"whole"
    record = socks_server.wait_records(1)[0]
    assert record["dropped"] == 1
    assert record["bytes_up"] == 5


@pytest.mark.parametrize(
    "datagram",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x00\x00", id="no-atyp"),
        pytest.param(b"\x00\x01\x00\x01\x7f\x00\x00\x01\x00\x07data", id="rsv-not-zero"),
        pytest.param(b"\x00\x00\x00\x02\x7f\x00\x00\x01\x00\x07data", id="unknown-atyp"),
        pytest.param(b"\x00\x00\x00\x01\x7f\x00\x00", id="short-ipv4"),
        pytest.param(b"\x00\x00\x00\x04" + bytes(15), id="short-ipv6"),
        pytest.param(b"\x00\x00\x00\x03\x09localh", id="short-name"),
        pytest.param(b"\x00\x00\x00\x03\x00\x00\x07data", id="empty-name"),
    ],
)
def test_malformed_header_is_dropped(socks_server, client_udp, echo, datagram: bytes) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control:
        relay = relay_of(control, reply.bound)
        client_udp.sendto(datagram, relay)
        assert round_trip(client_udp, relay, echo, b"well formed").data == b"well formed"
    record = socks_server.wait_records(1)[0]
    assert record["dropped"] == 1


def expect_port_unreachable(probe: socket.socket) -> None:
    """The datagram `probe` (a connected UDP socket) sent found no socket: ICMP port
    unreachable comes back as ECONNREFUSED on the next recv."""
    with pytest.raises(ConnectionRefusedError):
        probe.recv(0x10000)


def test_closing_the_control_connection_ends_the_association_with_its_counts_logged(
    socks_server, client_udp, echo, settled_active_sessions
) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, udp_socket() as second:
        relay = relay_of(control, reply.bound)
        assert round_trip(client_udp, relay, echo, b"abc").data == b"abc"
        echo.sendto(b"defgh", relay)  # a known peer may send more than one answer
        assert receive_relayed(client_udp).data == b"defgh"
        second.sendto(udp_packet(address_of(echo), b"dropped"), relay)
        assert round_trip(client_udp, relay, echo, b"ij").data == b"ij"
    record = socks_server.wait_records(1)[0]
    assert (record["bytes_up"], record["bytes_down"], record["dropped"]) == (5, 10, 1)
    assert record["outcome"] == "closed"
    assert settled_active_sessions(socks_server) == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(IO_TIMEOUT)
        probe.connect(relay)
        probe.send(udp_packet(address_of(echo), b"anyone there?"))
        expect_port_unreachable(probe)


def test_relay_socket_is_already_closed_when_the_record_is_logged(
    socks_server, client_udp, echo, on_record
) -> None:
    control, reply = open_request(socks_server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        relay = relay_of(control, reply.bound)
        assert round_trip(client_udp, relay, echo, b"live").data == b"live"
        probe.settimeout(IO_TIMEOUT)
        probe.connect(relay)
        sent = threading.Event()

        def send_probe(fields: dict[str, object]) -> None:  # on the server's thread
            probe.send(udp_packet(address_of(echo), b"too late"))
            sent.set()

        on_record(socks_server, send_probe)
        control.close()
        assert sent.wait(IO_TIMEOUT)
        expect_port_unreachable(probe)


def test_idle_association_ends_and_closes_the_control_connection(
    start_server, client_udp, echo
) -> None:
    server = start_server(udp={"idle_timeout": 0.5})
    control, reply = open_request(server, Command.UDP_ASSOCIATE, UNKNOWN)
    with control:
        assert round_trip(client_udp, relay_of(control, reply.bound), echo, b"once").data == b"once"
        assert read_until_eof(control) == b""
    record = server.wait_records(1)[0]
    assert record["outcome"] == "idle timeout"
    assert (record["bytes_up"], record["bytes_down"]) == (4, 4)


def test_request_destination_is_never_used_as_a_datagram_destination(socks_server, echo) -> None:
    """DST.ADDR/DST.PORT of the request name the client's own UDP end (§6), not a target.

    The request names `echo`'s address and port. The server takes only the port from it (the
    client's IP is that of its TCP connection), so the client connects from 127.0.0.2 and sends
    from port `echo.port` there: the request is then honest, and `echo` must still get nothing.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(IO_TIMEOUT)
        client.bind((OTHER_HOST, address_of(echo).port))
        control, reply = open_request(
            socks_server, Command.UDP_ASSOCIATE, address_of(echo), source=OTHER_HOST
        )
        with control, udp_socket() as header_destination:
            assert reply.reply == Reply.SUCCEEDED
            relay = relay_of(control, reply.bound)
            answer = round_trip(client, relay, header_destination, b"to the header")
            assert answer == UdpDatagram(address_of(header_destination), b"to the header")
            assert_nothing_waiting(echo)
    record = socks_server.wait_records(1)[0]
    assert record["bytes_up"] == len(b"to the header")
