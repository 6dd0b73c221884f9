"""Our client library (asyncio and blocking) against microsocks, a small SOCKS5 server that
only does CONNECT: IPv4, IPv6 and names, RFC 1929, and its failure replies mapped to our
exceptions.

microsocks logs each CONNECT it made with the destination as the client sent it, so the log
also tells whether a name reached the proxy (socks5h) or we resolved it (socks5). Its replies
(1.0.3, sockssrv.c): ECONNREFUSED -> X'05', ENETUNREACH -> X'03', EHOSTUNREACH -> X'04',
ETIMEDOUT -> X'06', a failed name lookup -> X'01', BIND and UDP ASSOCIATE -> X'07', and a
wrong password -> RFC 1929 status X'02'.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest

from socks5d.client import aio, sync
from socks5d.errors import AuthFailed, CommandNotSupported, ConnectionRefused

from .conftest import CLIENT_TIMEOUT, PAYLOAD, Endpoint
from .proxies import MicrosocksServer

USER = "alice"
PASSWORD = "s3cret"


@pytest.fixture
def start_microsocks() -> Iterator[Callable[..., MicrosocksServer]]:
    """Factory: `start_microsocks(host="::1", username=..., password=...)`; all stopped after."""
    started: list[MicrosocksServer] = []

    def start(**options: str) -> MicrosocksServer:
        server = MicrosocksServer(**options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def microsocks(start_microsocks: Callable[..., MicrosocksServer]) -> MicrosocksServer:
    """microsocks on 127.0.0.1, no authentication."""
    return start_microsocks()


@pytest.fixture
def microsocks_userpass(start_microsocks: Callable[..., MicrosocksServer]) -> MicrosocksServer:
    """microsocks on 127.0.0.1 that requires USER / PASSWORD."""
    return start_microsocks(username=USER, password=PASSWORD)


def userpass_url(server: MicrosocksServer, password: str = PASSWORD) -> str:
    return f"socks5://{USER}:{password}@{Endpoint(server.host, server.port).netloc}"


# --------------------------------------------------------------------------- CONNECT


@pytest.mark.parametrize(
    ("proxy_host", "destination_host"),
    [("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "::1"), ("::1", "::1")],
    ids=["v4-proxy-v4-destination", "v4-proxy-v6-destination", "v6-proxy-v6-destination"],
)
def test_connect_through_microsocks_relays_both_ways(
    echo_through: Callable[..., bytes],
    start_microsocks: Callable[..., MicrosocksServer],
    tcp_echoes: dict[str, Endpoint],
    proxy_host: str,
    destination_host: str,
) -> None:
    server = start_microsocks(host=proxy_host)
    destination = tcp_echoes[destination_host]

    echoed = echo_through(destination.host, destination.port, server.url)

    assert echoed == PAYLOAD
    server.connected(f"{destination.host}:{destination.port}")


def test_socks5h_sends_the_name_to_microsocks(
    echo_through: Callable[..., bytes],
    microsocks: MicrosocksServer,
    tcp_echoes: dict[str, Endpoint],
) -> None:
    port = tcp_echoes["127.0.0.1"].port

    echoed = echo_through("localhost", port, microsocks.url.replace("socks5:", "socks5h:"))

    assert echoed == PAYLOAD
    microsocks.connected(f"localhost:{port}")  # the name itself reached the proxy


def test_socks5_resolves_the_name_here_and_sends_an_address(
    echo_through: Callable[..., bytes],
    microsocks: MicrosocksServer,
    tcp_echoes: dict[str, Endpoint],
) -> None:
    port = tcp_echoes["127.0.0.1"].port

    echoed = echo_through("localhost", port, microsocks.url)

    assert echoed == PAYLOAD
    # Both faces of the client send the first address getaddrinfo gives.
    first = socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)[0][4][0]
    microsocks.connected(f"{first}:{port}")


def test_refused_destination_raises_connection_refused(
    echo_through: Callable[..., bytes], microsocks: MicrosocksServer, closed_port: Endpoint
) -> None:
    with pytest.raises(ConnectionRefused, match="X'05'") as raised:
        echo_through(closed_port.host, closed_port.port, microsocks.url)

    assert isinstance(raised.value, ConnectionRefusedError)


# --------------------------------------------------------------------------- RFC 1929


def test_username_password_accepted_by_microsocks(
    echo_through: Callable[..., bytes],
    microsocks_userpass: MicrosocksServer,
    tcp_echoes: dict[str, Endpoint],
) -> None:
    destination = tcp_echoes["127.0.0.1"]

    echoed = echo_through(destination.host, destination.port, userpass_url(microsocks_userpass))

    assert echoed == PAYLOAD
    microsocks_userpass.connected(destination.netloc)


def test_wrong_password_raises_auth_failed(
    echo_through: Callable[..., bytes],
    microsocks_userpass: MicrosocksServer,
    tcp_echoes: dict[str, Endpoint],
) -> None:
    destination = tcp_echoes["127.0.0.1"]

    with pytest.raises(AuthFailed, match=r"refused user 'alice' \(status 0x02\)"):
        echo_through(destination.host, destination.port, userpass_url(microsocks_userpass, "wrong"))


def test_no_credentials_for_microsocks_with_users_raises_auth_failed(
    echo_through: Callable[..., bytes],
    microsocks_userpass: MicrosocksServer,
    tcp_echoes: dict[str, Endpoint],
) -> None:
    destination = tcp_echoes["127.0.0.1"]

    with pytest.raises(AuthFailed, match="none of the methods"):
        echo_through(destination.host, destination.port, microsocks_userpass.url)


# --------------------------------------------------------------------------- other commands


async def _bind_aio(proxy: str) -> None:
    binding = await aio.open_bind("127.0.0.1", 0, proxy=proxy, timeout=CLIENT_TIMEOUT)
    binding.close()


async def _udp_aio(proxy: str) -> None:
    udp = await aio.open_udp(proxy=proxy, timeout=CLIENT_TIMEOUT)
    await udp.close()


def _bind_sync(proxy: str) -> None:
    sync.open_bind("127.0.0.1", 0, proxy=proxy, timeout=CLIENT_TIMEOUT).close()


def _udp_sync(proxy: str) -> None:
    sync.open_udp(proxy=proxy, timeout=CLIENT_TIMEOUT).close()


@pytest.mark.parametrize(
    "request_command",
    [
        pytest.param(lambda proxy: asyncio.run(_bind_aio(proxy)), id="aio-bind"),
        pytest.param(_bind_sync, id="sync-bind"),
        pytest.param(lambda proxy: asyncio.run(_udp_aio(proxy)), id="aio-udp-associate"),
        pytest.param(_udp_sync, id="sync-udp-associate"),
    ],
)
def test_bind_and_udp_associate_raise_command_not_supported(
    request_command: Callable[[str], None], microsocks: MicrosocksServer
) -> None:
    with pytest.raises(CommandNotSupported, match="X'07'"):
        request_command(microsocks.url)
