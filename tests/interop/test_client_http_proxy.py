"""Our client library (asyncio and blocking) through an HTTP proxy, tinyproxy, with CONNECT
(RFC 9110 §9.3.6): `http://` proxy URLs, Basic credentials, the proxy's refusals mapped to
our exceptions, and chains that mix HTTP and SOCKS. tinyproxy's log line for each CONNECT is
the proof that the request went through it.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from socks5d.client import Proxy, aio, sync
from socks5d.errors import AuthFailed, CommandNotSupported, ConnectionRefused
from socks5d.proxies import HTTP

from .conftest import CLIENT_TIMEOUT, PAYLOAD, Endpoint
from .proxies import TinyproxyServer


@pytest.fixture
def start_tinyproxy(tmp_path: Path) -> Iterator[Callable[..., TinyproxyServer]]:
    started: list[TinyproxyServer] = []

    def start(**options: str) -> TinyproxyServer:
        directory = tmp_path / f"tinyproxy{len(started)}"
        directory.mkdir()
        server = TinyproxyServer(directory, **options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def test_connect_through_tinyproxy_relays_both_ways(
    echo_through: Callable[..., bytes],
    start_tinyproxy: Callable[..., TinyproxyServer],
    tcp_echoes: dict[str, Endpoint],
) -> None:
    proxy = start_tinyproxy()
    destination = tcp_echoes["127.0.0.1"]
    assert echo_through(destination.host, destination.port, proxy.url) == PAYLOAD
    proxy.requested(destination.netloc)


def test_names_and_ipv6_go_to_the_proxy_as_written(
    echo_through: Callable[..., bytes],
    start_tinyproxy: Callable[..., TinyproxyServer],
    tcp_echoes: dict[str, Endpoint],
) -> None:
    proxy = start_tinyproxy()
    port = tcp_echoes["127.0.0.1"].port
    assert echo_through("localhost", port, proxy.url) == PAYLOAD
    proxy.requested(f"localhost:{port}")  # an HTTP proxy is always sent the name
    v6 = tcp_echoes["::1"]
    assert echo_through("::1", v6.port, proxy.url) == PAYLOAD
    proxy.requested(f"[::1]:{v6.port}")


def test_basic_credentials_and_a_wrong_password(
    echo_through: Callable[..., bytes],
    start_tinyproxy: Callable[..., TinyproxyServer],
    tcp_echoes: dict[str, Endpoint],
) -> None:
    proxy = start_tinyproxy(username="alice", password="s3cret")
    destination = tcp_echoes["127.0.0.1"]
    assert echo_through(destination.host, destination.port, proxy.url) == PAYLOAD
    wrong = proxy.url.replace("s3cret", "wrong")
    with pytest.raises(AuthFailed, match=r"40[17]"):
        echo_through(destination.host, destination.port, wrong)
    with pytest.raises(AuthFailed, match=r"40[17]"):
        echo_through(destination.host, destination.port, wrong.replace("alice:wrong@", ""))


def test_a_refused_destination_is_connection_refused(
    echo_through: Callable[..., bytes],
    start_tinyproxy: Callable[..., TinyproxyServer],
    closed_port: Endpoint,
) -> None:
    proxy = start_tinyproxy()
    with pytest.raises(ConnectionRefused, match="500"):
        echo_through(closed_port.host, closed_port.port, proxy.url)


def test_a_chain_of_http_then_socks(
    echo_through: Callable[..., bytes],
    start_tinyproxy: Callable[..., TinyproxyServer],
    socks_server,
    tcp_echoes: dict[str, Endpoint],
) -> None:
    """tinyproxy first, our SOCKS server behind it: the SOCKS handshake goes through the
    HTTP tunnel."""
    proxy = start_tinyproxy()
    destination = tcp_echoes["127.0.0.1"]
    chain = [proxy.url, socks_server.url("socks5h")]
    assert echo_through(destination.host, destination.port, chain) == PAYLOAD
    proxy.requested(f"{socks_server.host}:{socks_server.port}")
    assert socks_server.wait_records(1)[0]["destination"] == destination.netloc


async def test_bind_and_udp_through_http_are_not_supported(
    start_tinyproxy: Callable[..., TinyproxyServer],
) -> None:
    proxy = start_tinyproxy()
    with pytest.raises(CommandNotSupported, match="HTTP proxy"):
        await aio.open_bind("127.0.0.1", 0, proxy=proxy.url, timeout=CLIENT_TIMEOUT)
    with pytest.raises(CommandNotSupported, match="HTTP proxy"):
        sync.open_bind("127.0.0.1", 0, proxy=proxy.url, timeout=CLIENT_TIMEOUT)


def test_http_urls() -> None:
    proxy = Proxy.from_url("http://alice:pw@proxy.example:3128")
    assert (proxy.version, proxy.remote_dns, proxy.username) == (HTTP, True, "alice")
    assert proxy.url == "http://alice:***@proxy.example:3128"
    with pytest.raises(ValueError, match="GSS-API needs SOCKS5"):
        Proxy.from_url("http://proxy.example:3128?gssapi=integrity")


def test_socks5d_connect_through_an_http_proxy_then_socks(
    start_tinyproxy: Callable[..., TinyproxyServer], socks_server, tcp_echoes: dict[str, Endpoint]
) -> None:
    """The command line: `socks5d connect --proxy http://... --proxy socks5h://...`. Its stdin
    stays open until the echo is back: tinyproxy ends both directions at the client's EOF."""
    proxy = start_tinyproxy()
    destination = tcp_echoes["127.0.0.1"]
    command = [sys.executable, "-m", "socks5d", "connect", "--proxy", proxy.url]
    command += ["--proxy", socks_server.url("socks5h"), destination.host, str(destination.port)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as program:
        assert program.stdin is not None and program.stdout is not None
        try:
            program.stdin.write(PAYLOAD)
            program.stdin.flush()
            echoed = b""
            while len(echoed) < len(PAYLOAD):
                ready, _, _ = select.select([program.stdout], [], [], CLIENT_TIMEOUT)
                assert ready, f"no echo in time: {echoed!r}"
                chunk = os.read(program.stdout.fileno(), 65536)
                assert chunk, f"the command ended early: {echoed!r}"
                echoed += chunk
            program.stdin.close()
            assert program.wait(CLIENT_TIMEOUT) == 0
        finally:
            if program.poll() is None:
                program.kill()
    assert echoed == PAYLOAD
    proxy.requested(f"{socks_server.host}:{socks_server.port}")
