"""The portable relay engine: asyncio socket calls (`sock_recv` / `sock_sendall`) in one task
per direction. Works on every platform and event loop; copies every byte through Python, so
it is also the base of the engines that must see the bytes (`protected.ProtectedEngine`).

It keeps the promises of the seam (`socks5d.relay`): read -> write -> read again
(backpressure), EOF passed on as a half-close, done when both directions are, idle timeout.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable

from socks5d.errors import Socks5Error
from socks5d.relay.seam import DoneCallback, RelayResult, Tunnel, shutdown_write

#: Bytes read per receive call.
READ_SIZE = 64 * 1024


class _IdleTimeout(Exception):
    pass


class TunnelState:
    """What a running portable tunnel keeps: its result so far, and when bytes last moved."""

    __slots__ = ("last_activity", "result")

    def __init__(self, now: float) -> None:
        self.result = RelayResult()
        self.last_activity = now


class _TaskTunnel:
    """A relay coroutine running as a task."""

    __slots__ = ("result", "task")

    def __init__(self, run: Awaitable[None], result: RelayResult, done: DoneCallback) -> None:
        self.result = result
        self.task = asyncio.ensure_future(self._run(run, result, done))

    @staticmethod
    async def _run(run: Awaitable[None], result: RelayResult, done: DoneCallback) -> None:
        try:
            await run
        except asyncio.CancelledError:  # abort(): the counts so far, and why it ended
            result.reason = "server closing"
        done(result)

    def abort(self) -> None:
        self.task.cancel()

    async def wait(self) -> None:
        await asyncio.wait([self.task])


class PortableEngine:
    """asyncio socket calls (`sock_recv` / `sock_sendall`); works everywhere, copies bytes."""

    def start(
        self,
        client: socket.socket,
        upstream: socket.socket,
        *,
        idle_timeout: float,
        early_data: bytes,
        done: DoneCallback,
    ) -> Tunnel:
        tunnel = TunnelState(asyncio.get_running_loop().time())
        run = self._run(tunnel, client, upstream, idle_timeout, early_data)
        return _TaskTunnel(run, tunnel.result, done)

    async def _run(
        self,
        tunnel: TunnelState,
        client: socket.socket,
        upstream: socket.socket,
        idle_timeout: float,
        early_data: bytes,
    ) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                up = group.create_task(self._up(client, upstream, tunnel, early_data))
                down = group.create_task(self._down(upstream, client, tunnel))
                group.create_task(self._watch(tunnel, idle_timeout, up, down))
        except* _IdleTimeout:
            tunnel.result.reason = "idle timeout"
        except* (OSError, Socks5Error) as group_error:
            tunnel.result.reason = f"error: {group_error.exceptions[0]}"

    async def _up(
        self, client: socket.socket, upstream: socket.socket, tunnel: TunnelState, early_data: bytes
    ) -> None:
        """Client to destination, `early_data` first."""
        await self._pump(client, upstream, tunnel, True, early_data)

    async def _down(
        self, upstream: socket.socket, client: socket.socket, tunnel: TunnelState
    ) -> None:
        """Destination to client."""
        await self._pump(upstream, client, tunnel, False, b"")

    @staticmethod
    async def _pump(
        source: socket.socket,
        target: socket.socket,
        tunnel: TunnelState,
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
                shutdown_write(target)
                return

    def close(self) -> None:
        """Nothing is kept between tunnels."""

    @staticmethod
    async def _watch(
        tunnel: TunnelState, idle_timeout: float, *directions: asyncio.Task[None]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = tunnel.last_activity + idle_timeout - loop.time()
            if remaining <= 0:
                raise _IdleTimeout
            _, pending = await asyncio.wait(directions, timeout=remaining)
            if not pending:
                return
