"""BIND over loopback (RFC 1928 §6): the two replies, the expected peer, timeout, cancel, ports.

§6: "Two replies are sent from the SOCKS server to the client during a BIND operation. The
first is sent after the server creates and binds a new socket. The BND.PORT field contains the
port number that the SOCKS server assigned to listen for an incoming connection. [...] In the
second reply, the BND.PORT and BND.ADDR fields contain the address and port number of the
connecting host."
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from socks5d.proto import Address, AddressType, Command, CommandReply, Reply
from socks5d.proto.rfc1928 import encode_reply

from .raw_client import (
    IO_TIMEOUT,
    open_request,
    read_reply,
    read_until_eof,
    recv_exactly,
)

#: DST.ADDR/DST.PORT all zeros: the client does not know who will connect.
ANYONE = Address.from_host("0.0.0.0", 0)
#: DST.ADDR naming the loopback peer (DST.PORT: "the destination port used in the primary
#: connection"; the server does not check it).
LOOPBACK_PEER = Address.from_host("127.0.0.1", 0)
#: A second loopback address: a peer from "another host" without leaving the machine.
OTHER_HOST = "127.0.0.2"


def connect_peer(bound: Address, source: str | None = None) -> socket.socket:
    """The application server's connection to the BIND listener, from `source` if given."""
    host = str(bound.host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(IO_TIMEOUT)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, bound.port))
    except BaseException:
        sock.close()
        raise
    return sock


def bound_address(sock: socket.socket) -> Address:
    """The SOCKS address of a socket's own end."""
    host, port = sock.getsockname()[:2]
    return Address.from_host(host, port)


