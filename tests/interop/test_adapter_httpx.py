"""httpx through socks5d's transports (`socks5d.client.httpx`): `SocksTransport` for
`httpx.Client`, `AsyncSocksTransport` for `httpx.AsyncClient` under asyncio and trio.

Against socks5d and Dante (`proxy`): HTTPS to the test origin with its certificate checked
against the test CA through the tunnel (and refused with a context that does not trust it),
keep-alive over one pooled tunnel. Against socks5d: plain HTTP, a chain of two, a URL and a
`Proxy` with user/password, HTTP/2 to a hypercorn origin, and how a proxy's refusals and
silences come out as httpx's exceptions. Every response is backed by the proxy's own record
of the tunnel: a client could go direct on loopback.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import trio
import trustme

from socks5d.client.httpx import AsyncSocksTransport, SocksTransport
from socks5d.errors import AuthFailed, ConnectionRefused, ProxyTimeout
from socks5d.proxies import Proxy

from .conftest import SMALL_BODY, Endpoint, crossed_proxy
from .proxies import Crossing
from .tls_origin import HELLO_BODY, TlsOrigin

pytestmark = pytest.mark.timeout(60)

#: httpx's timeout for every request (and our handshake with the proxy).
CLIENT_TIMEOUT = 10.0
#: The ways in: the blocking transport, the async one under asyncio and under trio.
FACES = ("sync", "asyncio", "trio")


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class Fetched:
    """What a response said."""

    status: int
    http_version: str
    content: bytes


def _fetched(response: httpx.Response) -> Fetched:
    return Fetched(response.status_code, response.http_version, response.content)


def fetch(face: str, proxy: Any, urls: list[str], **options: Any) -> list[Fetched]:
    """GET each of `urls` in turn with one client (one pool) through `proxy`, by `face`;
    `options` go to the transport. The client is closed on return."""
    if face == "sync":
        transport = SocksTransport(proxy, **options)
        with httpx.Client(transport=transport, timeout=CLIENT_TIMEOUT) as client:
            return [_fetched(client.get(url)) for url in urls]

    async def main() -> list[Fetched]:
        transport = AsyncSocksTransport(proxy, **options)
        async with httpx.AsyncClient(transport=transport, timeout=CLIENT_TIMEOUT) as client:
            return [_fetched(await client.get(url)) for url in urls]

    if face == "trio":
        return trio.run(main)
    return asyncio.run(main())


faces = pytest.mark.parametrize("face", FACES)


def origin_of(error: httpx.HTTPError) -> BaseException | None:
    """What httpcore's error (the cause of httpx's) was raised for: its cause, or its
    context where httpcore's pool re-raised it `from None`."""
    core = error.__cause__
    assert core is not None, error
    return core.__cause__ or core.__context__


# --------------------------------------------------------------------------- proof of passage


def crossed(proxy: Any, port: int) -> Crossing:
    """The proxy's record of a tunnel to localhost:`port`: socks5d logs the name it was
    sent, Dante the address it resolved it to."""
    host = "localhost" if proxy.name == "socks5d" else "127.0.0.1"
    return proxy.connected(Endpoint(host, port))


def sessions(proxy: Any) -> int:
    """The CONNECT sessions the proxy has logged as ended so far."""
    if proxy.name == "socks5d":
        return sum(record["command"] == "connect" for record in proxy.server.wait_records(0))
    return sum("tcp/connect ]:" in line for line in proxy.log().splitlines())


def through(proxy: Any) -> str:
    """The socks5h:// URL of `proxy`: names go to the proxy, which resolves them."""
    return f"socks5h://{proxy.host}:{proxy.port}"


# --------------------------------------------------------------------------- HTTPS, pooling


@faces
def test_https_get_verifies_the_origin_against_the_test_ca_through_the_proxy(
    face: str, proxy: Any, tls_origin: TlsOrigin
) -> None:
    verify = tls_origin.client_context()

    [response] = fetch(face, through(proxy), [tls_origin.url("/hello")], verify=verify)

    assert (response.status, response.http_version) == (200, "HTTP/1.1")
    assert response.content == HELLO_BODY
    crossing = crossed(proxy, tls_origin.port)
    assert crossing.bytes_up > 0 and crossing.bytes_down > len(HELLO_BODY)  # TLS records


@faces
def test_a_context_that_does_not_trust_the_test_ca_fails_verification_through_the_proxy(
    face: str, proxy: Any, tls_origin: TlsOrigin
) -> None:
    untrusting = ssl.create_default_context()  # the system's CAs, not the test CA

    with pytest.raises(httpx.ConnectError) as excinfo:
        fetch(face, through(proxy), [tls_origin.url("/hello")], verify=untrusting)

    # httpx's ConnectError <- httpcore's <- the handshake's verdict on the certificate
    assert isinstance(excinfo.value.__cause__, httpcore.ConnectError)
    assert isinstance(origin_of(excinfo.value), ssl.SSLCertVerificationError)
    # The handshake crossed the tunnel: the origin's certificate came down it, and the
    # client refused it.
    assert crossed(proxy, tls_origin.port).bytes_down > 0


