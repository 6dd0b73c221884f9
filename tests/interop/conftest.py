"""Fixtures and helpers for driving real SOCKS clients against socks5d over loopback.

    def test_curl(socks_server, origins):
        origin = origins["127.0.0.1"]                      # or origins["::1"]
        result = curl("--socks5", socks_server.url(), origin.url("/small"))
        assert result.stdout == SMALL_BODY
        crossed_proxy(socks_server, origin.destination)    # the server's own proof of passage

Origins are threaded HTTP/1.0 servers on 127.0.0.1 and [::1] serving `SMALL_BODY` at /small
and a 50 MB deterministic body (`big_body`) at /big; `echo_server` echoes TCP for ncat.
Every client talks to loopback, and some clients silently skip the proxy for loopback
destinations, so a test that only checks the response proves nothing: `crossed_proxy()` waits
for the access record of a tunnel to the destination that succeeded and carried bytes.

The other way round, our client library against third-party servers (test_client_*.py):
`echo_through(host, port, proxy)` runs each face of our client (asyncio, blocking) against
`tcp_echoes` (one port on 127.0.0.1 and [::1]); `closed_port` refuses connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import pytest

from socks5d.client import aio, sync

from .tls_origin import tls_origin  # noqa: F401  (a fixture, registered here)

#: The body of GET /small.
SMALL_BODY = b"socks5d interop origin: the small body\n"
#: Size of the body of GET /big.
BIG_SIZE = 50 * 1024 * 1024
#: Chunk size for generating, serving and hashing the big body.
CHUNK_SIZE = 1024 * 1024
#: Upper bound for one run of an external tool; every test finishes well within it.
TOOL_TIMEOUT = 20.0
#: Seconds a handler thread waits on a silent peer before giving up.
HANDLER_TIMEOUT = 10.0

#: Environment variables that could make a client bypass or re-route the proxy under test
#: (NO_PROXY=127.0.0.1 would send curl straight to the origin) or preload something else.
_FOREIGN_ENV = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy", "ld_preload"}


class RecordingServer(Protocol):
    """What the helpers need of tests/conftest.py's `RunningServer`."""

    host: str
    port: int

    def wait_records(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Endpoint:
    """A loopback server: where it listens and how clients and the access log name it."""

    host: str
    port: int

    @property
    def netloc(self) -> str:
        """`127.0.0.1:PORT` or `[::1]:PORT`: also how the access log prints an IP destination."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def destination(self) -> str:
        """The access record's destination for a tunnel to this endpoint by address."""
        return self.netloc

    def url(self, path: str = "/small", host: str | None = None) -> str:
        """`http://NETLOC/path`; `host` (e.g. "localhost") replaces the address in the URL."""
        netloc = self.netloc if host is None else f"{host}:{self.port}"
        return f"http://{netloc}{path}"


@dataclass(frozen=True)
class BigBody:
    """The deterministic 50 MB body of GET /big."""

    path: Path
    size: int
    sha256: str


# --------------------------------------------------------------------------- servers


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Run `server.serve_forever()` on a thread; stop it and join the thread on exit."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(server).__name__
    )
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join()


class _QuietServerMixin:
    """Threaded servers whose handler threads are joined on close, and that stay quiet
    when a client hangs up early (a failing test's client may)."""

    daemon_threads = False  # server_close() joins every handler: no socket outlives a fixture
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[misc]