@pytest.fixture
def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def taken_port(free_port: int) -> Iterator[int]:
    """A TCP port of 127.0.0.1 someone else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port))
        sock.listen(1)
        yield free_port


def test_first_reply_names_a_listener_and_second_reply_names_the_peer_as_it_sees_itself(
    socks_server,
) -> None:
    client, first = open_request(socks_server, Command.BIND, LOOPBACK_PEER)
    with client:
        assert first.reply == Reply.SUCCEEDED
        assert first.bound.host == LOOPBACK_PEER.host  # reachable from the expected peer
        assert first.bound.port != 0
        with connect_peer(first.bound) as peer:
            second, raw = read_reply(client)
            assert second == CommandReply(Reply.SUCCEEDED, bound_address(peer))
            assert raw[3] == AddressType.IPV4
            assert peer.getpeername()[1] == first.bound.port
    record = socks_server.wait_records(1)[0]
    assert (record["command"], record["reply"]) == ("bind", "succeeded")
    assert record["protocol"] == "socks5"
    assert record["destination"] == str(LOOPBACK_PEER)


@pytest.mark.parametrize(("up", "down"), [(0, 0), (1, 0), (0, 1), (100_003, 70_001)])
def test_bound_tunnel_relays_both_ways_and_counts_exactly(socks_server, up: int, down: int) -> None:
    upload, download = bytes(i % 251 for i in range(up)), bytes(i % 241 for i in range(down))
    client, first = open_request(socks_server, Command.BIND, LOOPBACK_PEER)
    with client, connect_peer(first.bound) as peer:
        second, _ = read_reply(client)
        assert second.reply == Reply.SUCCEEDED
        client.sendall(upload)
        client.shutdown(socket.SHUT_WR)
        assert read_until_eof(peer) == upload
        peer.sendall(download)
        peer.shutdown(socket.SHUT_WR)
        assert read_until_eof(client) == download
    record = socks_server.wait_records(1)[0]
    assert (record["bytes_up"], record["bytes_down"]) == (up, down)
    assert record["outcome"] == "closed"


@pytest.mark.parametrize("source", ["127.0.0.1", OTHER_HOST])
def test_all_zeros_destination_accepts_a_peer_from_any_address(socks_server, source: str) -> None:
    client, first = open_request(socks_server, Command.BIND, ANYONE)
    with client:
        assert first.reply == Reply.SUCCEEDED
        # No expected peer: the listener is on our end of the client's connection.
        assert str(first.bound.host) == client.getpeername()[0]
        with connect_peer(first.bound, source) as peer:
            second, _ = read_reply(client)
            assert second == CommandReply(Reply.SUCCEEDED, bound_address(peer))
            peer.sendall(b"hello")
            assert recv_exactly(client, 5) == b"hello"


def test_peer_from_an_unexpected_address_is_turned_away_and_the_expected_one_still_gets_in(
    socks_server,
) -> None:
    client, first = open_request(socks_server, Command.BIND, LOOPBACK_PEER)
    with client:
        assert first.reply == Reply.SUCCEEDED
        with connect_peer(first.bound, OTHER_HOST) as intruder:
            assert read_until_eof(intruder) == b""  # accepted by the kernel, closed by us
        with connect_peer(first.bound, "127.0.0.1") as peer:
            # The next thing on the control connection is the second reply for this peer:
            # nothing was sent about the intruder.
            second, _ = read_reply(client)
            assert second == CommandReply(Reply.SUCCEEDED, bound_address(peer))
            client.sendall(b"ok")
            assert recv_exactly(peer, 2) == b"ok"
    record = socks_server.wait_records(1)[0]
    assert record["reply"] == "succeeded"


def test_no_peer_within_the_bind_timeout_sends_ttl_expired_then_closes(start_server) -> None:
    server = start_server(bind={"timeout": 0.5})
    client, first = open_request(server, Command.BIND, LOOPBACK_PEER)
    with client:
        assert first.reply == Reply.SUCCEEDED
        assert read_until_eof(client) == encode_reply(CommandReply(Reply.TTL_EXPIRED))
    record = server.wait_records(1)[0]
    assert record["reply"] == "ttl_expired"
    # The listener is gone with the wait.
    with pytest.raises(ConnectionRefusedError):
        connect_peer(first.bound).close()


def test_closing_the_control_connection_during_the_wait_frees_the_port(
    socks_server, settled_active_sessions
) -> None:
    client, first = open_request(socks_server, Command.BIND, LOOPBACK_PEER)
    with client:
        assert first.reply == Reply.SUCCEEDED
    record = socks_server.wait_records(1)[0]
    assert record["outcome"] == "client closed the control connection during BIND"
    with pytest.raises(ConnectionRefusedError):
        connect_peer(first.bound).close()
    assert settled_active_sessions(socks_server) == 0


def test_configured_single_port_range_listens_on_exactly_that_port(
    start_server, free_port: int
) -> None:
    server = start_server(bind={"ports": f"{free_port}-{free_port}"})
    client, first = open_request(server, Command.BIND, LOOPBACK_PEER)
    with client:
        assert first == CommandReply(Reply.SUCCEEDED, Address.from_host("127.0.0.1", free_port))
        with connect_peer(first.bound) as peer:
            second, _ = read_reply(client)
            assert second == CommandReply(Reply.SUCCEEDED, bound_address(peer))


def test_configured_port_taken_replies_general_failure_then_closes(
    start_server, taken_port: int
) -> None:
    server = start_server(bind={"ports": f"{taken_port}-{taken_port}"})
    client, first = open_request(server, Command.BIND, LOOPBACK_PEER)
    with client:
        assert first == CommandReply(Reply.GENERAL_FAILURE)
        assert read_until_eof(client) == b""
    record = server.wait_records(1)[0]
    assert record["reply"] == "general_failure"


def test_ipv6_bind_gives_an_ipv6_first_reply_and_relays(start_server) -> None:
    server = start_server(listen=["[::1]:0"])
    client, first = open_request(server, Command.BIND, Address.from_host("::1", 0))
    with client:
        assert first.reply == Reply.SUCCEEDED
        assert first.bound.host == Address.from_host("::1", 0).host
        assert first.bound.type == AddressType.IPV6
        with connect_peer(first.bound) as peer:
            second, raw = read_reply(client)
            assert second == CommandReply(Reply.SUCCEEDED, bound_address(peer))
            assert raw[3] == AddressType.IPV6
            peer.sendall(b"six")
            assert recv_exactly(client, 3) == b"six"
            client.sendall(b"ok")
            assert recv_exactly(peer, 2) == b"ok"


def test_data_sent_before_the_peer_connects_reaches_the_peer_and_is_counted(socks_server) -> None:
    client, first = open_request(socks_server, Command.BIND, LOOPBACK_PEER)
    with client:
        client.sendall(b"early ")  # e.g. a greeting the peer expects first
        with connect_peer(first.bound) as peer:
            second, _ = read_reply(client)
            assert second.reply == Reply.SUCCEEDED
            client.sendall(b"and late")
            client.shutdown(socket.SHUT_WR)
            assert read_until_eof(peer) == b"early and late"
            peer.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b""
    record = socks_server.wait_records(1)[0]
    assert (record["bytes_up"], record["bytes_down"]) == (14, 0)
