"""Fixtures of the client tests: destinations on loopback and scripted fake proxies.

    def test_something(socks_server, tcp_echo, udp_echo, http_origin, fake_proxy): ...
    host, port = tcp_echo()                        # echoes until EOF; tcp_echo("::1", banner=b"")
    host, port = udp_echo()                        # answers every datagram with itself
    proxy = fake_proxy(script)                     # script(side) plays the proxy's part
    proxy.url("socks5h")

Our server (`socks_server`, `start_server`) covers what a real proxy does; a fake proxy says
what ours never would (every failure REP, X'FF', SOCKS4 rejections, closing mid-message).
Everything runs on threads with blocking sockets, so asyncio and blocking tests share it, and
every socket is closed at teardown (a leaked one is a ResourceWarning, an error here).
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from server.conftest import start_server_with_resolver  # noqa: F401  (a fixture, re-exported)
from sockets import read_until_eof as read_until_eof  # re-exported for the tests here
from sockets import recv_exactly as recv_exactly
from socks5d.proto import NEED_DATA, DomainName, Event, ServerConnection
from socks5d.server.connect import Target, system_resolver

if TYPE_CHECKING:
    from .faces import Face

#: Seconds any blocking socket call of a helper thread may take before it gives up.
IO_TIMEOUT = 5.0
#: How often a socketserver checks for shutdown: its teardown waits at most this long.
POLL_INTERVAL = 0.02
#: The body of the HTTP origin's answer (deterministic, several TCP segments long).
HTTP_BODY = bytes(range(256)) * 400
#: An HTTP/1.0 request for the origin (which closes the connection after answering).
HTTP_REQUEST = b"GET /through/socks HTTP/1.0\r\nHost: origin.test\r\n\r\n"
#: What a destination that speaks first (SMTP, SSH) sends the moment it accepts.
BANNER = b"220 destination.test ESMTP ready\r\n"
#: (scheme, host in the request, protocol in the record) for the destination name `localhost`:
#: resolved by the proxy (socks5h, socks4a) or by the client (socks5, socks4).
NAME_SCHEMES = [
    ("socks5h", "localhost", "socks5"),
    ("socks5", "127.0.0.1", "socks5"),
    ("socks4a", "localhost", "socks4a"),
    ("socks4", "127.0.0.1", "socks4"),
]


async def records_of(server: Any, count: int = 1) -> list[dict[str, Any]]:
    """`server.wait_records(count)` off the event loop, for asyncio tests."""
    records: list[dict[str, Any]] = await asyncio.to_thread(server.wait_records, count)
    return records


def fetch(address: tuple[str, int], request: bytes) -> bytes:
    """Send `request` straight to `address`, half-close, and return the whole response."""
    with socket.create_connection(address, timeout=IO_TIMEOUT) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return read_until_eof(sock)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SpyResolver:
    """The system resolver, remembering every (name, port) the server asked it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, name: DomainName, port: int) -> list[Target]:
        self.asked.append((str(name), port))
        return await system_resolver(name, port)


def _serve(server: socketserver.BaseServer) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, daemon=True
    )
    thread.start()
    return thread


# --- TCP echo ---------------------------------------------------------------------------------


class _EchoHandler(socketserver.BaseRequestHandler):
    """Sends the server's banner at once (a destination that speaks first), then echoes."""

    server: _EchoServer

    def handle(self) -> None:
        self.request.settimeout(IO_TIMEOUT)
        if self.server.banner:
            self.request.sendall(self.server.banner)
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    banner = b""


class _Echo6Server(_EchoServer):
    address_family = socket.AF_INET6


@pytest.fixture
def tcp_echo() -> Iterator[Callable[..., tuple[str, int]]]:
    """Factory: `tcp_echo(host="127.0.0.1", banner=b"")` -> (host, port) of a TCP echo."""
    running: list[tuple[_EchoServer, threading.Thread]] = []

    def start(host: str = "127.0.0.1", banner: bytes = b"") -> tuple[str, int]:
        server_class = _Echo6Server if ":" in host else _EchoServer
        server = server_class((host, 0), _EchoHandler)
        server.banner = banner
        running.append((server, _serve(server)))
        return host, server.server_address[1]

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()  # joins the handler threads
        thread.join(IO_TIMEOUT)


# --- UDP echo ---------------------------------------------------------------------------------


class _UdpEchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