class _OriginHandler(BaseHTTPRequestHandler):
    """GET /small -> SMALL_BODY, GET /big -> the big body, anything else 404. HTTP/1.0:
    one request per connection, so a tunnel (and its access record) ends with the response."""

    server: OriginServer
    timeout = HANDLER_TIMEOUT

    def do_GET(self) -> None:
        if self.path == "/small":
            self._headers(len(SMALL_BODY), "text/plain")
            self.wfile.write(SMALL_BODY)
        elif self.path == "/big":
            body = self.server.big_body
            self._headers(body.size, "application/octet-stream")
            with body.path.open("rb") as source:
                shutil.copyfileobj(source, self.wfile, CHUNK_SIZE)
        else:
            self.send_error(404)

    def _headers(self, length: int, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the proxy's access log is the record that matters


class OriginServer(_QuietServerMixin, ThreadingHTTPServer):
    """The IPv4 HTTP origin."""

    def __init__(self, host: str, big_body: BigBody) -> None:
        self.big_body = big_body
        super().__init__((host, 0), _OriginHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(): a reverse DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class OriginServerV6(OriginServer):
    """The IPv6 HTTP origin."""

    address_family = socket.AF_INET6


class _EchoHandler(socketserver.BaseRequestHandler):
    request: socket.socket

    def setup(self) -> None:
        self.request.settimeout(HANDLER_TIMEOUT)

    def handle(self) -> None:
        while data := self.request.recv(CHUNK_SIZE):
            self.request.sendall(data)
        # on EOF socketserver shuts down writing and closes: the client sees our EOF


class EchoServer(_QuietServerMixin, socketserver.ThreadingTCPServer):
    """Echoes every byte back; half-closes after the client does."""


def _write_big_body(path: Path) -> BigBody:
    rng = random.Random(0x50C55D)
    digest = hashlib.sha256()
    with path.open("wb") as target:
        for _ in range(BIG_SIZE // CHUNK_SIZE):
            chunk = rng.randbytes(CHUNK_SIZE)
            target.write(chunk)
            digest.update(chunk)
    return BigBody(path, BIG_SIZE, digest.hexdigest())


@pytest.fixture(scope="session")
def big_body(tmp_path_factory: pytest.TempPathFactory) -> BigBody:
    """The 50 MB body of GET /big, written once per session, with its sha256."""
    return _write_big_body(tmp_path_factory.mktemp("origin") / "big.bin")


@pytest.fixture(scope="session")
def origins(big_body: BigBody) -> Iterator[dict[str, Endpoint]]:
    """HTTP origins keyed by their loopback address: `origins["127.0.0.1"]`, `origins["::1"]`."""
    with ExitStack() as stack:
        endpoints = {}
        for server_class, host in ((OriginServer, "127.0.0.1"), (OriginServerV6, "::1")):
            server = stack.enter_context(server_class(host, big_body))
            stack.enter_context(serving(server))
            endpoints[host] = Endpoint(host, server.server_address[1])
        yield endpoints


@pytest.fixture(scope="session")
def echo_server() -> Iterator[Endpoint]:
    """A TCP echo server on 127.0.0.1."""
    with EchoServer(("127.0.0.1", 0), _EchoHandler) as server, serving(server):
        yield Endpoint("127.0.0.1", server.server_address[1])


class EchoServerV6(EchoServer):
    """The TCP echo server on IPv6."""

    address_family = socket.AF_INET6


@pytest.fixture(scope="session")
def tcp_echoes() -> Iterator[dict[str, Endpoint]]:
    """TCP echo servers keyed by loopback address, both on one port: `tcp_echoes["::1"]`.

    One port for both, so that a connection to "localhost" is echoed whichever address it
    resolves to (here, or at the proxy).
    """
    for _ in range(10):
        v4 = EchoServer(("127.0.0.1", 0), _EchoHandler)
        port = v4.server_address[1]
        try:
            v6 = EchoServerV6(("::1", port), _EchoHandler)
        except OSError:  # ::1 port taken by someone else: try another port
            v4.server_close()
            continue
        with v4, v6, serving(v4), serving(v6):
            yield {"127.0.0.1": Endpoint("127.0.0.1", port), "::1": Endpoint("::1", port)}
        return
    pytest.fail("no TCP port free on both 127.0.0.1 and ::1")


# --------------------------------------------------------------------------- clients


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without proxy settings or preloads, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in _FOREIGN_ENV and not key.startswith("SOCKS")
    }
    env.update(extra or {})
    return env


def run_tool(
    args: Sequence[str],
    *,
    input: bytes = b"",
    env: Mapping[str, str] | None = None,
    timeout: float = TOOL_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run an external client with a clean environment (`env` added) and a hard timeout.

    A missing tool fails the test: interop that silently skips proves nothing.
    """
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} is not installed; scripts/test.sh installs it", pytrace=False)
    return subprocess.run(
        list(args), input=input, capture_output=True, env=clean_env(env), timeout=timeout
    )


def curl(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """curl ignoring ~/.curlrc (-q), quiet but showing errors, failing on HTTP errors."""
    return run_tool(curl_command(*args), env=env)


def curl_command(*args: str) -> list[str]:
    """The curl command line `curl()` runs, for wrapping in proxychains4 or socksify."""
    return ["curl", "-q", "--silent", "--show-error", "--fail", "--max-time", "15", *args]


def write_proxychains_conf(
    path: Path, server: RecordingServer, user: str | None = None, password: str | None = None
) -> Path:
    """A proxychains4 config sending every connection through `server` (and nothing else)."""
    credentials = f" {user} {password}" if user is not None else ""
    path.write_text(
        "strict_chain\n"
        "quiet_mode\n"
        "tcp_connect_time_out 8000\n"
        "tcp_read_time_out 15000\n"
        "[ProxyList]\n"
        f"socks5 {server.host} {server.port}{credentials}\n"
    )
    return path


def write_dante_conf(path: Path, server: RecordingServer, method: str = "none") -> Path:
    """A Dante client socks.conf routing every IPv4 destination through `server`.

    socksify still connects straight to "LAN" addresses (loopback included) unless
    SOCKS_AUTOADD_LANROUTES=no is set: see `socksify_env`.
    """
    path.write_text(
        "route {\n"
        f"    from: 0.0.0.0/0 to: 0.0.0.0/0 via: {server.host} port = {server.port}\n"
        "    proxyprotocol: socks_v5\n"
        f"    method: {method}\n"
        "}\n"
    )
    return path


def socksify_env(conf: Path, **extra: str) -> dict[str, str]:
    """Environment for `socksify`: our config, and no automatic direct routes for LANs."""
    return {"SOCKS_CONF": str(conf), "SOCKS_AUTOADD_LANROUTES": "no", **extra}


def parse_http_response(raw: bytes) -> tuple[int, bytes]:
    """Status code and body of a complete HTTP/1.x response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), body


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- proof of passage


def crossed_proxy(
    server: RecordingServer, destination: str, *, min_bytes_down: int = 1
) -> dict[str, Any]:
    """The access record of a tunnel to `destination` through `server`; waits for it.

    Asserts the tunnel succeeded and carried bytes both ways (at least `min_bytes_down` from
    the destination). Fails when no such record is logged within the wait timeout.
    """
    count = 1
    while True:
        records = server.wait_records(count)
        matching = [r for r in records if r["destination"] == destination]
        if matching:
            break
        count = len(records) + 1  # wait for the next record, not for time to pass
    record = matching[-1]
    assert record["reply"] == "succeeded", record
    assert record["bytes_up"] > 0, record
    assert record["bytes_down"] >= min_bytes_down, record
    return record


def proxy_netloc(server: RecordingServer) -> str:
    """`HOST:PORT` of the proxy, for options that take no URL (curl --socks5, ncat --proxy)."""
    return Endpoint(server.host, server.port).netloc


def only_record(server: RecordingServer) -> dict[str, Any]:
    """The access record of the one session a test made."""
    records = server.wait_records(1)
    assert len(records) == 1, records
    return records[0]


# --------------------------------------------------------------------------- UDP and Dante's sockd


class _UdpEchoHandler(socketserver.BaseRequestHandler):
    request: tuple[bytes, socket.socket]

    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class UdpEchoServer(socketserver.UDPServer):
    """Sends every datagram back to where it came from (IPv4)."""


class UdpEchoServerV6(UdpEchoServer):
    """The same on IPv6."""

    address_family = socket.AF_INET6


@pytest.fixture(scope="session")
def udp_echoes() -> Iterator[dict[str, Endpoint]]:
    """UDP echo servers keyed by loopback address, both on one port: `udp_echoes["::1"]`.

    One port for both, so that a datagram sent to "localhost" is echoed whichever address
    the proxy resolves it to.
    """
    for _ in range(10):
        v4 = UdpEchoServer(("127.0.0.1", 0), _UdpEchoHandler)
        port = v4.server_address[1]
        try:
            v6 = UdpEchoServerV6(("::1", port), _UdpEchoHandler)
        except OSError:  # ::1 port taken by someone else: try another port
            v4.server_close()
            continue
        with v4, v6, serving(v4), serving(v6):
            yield {"127.0.0.1": Endpoint("127.0.0.1", port), "::1": Endpoint("::1", port)}
        return
    pytest.fail("no UDP port free on both 127.0.0.1 and ::1")


@pytest.fixture
def dante_server(tmp_path: Path) -> Iterator[Any]:
    """Dante's sockd on 127.0.0.1 (see proxies.py): `.port`, `.wait_log(regex)`."""
    from .proxies import DanteServer  # proxies.py imports this module

    directory = tmp_path / "sockd"
    directory.mkdir()
    server = DanteServer(directory).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["socks5d", "dante"])
def proxy(request: pytest.FixtureRequest) -> Any:
    """Each SOCKS server in turn, as a `proxies.ProxyUnderTest`: socks5d (no auth) and sockd."""
    from .proxies import Socks5dUnderTest

    if request.param == "dante":
        return request.getfixturevalue("dante_server")
    return Socks5dUnderTest(request.getfixturevalue("socks_server"))


# --------------------------------------------------------------------------- our client library

#: Seconds our client may take to reach a proxy, finish a handshake, or wait for an answer.
CLIENT_TIMEOUT = 10.0
#: What the client-library tests send through a tunnel to an echo server.
PAYLOAD = b"socks5d client library, through a third-party proxy\n"


async def _echo_with_aio(host: str, port: int, proxy: Any) -> bytes:
    reader, writer = await aio.open_connection(host, port, proxy=proxy, timeout=CLIENT_TIMEOUT)
    try:
        writer.write(PAYLOAD)
        await writer.drain()
        async with asyncio.timeout(CLIENT_TIMEOUT):
            return await reader.readexactly(len(PAYLOAD))
    finally:
        writer.close()
        await writer.wait_closed()


def echo_with_aio(host: str, port: int, proxy: Any) -> bytes:
    """Send PAYLOAD to an echo server at `host`:`port` through `proxy` (a URL or a chain of
    them) with `socks5d.client.open_connection`, return what comes back; closes the tunnel.
    """
    return asyncio.run(_echo_with_aio(host, port, proxy))


def echo_with_sync(host: str, port: int, proxy: Any) -> bytes:
    """The same with the blocking `socks5d.client.sync.create_connection`."""
    with sync.create_connection((host, port), CLIENT_TIMEOUT, proxy=proxy) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.sendall(PAYLOAD)
        received = b""
        while len(received) < len(PAYLOAD) and (chunk := sock.recv(len(PAYLOAD))):
            received += chunk
        return received


#: The two faces of our client, behind one blocking signature: (host, port, proxy) -> echo.
ECHO_CLIENTS = {"aio": echo_with_aio, "sync": echo_with_sync}


@pytest.fixture(params=sorted(ECHO_CLIENTS))
def echo_through(request: pytest.FixtureRequest) -> Any:
    """Each face of our client in turn (`aio`, `sync`): `echo_through(host, port, proxy)`."""
    return ECHO_CLIENTS[request.param]


@pytest.fixture
def closed_port() -> Iterator[Endpoint]:
    """A loopback port that refuses connections: bound, never listening, held for the test
    so that nobody else can take it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield Endpoint("127.0.0.1", holder.getsockname()[1])
