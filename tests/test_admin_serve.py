"""The admin endpoint of one `socks5d serve` process (`--admin-listen`): served on the
server's own loop, it sees the real traffic, the reloads and the drain."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from serving import IO_TIMEOUT, Processes, ServeProcess, echo_pair, exchange, get, scrape
from socks5d.client import sync

pytest.importorskip("prometheus_client")


def admin_port(server: ServeProcess) -> int:
    """The endpoint's port, from its line (logged before the "ready" line already read)."""
    (entry,) = [e for e in server.entries if e["message"].startswith("admin endpoint on ")]
    return int(entry["message"].rpartition(":")[2])


def test_one_process_serves_metrics_sessions_health_through_a_reload_and_a_drain(
    serve: Processes, tmp_path: Path, destination: socket.socket
) -> None:
    config = tmp_path / "socks5d.toml"
    config.write_text('[admin]\nlisten = "127.0.0.1:0"\n')
    server = serve("--config", str(config), "--listen", "127.0.0.1:0")
    port = admin_port(server)
    host, proxy_port = server.listeners()[0]
    assert get(port, "/healthz") == (200, b"ok\n")

    client = sync.connect(
        *destination.getsockname()[:2], proxy=f"socks5://{host}:{proxy_port}", timeout=IO_TIMEOUT
    )
    far = echo_pair(destination, client)
    with client, far:
        exchange(client, far, b"x" * 1000)  # 1003 bytes up, 1005 down, the tunnel still open
        samples = scrape(port)
        assert samples[("socks5d_bytes_total", (("direction", "up"),))] == 1003
        assert samples[("socks5d_bytes_total", (("direction", "down"),))] == 1005
        assert samples[("socks5d_sessions_active", (("command", "connect"),))] == 1
        assert samples[("socks5d_handshake_seconds_count", ())] == 1
        assert samples[("socks5d_draining", ())] == 0
        status, body = get(port, "/sessions")
        assert status == 200
        (listed,) = json.loads(body)
        assert listed["pid"] == server.pid and listed["command"] == "connect"
        assert listed["destination"] == "{}:{}".format(*destination.getsockname()[:2])
        assert (listed["bytes_up"], listed["bytes_down"]) == (1003, 1005)

        server.signal(signal.SIGHUP)
        server.wait_message("configuration reloaded")
        assert scrape(port)[("socks5d_config_reloads_total", (("result", "success"),))] == 1
        config.write_text("this is not TOML [")
        server.signal(signal.SIGHUP)
        server.wait_message("reload failed")
        assert scrape(port)[("socks5d_config_reloads_total", (("result", "failure"),))] == 1

        server.signal(signal.SIGTERM)
        server.wait_message("draining:")
        # the endpoint outlives the listeners: a balancer's health check sees the drain
        assert get(port, "/healthz") == (503, b"draining\n")
        assert scrape(port)[("socks5d_draining", ())] == 1
        exchange(client, far, b"during the drain")
        client.shutdown(socket.SHUT_WR)
        assert far.recv(1) == b""
        far.close()
        assert client.recv(1) == b""
    record = server.access_record()
    assert record["outcome"] == "closed"
    assert server.wait_exit() == 0


def test_an_admin_address_in_use_stops_a_one_process_start_naming_it(
    serve: Processes, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        server = serve("--listen", "127.0.0.1:0", "--admin-listen", address, ready=False)
        assert server.wait_exit() == 1
    assert f"cannot listen on {address} (admin.listen)" in server.rest
