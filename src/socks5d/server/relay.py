"""Moving bytes between the client and the destination; nothing else in socks5d does.

The seam: an engine takes two connected non-blocking sockets (and bytes the client sent ahead
of the reply), relays until both directions are done or the tunnel is idle too long, and
returns a `RelayResult`. `select_engine()` is the one place an engine is chosen; a zero-copy
or a wrapping (GSS-API) engine plugs in there without touching the session.

Every engine keeps these promises: both directions run concurrently; a direction reads again
only after everything it read was written (backpressure: at most one read per direction is in
memory); EOF on one side shuts down writing on the other (half-close) and the tunnel ends when
both directions have ended; no traffic either way for `idle_timeout` seconds ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Protocol

#: Bytes read per receive call.
READ_SIZE = 64 * 1024


@dataclass(slots=True)
class RelayResult:
    """What a finished relay reports."""

    #: bytes from the client to the destination
    bytes_up: int = 0
    #: bytes from the destination to the client
    bytes_down: int = 0
    #: why it ended: "closed", "idle timeout", or "error: ..."
    reason: str = "closed"


class RelayEngine(Protocol):
    """The relay seam."""

    async def relay(
        self,
        client: socket.socket,
        upstream: socket.socket,
        *,
        idle_timeout: float,
        early_data: bytes = b"",
    ) -> RelayResult:
        """Relay until both directions are done; the caller closes the sockets."""
        ...


class _IdleTimeout(Exception):
    pass


def _shutdown_write(sock: socket.socket) -> None:
    # OSError: already reset or closed by the peer, nothing left to flush
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class _Tunnel:
    __slots__ = ("last_activity", "result")

    def __init__(self, now: float) -> None:
        self.result = RelayResult()
        self.last_activity = now


class PortableEngine:
    """asyncio socket calls (`sock_recv` / `sock_sendall`); works everywhere, copies bytes."""

    async def relay(
        self,
        client: socket.socket,
        upstream: socket.socket,
        *,
        idle_timeout: float,
        early_data: bytes = b"",
    ) -> RelayResult:
        loop = asyncio.get_running_loop()
        tunnel = _Tunnel(loop.time())
        try:
            async with asyncio.TaskGroup() as group:
                up = group.create_task(self._pump(client, upstream, tunnel, True, early_data))
                down = group.create_task(self._pump(upstream, client, tunnel, False, b""))
                group.create_task(self._watch(tunnel, idle_timeout, up, down))
        except* _IdleTimeout:
            tunnel.result.reason = "idle timeout"
        except* OSError as group_error:
            tunnel.result.reason = f"error: {group_error.exceptions[0]}"
        return tunnel.result

    @staticmethod
    async def _pump(
        source: socket.socket,
        target: socket.socket,
        tunnel: _Tunnel,
        upward: bool,
        early_data: bytes,
    ) -> None:
        loop = asyncio.get_running_loop()
        result = tunnel.result
        data = early_data
        while True:
            if data:
                await loop.sock_sendall(target, data)
                tunnel.last_activity = loop.time()
                if upward:
                    result.bytes_up += len(data)
                else:
                    result.bytes_down += len(data)
            data = await loop.sock_recv(source, READ_SIZE)
            if not data:
                _shutdown_write(target)
                return

    @staticmethod
    async def _watch(tunnel: _Tunnel, idle_timeout: float, *directions: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = tunnel.last_activity + idle_timeout - loop.time()
            if remaining <= 0:
                raise _IdleTimeout
            _, pending = await asyncio.wait(directions, timeout=remaining)
            if not pending:
                return


def select_engine() -> RelayEngine:
    """The engine for a plain tunnel on this platform."""
    return PortableEngine()
