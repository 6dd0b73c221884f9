"""Python SOCKS clients: httpx (socksio), requests (PySocks) and python-socks (asyncio).

Proxy URLs use `socks5h://` when the proxy should resolve names; python-socks spells that
`rdns=True`. httpx sends names to the proxy under either scheme.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
import python_socks
import requests
from python_socks.async_.asyncio import Proxy

from .conftest import SMALL_BODY, crossed_proxy, only_record, parse_http_response

CLIENT_TIMEOUT = 10.0


def fetch_with_httpx(proxy_url: str, url: str) -> bytes:
    with httpx.Client(proxy=proxy_url, trust_env=False, timeout=CLIENT_TIMEOUT) as client:
        response = client.get(url)
        response.raise_for_status()
        return response.content


def fetch_with_requests(proxy_url: str, url: str) -> bytes:
    with requests.Session() as session:
        session.trust_env = False  # no proxy settings or NO_PROXY from the environment
        response = session.get(url, proxies={"http": proxy_url}, timeout=CLIENT_TIMEOUT)
        response.raise_for_status()
        return response.content


async def get_with_python_socks(proxy_url: str, url: str) -> bytes:
    """Open a tunnel with python-socks, then speak HTTP/1.0 over it by hand."""
    proxy_parts = urlsplit(proxy_url)
    remote_dns = proxy_parts.scheme == "socks5h"
    proxy = Proxy.from_url(proxy_parts._replace(scheme="socks5").geturl(), rdns=remote_dns)
    target = urlsplit(url)
    assert target.hostname is not None and target.port is not None
    sock = await proxy.connect(target.hostname, target.port, timeout=CLIENT_TIMEOUT)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(f"GET {target.path} HTTP/1.0\r\nHost: {target.netloc}\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(CLIENT_TIMEOUT):
            raw = await reader.read()  # HTTP/1.0: the origin closes after the response
    finally:
        writer.close()
        await writer.wait_closed()
    status, body = parse_http_response(raw)
    assert status == 200, raw
    return body


def fetch_with_python_socks(proxy_url: str, url: str) -> bytes:
    return asyncio.run(get_with_python_socks(proxy_url, url))


@dataclass(frozen=True)
class Client:
    fetch: Callable[[str, str], bytes]
    #: what the client raises when the proxy rejects its credentials
    rejected: type[Exception]
    #: the client drops its socket to the proxy unclosed when the SOCKS handshake fails
    leaks_socket_on_failure: bool = False


CLIENTS = {
    # httpcore 1.0.9's SOCKSProxy never closes the stream if _init_socks5_connection() raises.
    "httpx": Client(fetch_with_httpx, httpx.ProxyError, leaks_socket_on_failure=True),
    "requests": Client(fetch_with_requests, requests.exceptions.ConnectionError),
    "python-socks": Client(fetch_with_python_socks, python_socks.ProxyError),
}

client_names = pytest.mark.parametrize("client_name", list(CLIENTS))


@client_names
@pytest.mark.parametrize(
    ("scheme", "origin_host", "url_host", "destination_host"),
    [
        pytest.param("socks5", "127.0.0.1", None, None, id="ipv4"),
        pytest.param("socks5", "::1", None, None, id="ipv6"),
        pytest.param("socks5h", "127.0.0.1", "localhost", "localhost", id="proxy-resolves"),
    ],
)
def test_python_client_fetches_through_the_proxy(
    socks_server, origins, client_name, scheme, origin_host, url_host, destination_host
) -> None:
    origin = origins[origin_host]
    body = CLIENTS[client_name].fetch(socks_server.url(scheme), origin.url(host=url_host))
    assert body == SMALL_BODY
    destination = (
        origin.destination if destination_host is None else f"{destination_host}:{origin.port}"
    )
    crossed_proxy(socks_server, destination, min_bytes_down=len(SMALL_BODY))


def test_requests_socks5_scheme_resolves_names_in_the_client(socks_server, origins) -> None:
    # PySocks without rdns resolves with gethostbyname(): IPv4, so the proxy sees 127.0.0.1.
    origin = origins["127.0.0.1"]
    body = fetch_with_requests(socks_server.url("socks5"), origin.url(host="localhost"))
    assert body == SMALL_BODY
    crossed_proxy(socks_server, origin.destination)


@client_names
def test_python_client_with_the_right_password_is_relayed_as_its_user(
    start_server, origins, client_name
) -> None:
    server = start_server(users={"alice": "secret"})
    origin = origins["127.0.0.1"]
    body = CLIENTS[client_name].fetch(server.url("socks5h", "alice", "secret"), origin.url())
    assert body == SMALL_BODY
    assert crossed_proxy(server, origin.destination)["user"] == "alice"


@client_names
def test_python_client_with_a_wrong_password_is_rejected(
    start_server, origins, client_name
) -> None:
    server = start_server(users={"alice": "secret"})
    client = CLIENTS[client_name]
    with pytest.raises(client.rejected) as excinfo:
        client.fetch(server.url("socks5h", "alice", "wrong"), origins["127.0.0.1"].url())
    if client.leaks_socket_on_failure:
        # Free the client's leaked socket now, quietly: its ResourceWarning is not ours, and
        # left to the garbage collector it would fail some later, unrelated test.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del excinfo
            gc.collect()
    record = only_record(server)
    assert record["outcome"].startswith("auth failed"), record
    assert record["user"] == "alice"


async def test_python_socks_opens_a_tunnel_from_a_running_event_loop(socks_server, origins) -> None:
    # The asyncio way in: a test coroutine on pytest-asyncio's loop, not asyncio.run().
    origin = origins["::1"]
    body = await get_with_python_socks(socks_server.url("socks5"), origin.url())
    assert body == SMALL_BODY
    record = await asyncio.to_thread(crossed_proxy, socks_server, origin.destination)
    assert record["command"] == "connect"