@pytest.fixture
def udp_echo() -> Iterator[Callable[[], tuple[str, int]]]:
    """Factory: `udp_echo()` -> (host, port) of a UDP echo on 127.0.0.1."""
    running: list[tuple[socketserver.UDPServer, threading.Thread]] = []

    def start() -> tuple[str, int]:
        server = socketserver.UDPServer(("127.0.0.1", 0), _UdpEchoHandler)
        running.append((server, _serve(server)))
        return "127.0.0.1", server.server_address[1]

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(IO_TIMEOUT)


# --- HTTP origin ------------------------------------------------------------------------------


class _OriginHandler(BaseHTTPRequestHandler):
    """HTTP/1.0 (one response, then close) with a fixed Date, so two fetches are identical."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(HTTP_BODY)))
        self.send_header("X-Path", self.path)
        self.end_headers()
        self.wfile.write(HTTP_BODY)

    def date_time_string(self, timestamp: float | None = None) -> str:
        return "Thu, 01 Jan 2026 00:00:00 GMT"

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_origin() -> Iterator[tuple[str, int]]:
    """(host, port) of an HTTP server on 127.0.0.1 answering every GET with `HTTP_BODY`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OriginHandler)
    thread = _serve(server)
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(IO_TIMEOUT)


# --- fake proxies -----------------------------------------------------------------------------


class ProxySide:
    """The fake proxy's end of one client connection.

    `receive()` reads the client's next message with the server codec, one octet at a time
    (so it never takes more than that message); `answer()` sends a well-formed message, and
    `send()` raw bytes: RFC fixtures from `vectors`, or whatever breaks the protocol.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.codec = ServerConnection(accept_socks4=True)
        #: every message the client sent, in order
        self.received: list[Event] = []

    def receive(self) -> Event:
        while (event := self.codec.next_event()) is NEED_DATA:
            self.codec.receive_data(self.sock.recv(1))
        assert not isinstance(event, type(NEED_DATA))
        self.received.append(event)
        return event

    def answer(self, message: Event) -> None:
        """Send a well-formed answer through the codec (which moves on to the next state)."""
        self.sock.sendall(self.codec.send(message))

    def send(self, data: bytes) -> None:
        """Write raw bytes; the codec is not told, so this is the script's last word."""
        self.sock.sendall(data)

    def wait_for_close(self) -> bytes:
        """Everything else the client sends, until it closes the connection.

        A client that gives up on a protocol error may leave our answer unread, and closing
        with unread data sends a reset: that counts as closing too.
        """
        data = bytearray()
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return bytes(data)


Script = Callable[[ProxySide], None]


class FakeProxy:
    """A one-connection SOCKS proxy on 127.0.0.1 whose part is played by `script` on a thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(IO_TIMEOUT)
        self.port: int = self.listener.getsockname()[1]
        self.side: ProxySide | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def url(self, scheme: str = "socks5", user: str | None = None, password: str = "") -> str:
        credentials = f"{user}:{password}@" if user is not None else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Event]:
        """The client's messages, once the script is done."""
        self.thread.join(IO_TIMEOUT)
        assert self.side is not None, "the client never connected"
        return self.side.received

    def _run(self) -> None:
        try:
            connection, _ = self.listener.accept()
            with connection:
                connection.settimeout(IO_TIMEOUT)
                self.side = ProxySide(connection)
                self.script(self.side)
        except BaseException as exc:  # reported at teardown
            self.error = exc

    def close(self) -> None:
        self.thread.join(IO_TIMEOUT)
        self.listener.close()
        assert not self.thread.is_alive(), "the fake proxy's script did not finish"
        if self.error is not None:
            raise self.error


@pytest.fixture
def fake_proxy() -> Iterator[Callable[[Script], FakeProxy]]:
    """Factory: `fake_proxy(script)`; the script's own failures fail the test at teardown."""
    proxies: list[FakeProxy] = []

    def start(script: Script) -> FakeProxy:
        proxy = FakeProxy(script)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def silent_proxy() -> Iterator[str]:
    """The URL of a proxy that accepts connections (the kernel does) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"socks5://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(params=("aio", "sync"))
def face(request: pytest.FixtureRequest) -> Face:
    """The asyncio client, then the blocking one, behind one interface (`faces.Face`)."""
    from .faces import Face  # faces.py imports this module's helpers

    return Face(request.param)