@faces
def test_two_requests_share_one_pooled_tunnel(face: str, proxy: Any, tls_origin: TlsOrigin) -> None:
    url = tls_origin.url("/hello")

    responses = fetch(face, through(proxy), [url, url], verify=tls_origin.client_context())

    assert [(r.status, r.content) for r in responses] == [(200, HELLO_BODY)] * 2
    assert tls_origin.connections() == 1  # keep-alive: one TCP connection at the origin
    crossed(proxy, tls_origin.port)  # the one session ended when the client closed
    assert sessions(proxy) == 1


@pytest.mark.parametrize(
    ("scheme", "origin_host", "url_host", "destination"),
    [
        pytest.param("socks5h", "127.0.0.1", "localhost", "localhost", id="proxy-resolves"),
        pytest.param("socks5", "::1", None, "[::1]", id="ipv6-literal"),
    ],
)
@faces
def test_plain_http_goes_through_the_proxy(
    face: str,
    scheme: str,
    origin_host: str,
    url_host: str | None,
    destination: str,
    socks_server: Any,
    origins: dict[str, Endpoint],
) -> None:
    origin = origins[origin_host]

    [response] = fetch(face, socks_server.url(scheme), [origin.url("/small", host=url_host)])

    assert (response.status, response.content) == (200, SMALL_BODY)
    crossed_proxy(socks_server, f"{destination}:{origin.port}", min_bytes_down=len(SMALL_BODY))


async def test_async_transport_in_a_running_event_loop(proxy: Any, tls_origin: TlsOrigin) -> None:
    # pytest-asyncio's loop, not asyncio.run(): the transport as an application uses it.
    transport = AsyncSocksTransport(through(proxy), verify=tls_origin.client_context())
    async with httpx.AsyncClient(transport=transport, timeout=CLIENT_TIMEOUT) as client:
        response = await client.get(tls_origin.url("/hello"))
        assert response.content == HELLO_BODY
    await asyncio.to_thread(crossed, proxy, tls_origin.port)


# --------------------------------------------------------------------------- proxy forms


@faces
def test_a_chain_of_two_proxies_carries_the_request(
    face: str, start_server: Callable[..., Any], tls_origin: TlsOrigin
) -> None:
    first, second = start_server(), start_server()
    chain = [first.url("socks5h"), Proxy("127.0.0.1", second.port)]

    [response] = fetch(face, chain, [tls_origin.url("/hello")], verify=tls_origin.client_context())

    assert response.content == HELLO_BODY
    crossed_proxy(first, f"127.0.0.1:{second.port}")  # the first hop reached the second
    crossed_proxy(second, f"localhost:{tls_origin.port}")  # which reached the origin


@pytest.mark.parametrize("form", ["url", "proxy-object"])
@faces
def test_the_right_password_is_relayed_as_its_user(
    face: str, form: str, start_server: Callable[..., Any], tls_origin: TlsOrigin
) -> None:
    server = start_server(users={"alice": "secret"})
    proxy: Any = server.url("socks5h", "alice", "secret")
    if form == "proxy-object":
        proxy = Proxy("127.0.0.1", server.port, username="alice", password="secret")

    [response] = fetch(face, proxy, [tls_origin.url("/hello")], verify=tls_origin.client_context())

    assert response.content == HELLO_BODY
    assert crossed_proxy(server, f"localhost:{tls_origin.port}")["user"] == "alice"


@faces
def test_a_wrong_password_is_a_proxy_error(
    face: str, start_server: Callable[..., Any], tls_origin: TlsOrigin
) -> None:
    server = start_server(users={"alice": "secret"})

    with pytest.raises(httpx.ProxyError) as excinfo:
        fetch(face, server.url("socks5h", "alice", "wrong"), [tls_origin.url("/hello")])

    assert isinstance(origin_of(excinfo.value), AuthFailed)
    assert server.wait_records(1)[0]["outcome"].startswith("auth failed")
    assert tls_origin.connections() == 0


# --------------------------------------------------------------------------- errors


@faces
def test_a_destination_the_proxy_cannot_reach_is_a_proxy_error(
    face: str, socks_server: Any, closed_port: Endpoint
) -> None:
    with pytest.raises(httpx.ProxyError) as excinfo:
        fetch(face, socks_server.url("socks5h"), [closed_port.url("/")])

    assert isinstance(origin_of(excinfo.value), ConnectionRefused)  # X'05'
    assert socks_server.wait_records(1)[0]["reply"] == "connection_refused"


@faces
def test_a_proxy_that_cannot_be_reached_is_a_connect_error(
    face: str, closed_port: Endpoint
) -> None:
    with pytest.raises(httpx.ConnectError) as excinfo:
        fetch(face, f"socks5h://{closed_port.netloc}", ["https://localhost/"])

    assert isinstance(origin_of(excinfo.value), ConnectionRefusedError)


