"""The worker control channel under `--workers`: how the admin process asks a worker for its
metrics and its open sessions.

Each worker number has one listening AF_UNIX stream socket, made by the supervisor in a
private directory before the fork (a replacement worker inherits its number's socket). The
worker serves it inside its event loop (`serve_control`); the admin process asks with `ask`.
A conversation is one request line and one JSON answer, then the worker closes:

    metrics        -> server.metrics_snapshot()
    sessions N     -> server.session_list(N)

Requests are bounded (one short line, read against a deadline), answers are built from what
the server holds already: nothing here blocks the relay or waits on a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: The longest request line, newline included.
MAX_REQUEST = 64
#: The most sessions one `sessions N` request may list.
MAX_SESSIONS = 10_000
#: The longest answer `ask` reads (a session list of MAX_SESSIONS is well below).
MAX_ANSWER = 64 * 1024 * 1024
#: Seconds a client of the control socket gets to send its request line.
REQUEST_TIMEOUT = 5.0


#: How many connections may wait for a worker to accept them (one scrape asks once).
BACKLOG = 16


class ControlSockets:
    """One listening control socket per worker number 1 to `count`, in a private (0700)
    temporary directory; the supervisor's, removed by `close`.

    Raises:
        OSError: the directory or a socket cannot be made.
    """

    def __init__(self, count: int) -> None:
        self.directory = tempfile.mkdtemp(prefix="socks5d-control-")  # mode 0700
        self.sockets: dict[int, socket.socket] = {}
        self.paths: dict[int, str] = {}
        try:
            for number in range(1, count + 1):
                path = os.path.join(self.directory, f"worker-{number}.sock")
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sockets[number] = sock
                sock.bind(path)
                sock.listen(BACKLOG)
                self.paths[number] = path
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


class Observed(Protocol):
    """What a worker's control endpoint reads: a `Server`."""

    def metrics_snapshot(self) -> dict[str, Any]: ...

    def session_list(self, limit: int) -> list[dict[str, Any]]: ...


class BadRequest(ValueError):
    """A request line the control channel does not know."""


def answer(server: Observed, line: bytes) -> Any:
    """The JSON-serialisable answer to one request line.

    Raises:
        BadRequest: neither `metrics` nor `sessions N` (N a whole number from 0).
    """
    words = line.decode("ascii", "replace").split()
    if words == ["metrics"]:
        return server.metrics_snapshot()
    if len(words) == 2 and words[0] == "sessions" and words[1].isdigit():
        return server.session_list(min(int(words[1]), MAX_SESSIONS))
    raise BadRequest(f"unknown control request {line[:MAX_REQUEST]!r}")


async def _converse(
    server: Observed, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                line = await reader.readuntil(b"\n")
            data = json.dumps(answer(server, line), separators=(",", ":")).encode()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            log.warning("control request not read: %s", type(exc).__name__)
            return
        except BadRequest as exc:
            log.warning("%s", exc)
            data = json.dumps({"error": str(exc)}).encode()
        writer.write(data + b"\n")
        await writer.drain()
    except OSError as exc:  # the admin process gave up (its deadline) or went away
        log.debug("control answer not sent: %s", exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serve_control(server: Observed, sock: socket.socket) -> AsyncIterator[None]:
    """Answer the control requests arriving on `sock` (a listening AF_UNIX stream socket)
    while the block runs; the worker's copy of `sock` is closed at the end."""
    tasks: set[asyncio.Task[None]] = set()

    async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _converse(server, reader, writer)
        finally:
            tasks.discard(task)

    sock.setblocking(False)
    # The path is the supervisor's: a worker that stops must not unlink it (Python 3.13
    # would), the worker that replaces it serves the same socket.
    keep_path: dict[str, Any] = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}
    endpoint = await asyncio.start_unix_server(converse, sock=sock, limit=MAX_REQUEST, **keep_path)
    try:
        yield
    finally:
        endpoint.close()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await endpoint.wait_closed()


async def ask(path: str, request: str) -> Any:
    """Send `request` to the control socket at `path`; its decoded JSON answer. The caller
    bounds the time (the admin process's deadline).

    Raises:
        OSError: no worker accepts there (it died, or is being replaced).
        ValueError: the answer is not JSON, or is an error.
    """
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(request.encode("ascii") + b"\n")
        await writer.drain()
        data = bytearray()
        while chunk := await reader.read(65536):
            data += chunk
            if len(data) > MAX_ANSWER:
                raise ValueError(f"control answer from {path} above {MAX_ANSWER} bytes")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    result = json.loads(data)
    if isinstance(result, dict) and set(result) == {"error"}:
        raise ValueError(f"control: {result['error']}")
    return result
