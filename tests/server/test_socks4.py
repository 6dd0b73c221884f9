"""SOCKS4 and SOCKS4a on the SOCKS5 listener (SOCKS4.protocol.txt, SOCKS4A.protocol.txt).

SOCKS4: "The SOCKS server closes its connection immediately after notifying the client of a
failed or rejected request. For a successful request, the SOCKS server gets ready to relay
traffic on both directions." SOCKS4 carries no password, so it is refused outright when it is
switched off or when the server requires username/password authentication.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from socks5d.proto import Address, Command, DomainName, Socks4Reply, Socks4Response

from .raw_client import (
    IO_TIMEOUT,
    SOCKS4_REPLY_SIZE,
    connect,
    loopback_address,
    read_socks4_reply,
    read_until_eof,
    recv_exactly,
    socks4_request_bytes,
)

#: A second loopback address: a peer from "another host" without leaving the machine.
OTHER_HOST = "127.0.0.2"


@pytest.fixture
def closed_port() -> Iterator[Address]:
    """127.0.0.1 with a port that is bound but not listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield loopback_address(sock)


def connect_peer(host: str, port: int, source: str | None = None) -> socket.socket:
    """The application server's connection to a BIND listener, from `source` if given."""
    sock = socket.socket()
    try:
        sock.settimeout(IO_TIMEOUT)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def test_connect_is_granted_then_relays_both_ways(socks_server, listener: socket.socket) -> None:
    destination = loopback_address(listener)
    with connect(socks_server) as client:
        client.sendall(socks4_request_bytes(Command.CONNECT, destination, b"bob"))
        assert read_socks4_reply(client).status == Socks4Reply.GRANTED
        upstream, _ = listener.accept()
        with upstream:
            upstream.settimeout(IO_TIMEOUT)
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            client.shutdown(socket.SHUT_WR)
            assert read_until_eof(upstream) == b"GET / HTTP/1.0\r\n\r\n"
            upstream.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
            upstream.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b"HTTP/1.0 200 OK\r\n\r\n"
    record = socks_server.wait_records(1)[0]
    assert record["protocol"] == "socks4"
    assert (record["command"], record["reply"]) == ("connect", "granted")
    assert record["destination"] == str(destination)
    assert (record["bytes_up"], record["bytes_down"]) == (18, 19)
    assert record["outcome"] == "closed"


@pytest.mark.parametrize(
    ("user_id", "logged"),
    [(b"alice", "alice"), (b"", None), (b"caf\xc3\xa9", "caf\u00e9"), (b"\xff", "\\xff")],
    ids=["ascii", "empty", "utf8", "not-utf8"],
)
def test_userid_is_logged_as_the_records_user(
    socks_server, listener: socket.socket, user_id: bytes, logged: str | None
) -> None:
    with connect(socks_server) as client:
        client.sendall(socks4_request_bytes(Command.CONNECT, loopback_address(listener), user_id))
        assert read_socks4_reply(client).status == Socks4Reply.GRANTED
        listener.accept()[0].close()
    assert socks_server.wait_records(1)[0]["user"] == logged


def test_socks4a_connect_to_localhost_is_resolved_by_the_server(
    socks_server, listener: socket.socket
) -> None:
    port = loopback_address(listener).port
    named = Address(DomainName("localhost"), port)
    with connect(socks_server) as client:
        client.sendall(socks4_request_bytes(Command.CONNECT, named, b"carol"))
        assert read_socks4_reply(client).status == Socks4Reply.GRANTED
        upstream, _ = listener.accept()
        with upstream:
            upstream.settimeout(IO_TIMEOUT)
            client.sendall(b"4a")
            assert recv_exactly(upstream, 2) == b"4a"
            upstream.sendall(b"ok")
            assert recv_exactly(client, 2) == b"ok"
    record = socks_server.wait_records(1)[0]
    assert record["protocol"] == "socks4a"
    assert record["destination"] == f"localhost:{port}"
    assert record["user"] == "carol"


def test_refused_destination_is_rejected_with_91_then_closed(
    socks_server, closed_port: Address
) -> None:
    with connect(socks_server) as client:
        client.sendall(socks4_request_bytes(Command.CONNECT, closed_port))
        answer = read_until_eof(client)
    assert len(answer) == SOCKS4_REPLY_SIZE
    assert answer[:2] == bytes([0, Socks4Reply.REJECTED])  # VN 0, CD 91
    record = socks_server.wait_records(1)[0]
    assert (record["protocol"], record["reply"]) == ("socks4", "rejected")


def first_bind_reply_host(client: socket.socket, first: Socks4Response) -> str:
    """Where the application server should connect, from the first BIND reply.

    SOCKS4: "If the DSTIP in the reply is 0 (the value of constant INADDR_ANY), then the client
    should replace it with the IP address of the SOCKS server to which the client is connected."
    """
    host = str(first.bound.host)
    return client.getpeername()[0] if host == "0.0.0.0" else host


def test_bind_sends_two_grants_then_relays(socks_server) -> None:
    expected_peer = Address.from_host("127.0.0.1", 21)
    with connect(socks_server) as client:
        client.sendall(socks4_request_bytes(Command.BIND, expected_peer, b"ftp"))
        first = read_socks4_reply(client)
        assert first.status == Socks4Reply.GRANTED
        assert first.bound.port != 0
        host = first_bind_reply_host(client, first)
        assert host == "127.0.0.1"  # where the expected peer can reach the server
        with connect_peer(host, first.bound.port, "127.0.0.1") as peer:
            second = read_socks4_reply(client)
            assert second.status == Socks4Reply.GRANTED
            peer.sendall(b"data")
            peer.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b"data"
            client.sendall(b"thanks")
            client.shutdown(socket.SHUT_WR)
            assert read_until_eof(peer) == b"thanks"
    record = socks_server.wait_records(1)[0]
    assert (record["protocol"], record["command"], record["reply"]) == ("socks4", "bind", "granted")
    assert (record["bytes_up"], record["bytes_down"]) == (6, 4)


def test_bind_peer_from_a_mismatching_ip_gets_91_and_both_connections_closed(
    socks_server,
) -> None:
    expected_peer = Address.from_host("127.0.0.1", 21)
    with connect(socks_server) as client:
        client.sendall(socks4_request_bytes(Command.BIND, expected_peer))
        first = read_socks4_reply(client)
        assert first.status == Socks4Reply.GRANTED
        host = first_bind_reply_host(client, first)
        with connect_peer(host, first.bound.port, OTHER_HOST) as peer:
            # SOCKS4: "If a mismatch is found, the CD field in the second reply is set to 91
            # and the SOCKS server closes both connections."
            second = read_until_eof(client)
            assert len(second) == SOCKS4_REPLY_SIZE
            assert second[:2] == bytes([0, Socks4Reply.REJECTED])
            assert read_until_eof(peer) == b""
    record = socks_server.wait_records(1)[0]
    assert (record["command"], record["reply"]) == ("bind", "rejected")


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"socks4": False}, id="socks4-off"),
        pytest.param({"users": {"alice": "secret"}}, id="userpass-required"),
    ],
)
def test_socks4_is_closed_without_a_reply_when_not_served(
    start_server, listener: socket.socket, settings: dict[str, object]
) -> None:
    server = start_server(**settings)
    with connect(server) as client:
        client.sendall(socks4_request_bytes(Command.CONNECT, loopback_address(listener), b"alice"))
        assert read_until_eof(client) == b""
    record = server.wait_records(1)[0]
    assert record["reply"] is None
    assert record["command"] is None
    # Nobody connected on the client's behalf: the listener's queue is empty.
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()
