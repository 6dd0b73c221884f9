"""An HTTPS origin on loopback with a test certificate authority, for the HTTP-library adapter
tests (httpx, aiohttp, requests): the client verifies the origin's certificate through the
tunnel, against the test CA only.

    def test_something(tls_origin, proxy):
        url = tls_origin.url("/hello")                   # https://localhost:PORT/hello
        context = tls_origin.client_context()            # trusts the test CA, nothing else
        tls_origin.ca_file                               # the CA as a PEM file (requests)
        assert response.body == HELLO_BODY
        proxy.connected(tls_origin.endpoint)             # Dante's proof of passage (by
                                                         # address; socks5d records localhost)
        tls_origin.connections()                         # TCP connections the origin accepted

The server speaks HTTP/1.1 with keep-alive, so a pooled client sends two requests over one
tunnel (`connections()` counts one; the proxy logs one session). Its certificate names
`localhost` and 127.0.0.1; the tests use `localhost`, so the name crosses the proxy (socks5h)
and is what the certificate is checked against.
"""

from __future__ import annotations

import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: The body of GET /hello.
HELLO_BODY = b"hello from the TLS origin, through the tunnel\n"
#: Seconds a handler waits on a silent client.
HANDLER_TIMEOUT = 10.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a pooled client reuses the connection
    server: _TlsServer
    timeout = HANDLER_TIMEOUT

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.accepted += 1

    def do_GET(self) -> None:
        if self.path != "/hello":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(HELLO_BODY)))
        self.end_headers()
        self.wfile.write(HELLO_BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.accepted = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no reverse lookup of our own address
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(HANDLER_TIMEOUT)
        return self.context.wrap_socket(sock, server_side=True), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up or fails verification is the test's business


@dataclass
class TlsOrigin:
    """The running HTTPS origin and its test CA."""

    port: int
    ca_file: Path
    _ca: Any
    _server: _TlsServer = field(repr=False)

    @property
    def endpoint(self) -> Any:
        """The origin as the interop tests' `Endpoint` (for `proxy.connected`)."""
        from .conftest import Endpoint

        return Endpoint("127.0.0.1", self.port)

    def url(self, path: str = "/hello", host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA and nothing else."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context

    def connections(self) -> int:
        """TCP connections whose TLS handshake succeeded so far (the handshake runs before
        a connection is counted)."""
        with self._server.lock:
            return self._server.accepted


@pytest.fixture
def tls_origin(tmp_path: Path) -> Iterator[TlsOrigin]:
    """A fresh HTTPS origin on 127.0.0.1 (certificate for localhost and 127.0.0.1)."""
    import trustme

    ca = trustme.CA()
    certificate = ca.issue_cert("localhost", "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certificate.configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    ca_file = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = _TlsServer(context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield TlsOrigin(server.server_address[1], ca_file, ca, server)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
