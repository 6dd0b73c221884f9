"""The admin HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (200 `ok`, 503
`draining`), `/sessions` (JSON list of the open sessions, `?limit=N`).

A small HTTP/1.1 server on the event loop, for probes and scrapers only: GET and HEAD, one
request per connection (`Connection: close`), the request line and headers bounded
(`MAX_REQUEST`), read within `REQUEST_TIMEOUT` seconds, and at most `MAX_CONNECTIONS` at once.
Each bad request is answered where HTTP still can be, logged, and closed. What it serves comes
from an `AdminSource`: one `Server` (`LocalSource`), or several workers' merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from socks5d.config import ListenAddress
from socks5d.net import format_peer
from socks5d.server.exposition import CONTENT_TYPE, INSTALL_HINT, MetricsUnavailable, render
from socks5d.server.listen import Server
from socks5d.server.stats import merge_snapshots

log = logging.getLogger(__name__)

#: The most bytes of request line and headers read; more is answered 431.
MAX_REQUEST = 8 * 1024
#: Seconds a client has to send its whole request.
REQUEST_TIMEOUT = 5.0
#: Admin connections served at once; more are closed at once.
MAX_CONNECTIONS = 32
#: `/sessions` without `?limit=`, and the most it accepts.
DEFAULT_SESSION_LIMIT = 100
MAX_SESSION_LIMIT = 10_000
#: What a connection may ask.
METHODS = ("GET", "HEAD")


class AdminSource(Protocol):
    """What the endpoint serves."""

    async def metrics(self) -> dict[str, Any]:
        """A merged snapshot (server/stats.py)."""
        ...

    async def sessions(self, limit: int) -> list[dict[str, Any]]:
        """At most `limit` open sessions, oldest first (`Server.session_list`)."""
        ...

    def draining(self) -> bool:
        """True once a drain began."""
        ...


class LocalSource:
    """The `AdminSource` of one `Server` (on the same event loop)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def metrics(self) -> dict[str, Any]:
        return merge_snapshots([self.server.metrics_snapshot()])

    async def sessions(self, limit: int) -> list[dict[str, Any]]:
        return self.server.session_list(limit)

    def draining(self) -> bool:
        return self.server.draining


class _BadRequest(Exception):
    """A request answered with an error status."""

    def __init__(self, status: HTTPStatus, why: str) -> None:
        super().__init__(why)
        self.status = status


class _Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    def encode(self, *, head: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else self.body)


def _text(status: HTTPStatus, text: str) -> _Response:
    return _Response(status, text.encode())


def parse_request_line(line: bytes) -> tuple[str, str]:
    """The method and target of an HTTP/1.x request line.

    Raises:
        _BadRequest: 400 for a malformed line, 405 for a method other than GET and HEAD.
    """
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, f"malformed request line {line[:80]!r}")
    method, target, _ = parts
    if method not in METHODS:
        raise _BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"method {method[:20]!r}")
    return method, target


def session_limit(query: str) -> int:
    """`?limit=N` of `/sessions`: 1 to `MAX_SESSION_LIMIT`, default `DEFAULT_SESSION_LIMIT`.

    Raises:
        _BadRequest: 400 for anything else.
    """
    values = parse_qs(query, keep_blank_values=True).get("limit")
    if not values:
        return DEFAULT_SESSION_LIMIT
    text = values[-1]
    if len(values) != 1 or not text.isdigit() or not 1 <= int(text) <= MAX_SESSION_LIMIT:
        raise _BadRequest(
            HTTPStatus.BAD_REQUEST, f"limit must be 1 to {MAX_SESSION_LIMIT}, not {text[:20]!r}"
        )
    return int(text)


class AdminServer:
    """The admin endpoint on `address` (or on `sock`, an already bound listening socket).

    async with AdminServer(ListenAddress("127.0.0.1", 9180), LocalSource(server)) as admin:
        ...  # admin.address: the real (host, port)
    """

    def __init__(
        self,
        address: ListenAddress,
        source: AdminSource,
        *,
        sock: socket.socket | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.listen = address
        self.source = source
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the endpoint listens on."""
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        """Listen and serve in the background."""
        if self._sock is not None:
            self._server = await asyncio.start_server(
                self._serve, sock=self._sock, limit=MAX_REQUEST
            )
        else:
            self._server = await asyncio.start_server(
                self._serve, self.listen.host, self.listen.port, limit=MAX_REQUEST
            )
        log.info("admin endpoint on %s", format_peer(self.address))

    async def close(self) -> None:
        """Stop listening and end every admin connection."""
        if self._server is not None:
            self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> AdminServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = format_peer(writer.get_extra_info("peername"))
        if len(self._handlers) >= self.max_connections:
            log.warning("admin: closed %s: %d connections already", peer, len(self._handlers))
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._answer(reader, writer, peer)
        except OSError as exc:
            log.info("admin: %s: %s", peer, exc)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        head = False
        try:
            try:
                async with asyncio.timeout(self.request_timeout):
                    request = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                log.warning("admin: %s sent no whole request in %gs", peer, self.request_timeout)
                return  # too slow to deserve an answer
            except asyncio.LimitOverrunError:
                raise _BadRequest(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"request headers over {MAX_REQUEST} bytes",
                ) from None
            except asyncio.IncompleteReadError:
                log.info("admin: %s closed before a whole request", peer)
                return
            method, target = parse_request_line(request.partition(b"\r\n")[0])
            head = method == "HEAD"
            try:
                response = await self._route(target)
            except (_BadRequest, asyncio.CancelledError):
                raise
            except Exception:  # the source failed (a worker gone): say so, keep serving
                log.exception("admin: %s: %s failed", peer, target[:80])
                response = _text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")
        except _BadRequest as exc:
            log.warning("admin: %s: %s %s", peer, exc.status.value, exc)
            headers = (("Allow", ", ".join(METHODS)),)
            extra = headers if exc.status == HTTPStatus.METHOD_NOT_ALLOWED else ()
            response = _Response(exc.status, f"{exc}\n".encode(), headers=extra)
        writer.write(response.encode(head=head))
        await writer.drain()

    async def _route(self, target: str) -> _Response:
        url = urlsplit(target)
        if url.path == "/metrics":
            try:
                body = render(await self.source.metrics())
            except MetricsUnavailable:
                log.warning("admin: /metrics needs prometheus-client (%s)", INSTALL_HINT)
                return _text(
                    HTTPStatus.NOT_IMPLEMENTED,
                    f"/metrics needs the prometheus-client package, {INSTALL_HINT}\n",
                )
            return _Response(HTTPStatus.OK, body, CONTENT_TYPE)
        if url.path == "/healthz":
            if self.source.draining():
                return _text(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
            return _text(HTTPStatus.OK, "ok\n")
        if url.path == "/sessions":
            limit = session_limit(url.query)
            body = json.dumps(await self.source.sessions(limit)).encode() + b"\n"
            return _Response(HTTPStatus.OK, body, "application/json")
        raise _BadRequest(HTTPStatus.NOT_FOUND, f"no such path {url.path[:80]!r}")


#: The admin endpoint's listen backlog.
BACKLOG = 64


def bind_admin(address: ListenAddress) -> socket.socket:
    """The admin endpoint's listening socket, bound by the supervisor before it forks.

    Raises:
        OSError: it cannot be bound; the message names the address.
    """
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise OSError(f"cannot listen on {address} (admin.listen): {exc}") from exc
    return sock
