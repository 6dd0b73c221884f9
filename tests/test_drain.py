"""SIGTERM drains `socks5d serve` (one process): the listeners close at once, open tunnels,
handshakes and UDP associations go on up to `timeouts.drain`, what is left then is closed
(`outcome=server closing`), and the process exits 0. SIGINT, or a second SIGTERM during the
drain, stops at once.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from serving import IO_TIMEOUT, Processes, ServeProcess, echo_pair, exchange
from socks5d.client import sync


def start(serve: Processes, tmp_path: Path, drain: float) -> ServeProcess:
    config = tmp_path / "socks5d.toml"
    config.write_text(f"[timeouts]\ndrain = {drain}\n")
    return serve("--config", str(config), "--listen", "127.0.0.1:0")


def tunnel(server: ServeProcess, destination: socket.socket) -> tuple[socket.socket, socket.socket]:
    host, port = server.listeners()[0]
    client = sync.connect(
        *destination.getsockname()[:2], proxy=f"socks5://{host}:{port}", timeout=IO_TIMEOUT
    )
    return client, echo_pair(destination, client)


def test_sigterm_drain_keeps_an_open_tunnel_working_refuses_new_connections_then_exits_0(
    serve: Processes, tmp_path: Path, destination: socket.socket
) -> None:
    server = start(serve, tmp_path, drain=30)
    address = server.listeners()[0]
    client, far = tunnel(server, destination)
    with client, far:
        exchange(client, far, b"before")
        server.signal(signal.SIGTERM)
        started = server.wait_message("draining:")
        assert started["sessions"] == 1 and started["deadline"] == 30
        with pytest.raises(ConnectionRefusedError):  # the listener is closed: a balancer moves on
            socket.create_connection(address, timeout=IO_TIMEOUT).close()
        for round in range(3):  # the whole transfer, both ways, after SIGTERM
            exchange(client, far, b"during %d" % round)
        assert server.process.poll() is None
        client.shutdown(socket.SHUT_WR)
        assert far.recv(1) == b""
        far.close()
        assert client.recv(1) == b""
    record = server.access_record()
    assert record["outcome"] == "closed" and record["reply"] == "succeeded"
    assert server.wait_message("drained")["message"] == "drained: every session ended"
    server.wait_message("stopped")
    assert server.wait_exit() == 0


def test_drain_deadline_closes_what_is_left_with_outcome_server_closing(
    serve: Processes, tmp_path: Path, destination: socket.socket
) -> None:
    server = start(serve, tmp_path, drain=0.5)
    host, port = server.listeners()[0]
    client, far = tunnel(server, destination)
    udp = sync.open_udp(proxy=f"socks5://{host}:{port}", timeout=IO_TIMEOUT)
    handshaking = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    handshaking.sendall(bytes([5]))  # a greeting begun, never finished
    with client, far, udp, handshaking:
        exchange(client, far, b"open")
        server.signal(signal.SIGTERM)
        assert server.wait_message("draining:")["sessions"] == 3
        left = server.wait_message("drain deadline:")
        assert left["sessions"] == 3
        assert left["message"] == "drain deadline: 3 sessions left, closing them"
        records = [server.access_record() for _ in range(3)]
        assert client.recv(1) == b"" and handshaking.recv(1) == b""
    assert {r["command"] for r in records} == {"connect", "udp_associate", None}
    assert [r["outcome"] for r in records] == ["server closing"] * 3
    assert server.wait_exit() == 0


def test_second_sigterm_during_the_drain_stops_at_once(
    serve: Processes, tmp_path: Path, destination: socket.socket
) -> None:
    server = start(serve, tmp_path, drain=300)
    client, far = tunnel(server, destination)
    with client, far:
        server.signal(signal.SIGTERM)
        server.wait_message("draining:")
        server.signal(signal.SIGTERM)
        server.wait_message("SIGTERM again: stopping at once")
        assert server.access_record()["outcome"] == "server closing"
        assert client.recv(1) == b""
    server.wait_message("stopped")
    assert server.wait_exit() == 0  # long before the 300 s of the drain
    assert not any(e["message"].startswith("drain deadline") for e in server.entries)


def test_sigint_stops_at_once_without_a_drain(
    serve: Processes, tmp_path: Path, destination: socket.socket
) -> None:
    server = start(serve, tmp_path, drain=300)
    client, far = tunnel(server, destination)
    with client, far:
        server.signal(signal.SIGINT)
        assert server.access_record()["outcome"] == "server closing"
        assert client.recv(1) == b""
    assert server.wait_exit() == 0
    assert not any(e["message"].startswith("draining") for e in server.entries)
