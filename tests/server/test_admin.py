"""The admin endpoint over loopback HTTP: `/metrics`, `/healthz`, `/sessions`, and what it
does with requests it does not serve (404, 405, 400, oversized, stalled, too many at once).

The endpoint runs on the test server's own event loop, as it does beside a real server;
stopping the server afterwards fails the test if any admin connection's task was left.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import START_TIMEOUT, RunningServer
from socks5d.config import ListenAddress
from socks5d.server.admin import MAX_REQUEST, AdminServer, LocalSource

from .raw_client import IO_TIMEOUT, loopback_address, open_tunnel, read_until_eof, recv_exactly
from .scrape import on_loop

ADMIN_LOGGER = "socks5d.server.admin"
SRC = Path(__file__).resolve().parents[2] / "src"

StartAdmin = Callable[..., AdminServer]


@pytest.fixture
def start_admin() -> Iterator[Callable[..., AdminServer]]:
    """Factory: `start_admin(running_server, request_timeout=..., max_connections=...)`, on
    127.0.0.1 with an ephemeral port; closed before the server stops."""
    started: list[tuple[RunningServer, AdminServer]] = []

    def start(running: RunningServer, **options: Any) -> AdminServer:
        admin = AdminServer(ListenAddress("127.0.0.1", 0), LocalSource(running.server), **options)
        loop = running._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(admin.start(), loop).result(START_TIMEOUT)
        started.append((running, admin))
        return admin

    yield start
    for running, admin in started:
        loop = running._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(admin.close(), loop).result(START_TIMEOUT)


def get(admin: AdminServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(*admin.address, timeout=IO_TIMEOUT)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def raw_exchange(admin: AdminServer, data: bytes) -> bytes:
    """Send `data` on a connection of its own; everything the endpoint answers until it
    closes (b"" when it closes without an answer)."""
    with socket.create_connection(admin.address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(data)
        try:
            return read_until_eof(sock)
        except ConnectionResetError:  # closed with our bytes unread: a reset, no answer
            return b""


def admin_tasks(running: RunningServer, admin: AdminServer) -> int:
    return on_loop(running, lambda: len(admin._handlers))


def test_metrics_answers_prometheus_text_after_real_traffic(
    socks_server, start_admin, listener
) -> None:
    admin = start_admin(socks_server)
    sock, _ = open_tunnel(socks_server, loopback_address(listener))
    with sock:
        peer, _ = listener.accept()
        with peer:
            sock.sendall(b"12345")
            recv_exactly(peer, 5)
            status, headers, body = get(admin, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert values["socks5d_bytes_total", (("direction", "up"),)] == 5
    assert values["socks5d_sessions_active", (("command", "connect"),)] == 1


def test_head_answers_the_headers_alone(socks_server, start_admin) -> None:
    admin = start_admin(socks_server)
    status, headers, body = get(admin, "/healthz", method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "3", b"")


def test_healthz_is_ok_until_a_drain_begins(socks_server, start_admin) -> None:
    admin = start_admin(socks_server)
    assert get(admin, "/healthz")[::2] == (200, b"ok\n")

    def begin_drain() -> None:
        socks_server.server.draining = True

    on_loop(socks_server, begin_drain)
    assert get(admin, "/healthz")[::2] == (503, b"draining\n")
    status, _, body = get(admin, "/metrics")
    assert status == 200
    assert b"\nsocks5d_draining 1.0\n" in body


def test_sessions_lists_open_tunnels_oldest_first_and_limit_bounds_it(
    start_server, start_admin, listener
) -> None:
    server = start_server(users={"alice": "secret"})
    admin = start_admin(server)
    destination = loopback_address(listener)
    first, _ = open_tunnel(server, destination, username="alice", password="secret")
    with first:
        peer, _ = listener.accept()
        with peer:
            first.sendall(b"abc")
            recv_exactly(peer, 3)
            peer.sendall(b"de")
            recv_exactly(first, 2)
            second, _ = open_tunnel(server, destination, username="alice", password="secret")
            with second, listener.accept()[0]:
                status, headers, body = get(admin, "/sessions")
                assert (status, headers["Content-Type"]) == (200, "application/json")
                listed = json.loads(body)
                assert len(listed) == 2
                oldest = listed[0]
                assert oldest["client"] == "{}:{}".format(*first.getsockname())
                assert (oldest["user"], oldest["protocol"], oldest["command"]) == (
                    "alice",
                    "socks5",
                    "connect",
                )
                assert oldest["destination"] == str(destination)
                assert (oldest["bytes_up"], oldest["bytes_down"]) == (3, 2)
                assert oldest["pid"] == os.getpid()
                assert oldest["age"] >= listed[1]["age"] >= 0
                assert json.loads(get(admin, "/sessions?limit=1")[2]) == [
                    {**oldest, "age": pytest.approx(oldest["age"], abs=IO_TIMEOUT)}
                ]


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "10001", "", "1&limit=2"])
def test_a_bad_session_limit_is_answered_400_with_a_log_line(
    socks_server, start_admin, caplog, limit: str
) -> None:
    admin = start_admin(socks_server)
    with caplog.at_level(logging.WARNING, ADMIN_LOGGER):
        status, _, body = get(admin, f"/sessions?limit={limit}")
    assert status == 400
    assert b"limit must be 1 to 10000" in body
    assert any("400" in record.getMessage() for record in caplog.records)


def test_unknown_paths_are_404_and_other_methods_405(socks_server, start_admin, caplog) -> None:
    admin = start_admin(socks_server)
    with caplog.at_level(logging.WARNING, ADMIN_LOGGER):
        assert get(admin, "/nothing")[0] == 404
        status, headers, _ = get(admin, "/metrics", method="POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    messages = [record.getMessage() for record in caplog.records]
    assert any("404" in message for message in messages)
    assert any("405" in message for message in messages)


def test_a_malformed_request_line_is_400(socks_server, start_admin) -> None:
    admin = start_admin(socks_server)
    assert raw_exchange(admin, b"GET\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_an_oversized_request_is_refused_and_closed_with_a_log_line(
    socks_server, start_admin, caplog
) -> None:
    admin = start_admin(socks_server)
    with caplog.at_level(logging.WARNING, ADMIN_LOGGER):
        answer = raw_exchange(
            admin, b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"x" * (MAX_REQUEST + 100)
        )
    # "431 or close": the answer may be lost to the reset our unread bytes cause
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert any(
        "431" in record.getMessage() and "over 8192 bytes" in record.getMessage()
        for record in caplog.records
    )
    assert admin_tasks(socks_server, admin) == 0


def test_a_stalled_request_is_closed_at_the_deadline_with_a_log_line(
    socks_server, start_admin, caplog
) -> None:
    admin = start_admin(socks_server, request_timeout=0.2)
    with caplog.at_level(logging.WARNING, ADMIN_LOGGER):
        assert raw_exchange(admin, b"GET /metrics HTTP/1.1\r\n") == b""
    assert any("no whole request in 0.2s" in record.getMessage() for record in caplog.records)
    assert admin_tasks(socks_server, admin) == 0


def test_connections_beyond_the_limit_are_closed_at_once(socks_server, start_admin, caplog) -> None:
    admin = start_admin(socks_server, max_connections=2)
    waiting = [socket.create_connection(admin.address, timeout=IO_TIMEOUT) for _ in range(2)]
    try:
        for sock in waiting:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # not finished: held open
        with caplog.at_level(logging.WARNING, ADMIN_LOGGER):
            assert raw_exchange(admin, b"GET /healthz HTTP/1.1\r\n\r\n") == b""
        assert any("2 connections already" in record.getMessage() for record in caplog.records)
        for sock in waiting:  # the two held ones are still served
            sock.sendall(b"\r\n")
            assert read_until_eof(sock).endswith(b"\r\n\r\nok\n")
    finally:
        for sock in waiting:
            sock.close()


UNAVAILABLE_SCRIPT = textwrap.dedent(
    """
    import asyncio, http.client, sys
    sys.modules["prometheus_client"] = None  # as if not installed
    from socks5d.config import ListenAddress
    from socks5d.server.admin import AdminServer
    from socks5d.server.exposition import MetricsUnavailable, render

    class Source:
        async def metrics(self):
            return {"counters": {}, "histograms": {}, "gauges": {}}
        async def sessions(self, limit):
            return []
        def draining(self):
            return False

    async def main():
        try:
            render({})
        except MetricsUnavailable as exc:
            print("raised:", exc)
        async with AdminServer(ListenAddress("127.0.0.1", 0), Source()) as admin:
            def fetch():
                connection = http.client.HTTPConnection(*admin.address, timeout=5)
                connection.request("GET", "/metrics")
                response = connection.getresponse()
                return response.status, response.read().decode()
            status, body = await asyncio.to_thread(fetch)
        print("status:", status)
        print("body:", body)

    asyncio.run(main())
    """
)


def test_metrics_answers_501_naming_the_extra_without_prometheus_client() -> None:
    environment = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", UNAVAILABLE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=20,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "raised: metrics need the prometheus-client package" in done.stdout
    assert "status: 501" in done.stdout
    assert (
        "body: /metrics needs the prometheus-client package, the socks5d[metrics] extra:"
        " pip install '.[metrics]' in a socks5d checkout"
    ) in done.stdout
