"""The metrics after real traffic through a real server: sessions by protocol, command and
reply, bytes of open and closed tunnels, logins, rule blocks, limit refusals, UDP datagrams,
histograms; read as a scraper reads them (tests/server/scrape.py).
"""

from __future__ import annotations

import socket

import pytest

from socks5d import __version__
from socks5d.proto import Address, Command, Reply, UdpDatagram
from socks5d.server.stats import HISTOGRAM_BOUNDS, Stats

from .logins import connect_from, log_in
from .raw_client import (
    IO_TIMEOUT,
    connect,
    echo_once,
    greeting_bytes,
    loopback_address,
    open_request,
    open_tunnel,
    read_reply,
    read_until_eof,
    receive_relayed,
    recv_exactly,
    udp_packet,
    udp_socket,
)
from .scrape import on_loop, scrape

SESSIONS = "socks5d_sessions_total"
BYTES = "socks5d_bytes_total"
UP = {"direction": "up"}
DOWN = {"direction": "down"}


def closed_port() -> Address:
    """A loopback address nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return loopback_address(sock)


def test_sessions_are_counted_by_protocol_command_and_reply(socks_server, listener) -> None:
    sock, reply = open_tunnel(socks_server, loopback_address(listener))
    with sock:
        assert reply.reply == Reply.SUCCEEDED
        peer, _ = listener.accept()
        peer.close()
    refused, reply = open_tunnel(socks_server, closed_port())
    with refused:
        assert reply.reply == Reply.CONNECTION_REFUSED
    with connect(socks_server):  # says nothing at all
        pass
    socks_server.wait_records(3)
    samples = scrape(socks_server)
    assert samples.types[SESSIONS.removesuffix("_total")] == "counter"
    connect_ok = {"protocol": "socks5", "command": "connect", "reply": "succeeded"}
    assert samples[SESSIONS, connect_ok] == 1
    assert samples[SESSIONS, connect_ok | {"reply": "connection_refused"}] == 1
    assert samples[SESSIONS, {"protocol": "none", "command": "none", "reply": "none"}] == 1
    # The two that sent a request went through the handshake, and both tried to connect.
    assert samples["socks5d_handshake_seconds_count", {}] == 2
    assert samples["socks5d_handshake_seconds_bucket", {"le": "+Inf"}] == 2
    assert samples["socks5d_connect_seconds_count", {}] == 2
    assert samples["socks5d_connect_seconds_sum", {}] > 0
    assert samples["socks5d_sessions_active", {"command": "connect"}] == 0
    assert samples["socks5d_build_info", {"version": __version__}] == 1
    assert samples["socks5d_draining", {}] == 0


@pytest.mark.parametrize("engine", ["splice", "portable"])
def test_bytes_of_an_open_tunnel_count_and_never_go_back_when_it_ends(
    start_server, listener, engine: str
) -> None:
    server = start_server(performance={"relay": engine})
    sock, _ = open_tunnel(server, loopback_address(listener))
    with sock:
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(IO_TIMEOUT)
            sock.sendall(b"u" * 1000)
            recv_exactly(peer, 1000)
            peer.sendall(b"d" * 300)
            recv_exactly(sock, 300)
            samples = scrape(server)
            assert (samples[BYTES, UP], samples[BYTES, DOWN]) == (1000, 300)
            assert samples["socks5d_sessions_active", {"command": "connect"}] == 1
            (listed,) = on_loop(server, lambda: server.server.session_list(10))
            assert (listed["bytes_up"], listed["bytes_down"]) == (1000, 300)
            sock.sendall(b"u" * 24)
            recv_exactly(peer, 24)
    server.wait_records(1)
    samples = scrape(server)
    assert (samples[BYTES, UP], samples[BYTES, DOWN]) == (1024, 300)
    assert samples["socks5d_sessions_active", {"command": "connect"}] == 0


def test_logins_are_counted_by_result(start_server) -> None:
    server = start_server(users={"alice": "secret"})
    assert log_in(server, "alice", "secret") == 0
    assert log_in(server, "alice", "wrong") != 0
    server.wait_records(2)
    samples = scrape(server)
    assert samples["socks5d_auth_total", {"method": "userpass", "result": "success"}] == 1
    assert samples["socks5d_auth_total", {"method": "userpass", "result": "failure"}] == 1


def test_a_client_rule_block_and_a_socks_rule_block_are_counted_by_list(start_server) -> None:
    server = start_server(
        client=[{"action": "block", "from": ["127.0.0.2/32"]}],
        socks=[{"action": "block", "to": ["127.0.0.3/32"]}],
    )
    with connect_from(server, "127.0.0.2") as refused:
        assert read_until_eof(refused) == b""
    sock, reply = open_request(server, Command.CONNECT, Address.from_host("127.0.0.3", 80))
    with sock:
        assert reply.reply == Reply.CONNECTION_NOT_ALLOWED
    samples = scrape(server)
    assert samples["socks5d_rule_blocks_total", {"list": "client"}] == 1
    assert samples["socks5d_rule_blocks_total", {"list": "socks"}] == 1


def test_a_session_over_the_limit_is_counted_and_a_handshake_is_active(start_server) -> None:
    server = start_server(limits={"max_sessions_per_client": 1})
    with connect(server) as first:
        first.sendall(greeting_bytes(0))
        recv_exactly(first, 2)  # admitted, and in its handshake
        with connect(server) as second:
            assert read_until_eof(second) == b""
        samples = scrape(server)
        assert samples["socks5d_limit_refusals_total", {"limit": "sessions"}] == 1
        assert samples["socks5d_sessions_active", {"command": "handshake"}] == 1


def test_udp_datagrams_are_counted_both_ways_and_a_drop_by_reason(socks_server) -> None:
    control, reply = open_request(
        socks_server, Command.UDP_ASSOCIATE, Address.from_host("0.0.0.0", 0)
    )
    with control, udp_socket() as client, udp_socket() as echo:
        relay = (control.getpeername()[0], reply.bound.port)
        destination = loopback_address(echo)
        # the fragment is dropped; the datagram after it, through the same socket, is not
        client.sendto(udp_packet(destination, b"fragment", fragment=1), relay)
        client.sendto(udp_packet(destination, b"ping"), relay)
        assert echo_once(echo)[0] == b"ping"
        assert receive_relayed(client) == UdpDatagram(destination, b"ping")
        samples = scrape(socks_server)
        assert samples["socks5d_udp_datagrams_total", UP] == 1
        assert samples["socks5d_udp_datagrams_total", DOWN] == 1
        assert samples["socks5d_udp_dropped_total", {"reason": "fragment"}] == 1
        assert (samples[BYTES, UP], samples[BYTES, DOWN]) == (4, 4)
        assert samples["socks5d_sessions_active", {"command": "udp_associate"}] == 1
    socks_server.wait_records(1)
    samples = scrape(socks_server)
    assert (samples[BYTES, UP], samples[BYTES, DOWN]) == (4, 4)
    udp_ok = {"protocol": "socks5", "command": "udp_associate", "reply": "succeeded"}
    assert samples[SESSIONS, udp_ok] == 1


def test_reloads_are_counted_by_result() -> None:
    stats = Stats()
    stats.count_reload(True)
    stats.count_reload(False)
    stats.count_reload(True)
    samples = dict(
        (labels["result"], value)
        for labels, value in stats.snapshot()["counters"]["socks5d_config_reloads_total"]
    )
    assert samples == {"success": 2, "failure": 1}


def test_histogram_buckets_are_cumulative_and_count_is_the_inf_bucket() -> None:
    stats = Stats()
    bounds = HISTOGRAM_BOUNDS["socks5d_connect_seconds"]
    for value in (bounds[0], bounds[0] / 2, bounds[1], bounds[-1] * 2):
        stats.connect.observe(value)
    ((_, histogram),) = stats.snapshot()["histograms"]["socks5d_connect_seconds"]
    assert histogram["buckets"][:2] == [2, 3]
    assert histogram["buckets"][-1] == 3
    assert histogram["count"] == 4


def test_bytes_of_an_open_bind_tunnel_count_and_never_go_back_when_it_ends(socks_server) -> None:
    client, first = open_request(socks_server, Command.BIND, Address.from_host("127.0.0.1", 0))
    with client:
        assert first.reply == Reply.SUCCEEDED
        with socket.create_connection(
            (str(first.bound.host), first.bound.port), timeout=IO_TIMEOUT
        ) as peer:
            assert read_reply(client)[0].reply == Reply.SUCCEEDED
            client.sendall(b"u" * 7)
            recv_exactly(peer, 7)
            peer.sendall(b"d" * 5)
            recv_exactly(client, 5)
            samples = scrape(socks_server)
            assert (samples[BYTES, UP], samples[BYTES, DOWN]) == (7, 5)
            assert samples["socks5d_sessions_active", {"command": "bind"}] == 1
    socks_server.wait_records(1)
    samples = scrape(socks_server)
    assert (samples[BYTES, UP], samples[BYTES, DOWN]) == (7, 5)