@faces
def test_a_proxy_that_never_answers_is_a_connect_timeout(face: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), says nothing
        url = f"socks5h://127.0.0.1:{silent.getsockname()[1]}"
        # httpx's connect timeout bounds the handshake with the proxy
        with pytest.raises(httpx.ConnectTimeout) as excinfo:
            fetch_with_timeout(face, url, "https://localhost/", httpx.Timeout(10.0, connect=0.5))

    assert isinstance(origin_of(excinfo.value), ProxyTimeout)


def fetch_with_timeout(face: str, proxy: str, url: str, timeout: httpx.Timeout) -> None:
    if face == "sync":
        with httpx.Client(transport=SocksTransport(proxy), timeout=timeout) as client:
            client.get(url)
        return

    async def main() -> None:
        transport = AsyncSocksTransport(proxy)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            await client.get(url)

    if face == "trio":
        trio.run(main)
    else:
        asyncio.run(main())


def test_a_transport_with_neither_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="http1 and http2"):
        SocksTransport("socks5h://127.0.0.1:1080", http1=False, http2=False)


def test_something_that_is_not_a_proxy_is_refused_at_once() -> None:
    with pytest.raises(TypeError, match="proxy must be"):
        AsyncSocksTransport(None)  # type: ignore[arg-type]


def test_importing_the_client_library_does_not_import_httpx() -> None:
    code = (
        "import sys, socks5d.client, socks5d.client.sync\n"
        "assert not {'httpx', 'httpcore'} & set(sys.modules), 'imported'\n"
        "import socks5d.client.httpx\n"
        "assert 'httpx' in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr.decode()


# --------------------------------------------------------------------------- HTTP/2


@dataclass(frozen=True)
class H2Origin:
    """A hypercorn origin over TLS offering h2 by ALPN: its answer is the HTTP version the
    server saw and the port the connection came from ("2 41234")."""

    port: int
    ca_file: Path

    def url(self) -> str:
        return f"https://localhost:{self.port}/version"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


async def _version_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: every request is answered with the HTTP version it came in and the client's
    port (the proxy's end of the connection): one port for two requests, one connection."""
    if scope["type"] == "lifespan":  # "lifespan.startup", later "lifespan.shutdown"
        while True:
            phase = (await receive())["type"]
            await send({"type": f"{phase}.complete"})
            if phase == "lifespan.shutdown":
                return
    body = f"{scope['http_version']} {scope['client'][1]}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def h2_origin(tmp_path: Path) -> Iterator[H2Origin]:
    """hypercorn on 127.0.0.1 with a test certificate for localhost, on its own thread and
    event loop; stopped (and its thread joined) after the test."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    ca = trustme.CA()
    pem = tmp_path / "h2-origin.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_file = tmp_path / "h2-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # Listening before the server starts: a client that connects early waits in the backlog.
    listener = socket.create_server(("127.0.0.1", 0))
    config = Config()
    config.bind = [f"fd://{os.dup(listener.fileno())}"]  # hypercorn owns (and closes) the dup
    config.certfile = config.keyfile = str(pem)
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = config.errorlog = None
    config.graceful_timeout = 1.0
    started = threading.Event()
    loop_and_stop: list[Any] = []

    async def run() -> None:
        stop = asyncio.Event()
        loop_and_stop.extend([asyncio.get_running_loop(), stop])
        started.set()
        await serve(_version_app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="hypercorn")
    thread.start()
    try:
        assert started.wait(CLIENT_TIMEOUT), "hypercorn's thread did not start"
        yield H2Origin(listener.getsockname()[1], ca_file)
    finally:
        if loop_and_stop:
            loop, stop = loop_and_stop
            loop.call_soon_threadsafe(stop.set)
        thread.join(CLIENT_TIMEOUT)
        listener.close()
        assert not thread.is_alive(), "hypercorn did not stop"


@faces
def test_http2_is_negotiated_with_the_origin_through_the_tunnel(
    face: str, socks_server: Any, h2_origin: H2Origin
) -> None:
    url = h2_origin.url()

    responses = fetch(
        face,
        socks_server.url("socks5h"),
        [url, url],
        verify=h2_origin.client_context(),
        http2=True,
    )

    # The client's view and the server's: HTTP/2 both, both requests on one connection.
    assert [r.http_version for r in responses] == ["HTTP/2"] * 2
    versions, ports = zip(*(r.content.split() for r in responses), strict=True)
    assert versions == (b"2", b"2") and ports[0] == ports[1]
    crossed_proxy(socks_server, f"localhost:{h2_origin.port}")


def test_without_http2_the_same_origin_speaks_http1(socks_server: Any, h2_origin: H2Origin) -> None:
    [response] = fetch(
        "sync", socks_server.url("socks5h"), [h2_origin.url()], verify=h2_origin.client_context()
    )

    assert response.http_version == "HTTP/1.1"
    assert response.content.split()[0] == b"1.1"
