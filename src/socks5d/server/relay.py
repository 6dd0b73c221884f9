"""Moving bytes between the client and the destination; nothing else in socks5d does.

The seam: an engine takes two connected non-blocking sockets (and bytes the client sent ahead
of the reply), relays until both directions are done or the tunnel is idle too long, and
returns a `RelayResult`. `select_engine()` is the one place an engine is chosen; the session
never knows which one runs.

Engines:
- `SpliceEngine` (Linux, the default there): zero-copy. Bytes go socket -> pipe -> socket with
  splice(2) inside the kernel, driven by the event loop's readiness callbacks; no task and no
  buffer per direction, and a pipe only while bytes are in flight (idle tunnels hold none).
- `PortableEngine`: `sock_recv` / `sock_sendall`; everywhere, and for relays that must see the
  bytes.
- `ProtectedEngine`: the portable engine wrapping and unwrapping GSS-API per-message tokens on
  the client's side (RFC 1961 §5); one per protected session.

Every engine keeps these promises: both directions run concurrently; a direction reads again
only after everything it read was written (backpressure: at most one read per direction is in
memory); EOF on one side shuts down writing on the other (half-close) and the tunnel ends when
both directions have ended; no traffic either way for `idle_timeout` seconds ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from socks5d.errors import Socks5Error

if TYPE_CHECKING:
    from socks5d.gss import Protection

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


class Tunnel(Protocol):
    """A relay started with `RelayEngine.start`."""

    def abort(self) -> None:
        """End the relay now (the server is closing); `done` still gets called."""
        ...

    async def wait(self) -> None:
        """Return once the relay has ended and `done` was called."""
        ...


#: Called once with the result when a started relay ends.
DoneCallback = Callable[[RelayResult], None]


class RelayEngine(Protocol):
    """The relay seam. `start` runs a tunnel in the background and reports through `done`, so
    the caller (a CONNECT session) needs no task of its own while the tunnel lasts;
    `relay()` below awaits one to its end.
    """

    def start(
        self,
        client: socket.socket,
        upstream: socket.socket,
        *,
        idle_timeout: float,
        early_data: bytes,
        done: DoneCallback,
    ) -> Tunnel:
        """Start relaying; `done(result)` is called once when it ends. The caller closes the
        sockets after that.
        """
        ...

    def close(self) -> None:
        """Free what the engine keeps between tunnels (the server is closing)."""
        ...


async def relay(
    engine: RelayEngine,
    client: socket.socket,
    upstream: socket.socket,
    *,
    idle_timeout: float,
    early_data: bytes = b"",
) -> RelayResult:
    """Relay with `engine` until both directions are done; cancelling ends the tunnel."""
    finished: asyncio.Future[RelayResult] = asyncio.get_running_loop().create_future()

    def done(result: RelayResult) -> None:
        if not finished.done():
            finished.set_result(result)

    tunnel = engine.start(
        client, upstream, idle_timeout=idle_timeout, early_data=early_data, done=done
    )
    try:
        return await finished
    finally:
        if not finished.done():  # cancelled: end the tunnel before the sockets are closed
            tunnel.abort()
            await tunnel.wait()


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


class _TaskTunnel:
    """A relay coroutine running as a task."""

    __slots__ = ("task",)

    def __init__(self, run: Awaitable[None], result: RelayResult, done: DoneCallback) -> None:
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
        tunnel = _Tunnel(asyncio.get_running_loop().time())
        run = self._run(tunnel, client, upstream, idle_timeout, early_data)
        return _TaskTunnel(run, tunnel.result, done)

    async def _run(
        self,
        tunnel: _Tunnel,
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
        self, client: socket.socket, upstream: socket.socket, tunnel: _Tunnel, early_data: bytes
    ) -> None:
        """Client to destination, `early_data` first."""
        await self._pump(client, upstream, tunnel, True, early_data)

    async def _down(self, upstream: socket.socket, client: socket.socket, tunnel: _Tunnel) -> None:
        """Destination to client."""
        await self._pump(upstream, client, tunnel, False, b"")

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

    def close(self) -> None:
        """Nothing is kept between tunnels."""

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


class ProtectedEngine(PortableEngine):
    """The portable engine with RFC 1961 per-message protection on the client's side: what
    the client sends is unwrapped before it goes on, what comes back is wrapped before the
    client gets it. Tokens do not line up with reads (`Protection.open` keeps the part of a
    token that has not arrived); one read from the destination is at most one token's worth,
    so backpressure holds as in the portable engine. One engine per protected connection.

    The client library uses it too, with the proxy as `client` and a local socket as
    `upstream`.
    """

    def __init__(self, protection: Protection) -> None:
        self.protection = protection

    async def _up(
        self, client: socket.socket, upstream: socket.socket, tunnel: _Tunnel, early_data: bytes
    ) -> None:
        loop = asyncio.get_running_loop()
        result = tunnel.result
        protection = self.protection
        open_ = protection.open
        data = early_data
        while True:
            if data:
                await loop.sock_sendall(upstream, data)
                tunnel.last_activity = loop.time()
                result.bytes_up += len(data)
            protection.check()  # a bad token after the ones just delivered
            wire = await loop.sock_recv(client, READ_SIZE)
            data = open_(wire)  # b"" at EOF, unless the stream ended inside a token: raises
            if not wire:
                _shutdown_write(upstream)
                return

    async def _down(self, upstream: socket.socket, client: socket.socket, tunnel: _Tunnel) -> None:
        loop = asyncio.get_running_loop()
        result = tunnel.result
        seal = self.protection.seal
        size = self.protection.max_plaintext
        while True:
            data = await loop.sock_recv(upstream, size)
            if not data:
                _shutdown_write(client)
                return
            await loop.sock_sendall(client, seal(data))
            tunnel.last_activity = loop.time()
            result.bytes_down += len(data)


#: splice(2) flags: move pages rather than copy; never block (the sockets are non-blocking too).
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
#: Pipe capacity asked for with F_SETPIPE_SZ: one splice moves up to this much.
PIPE_SIZE = 1024 * 1024
#: Empty pipes kept for the next burst; more are closed.
PIPE_POOL_SIZE = 64
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: The context the idle timers run in: one shared, not a copy per timer (tunnels set no
#: context variables).
_CONTEXT = contextvars.Context()


class _PipePool:
    """Empty non-blocking pipes, lent to a direction for one burst and given back empty."""

    __slots__ = ("free", "size")

    def __init__(self) -> None:
        self.free: list[tuple[int, int]] = []
        self.size = PIPE_SIZE

    def take(self) -> tuple[int, int]:
        if self.free:
            return self.free.pop()
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, self.size)
        except OSError:  # EPERM above /proc/sys/fs/pipe-max-size: keep what the kernel gives
            self.size = min(self.size, fcntl.fcntl(write_end, 1032))  # F_GETPIPE_SZ
        return read_end, write_end

    def give_back(self, pipe: tuple[int, int], *, empty: bool) -> None:
        if empty and len(self.free) < PIPE_POOL_SIZE:
            self.free.append(pipe)
        else:  # bytes left inside (the tunnel failed), or the pool is full
            os.close(pipe[0])
            os.close(pipe[1])

    def close(self) -> None:
        while self.free:
            read_end, write_end = self.free.pop()
            os.close(read_end)
            os.close(write_end)


class _SpliceTunnel:
    """Both directions of one tunnel, as readiness callbacks. The states of a direction:
    reading (a reader on its source, no pipe), writing (a writer on its target and a pipe
    holding `pending` bytes; the source is not read: backpressure), done. An idle tunnel is
    this object, two readers and a timer: no task, no coroutine, no pipe.
    """

    __slots__ = (
        "client",
        "done",
        "early",
        "ended",
        "idle_timeout",
        "last_activity",
        "loop",
        "pending",
        "pipes",
        "pool",
        "result",
        "sockets",
        "timer",
        "upstream",
        "waiter",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: _PipePool,
        client: socket.socket,
        upstream: socket.socket,
        idle_timeout: float,
        done: DoneCallback,
    ) -> None:
        self.loop = loop
        self.pool = pool
        self.sockets = (client, upstream)
        self.client = client.fileno()
        self.upstream = upstream.fileno()
        self.idle_timeout = idle_timeout
        self.done = done
        self.result = RelayResult()
        # per direction, index 0 = up (client -> upstream), 1 = down
        self.pipes: list[tuple[int, int] | None] = [None, None]
        self.pending = [0, 0]
        #: bit 1 << direction: that direction has passed its EOF on; 4: the whole tunnel ended
        self.ended = 0
        #: bytes the client sent before the tunnel, still to be written upstream
        self.early = b""
        self.waiter: asyncio.Future[None] | None = None
        self.last_activity = loop.time()
        self.timer = loop.call_at(
            self.last_activity + idle_timeout, self._check_idle, context=_CONTEXT
        )

    def begin(self, early_data: bytes) -> None:
        """Start both directions; the client's direction after `early_data` is written."""
        self.loop.add_reader(self.upstream, self._readable, 1)
        self.early = early_data
        self._send_early()

    def _send_early(self) -> None:
        if self.early:
            try:
                sent = self.sockets[1].send(self.early)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.fail(exc)
                return
            self.result.bytes_up += sent
            self.early = self.early[sent:]
            if self.early:
                self.loop.add_writer(self.upstream, self._send_early)
                return
            self.loop.remove_writer(self.upstream)
        self.loop.add_reader(self.client, self._readable, 0)

    def _ends(self, direction: int) -> tuple[int, int]:
        if direction == 0:
            return self.client, self.upstream
        return self.upstream, self.client

    def _readable(self, direction: int) -> None:
        source, target = self._ends(direction)
        try:
            pipe = self.pipes[direction]
            if pipe is None:
                pipe = self.pipes[direction] = self.pool.take()
            count = os.splice(source, pipe[1], self.pool.size, flags=SPLICE_FLAGS)
        except BlockingIOError:
            self._release_pipe(direction)
            return
        except OSError as exc:
            self.fail(exc)
            return
        self.last_activity = self.loop.time()
        if count == 0:
            self.loop.remove_reader(source)
            self._release_pipe(direction)
            self._end_direction(direction)
            return
        self.pending[direction] = count
        if not self._flush(direction, pipe, target) and not self.ended & 4:
            # the target is full: stop reading, wait until it can take more
            self.loop.remove_reader(source)
            self.loop.add_writer(target, self._writable, direction)

    def _writable(self, direction: int) -> None:
        source, target = self._ends(direction)
        pipe = self.pipes[direction]
        assert pipe is not None
        self.last_activity = self.loop.time()
        if self._flush(direction, pipe, target):
            self.loop.remove_writer(target)
            self.loop.add_reader(source, self._readable, direction)

    def _flush(self, direction: int, pipe: tuple[int, int], target: int) -> bool:
        """Move the pipe's bytes to `target`; True when the pipe is empty again."""
        pending = self.pending[direction]
        while pending:
            try:
                count = os.splice(pipe[0], target, pending, flags=SPLICE_FLAGS)
            except BlockingIOError:
                break
            except OSError as exc:
                self.pending[direction] = pending
                self.fail(exc)
                return False
            pending -= count
            if direction == 0:
                self.result.bytes_up += count
            else:
                self.result.bytes_down += count
        self.pending[direction] = pending
        if pending:
            return False
        self._release_pipe(direction)
        return True

    def _release_pipe(self, direction: int) -> None:
        pipe = self.pipes[direction]
        if pipe is not None:
            self.pipes[direction] = None
            self.pool.give_back(pipe, empty=not self.pending[direction])

    def _end_direction(self, direction: int) -> None:
        """The source sent EOF and everything before it was written: pass the EOF on."""
        self.ended |= 1 << direction
        if self.ended & 3 == 3:
            # Both sides sent EOF and were read to the end: the close that follows `done`
            # sends the last FIN, so no shutdown call is needed for it.
            self._finish("closed")
        else:
            _shutdown_write(self.sockets[1 - direction])

    def fail(self, exc: OSError) -> None:
        self._finish(f"error: {exc}")

    def _check_idle(self) -> None:
        deadline = self.last_activity + self.idle_timeout
        if self.loop.time() >= deadline:
            self._finish("idle timeout")
        else:
            self.timer = self.loop.call_at(deadline, self._check_idle, context=_CONTEXT)

    def abort(self) -> None:
        self._finish("server closing")

    async def wait(self) -> None:
        if not self.ended & 4:
            self.waiter = self.loop.create_future()
            await self.waiter

    def _finish(self, reason: str) -> None:
        """End the tunnel: drop every callback and pipe, then report. Runs once."""
        if self.ended & 4:
            return
        self.timer.cancel()
        loop = self.loop
        for direction in (0, 1):
            if not self.ended & (1 << direction):
                source, target = self._ends(direction)
                loop.remove_reader(source)
                if self.pending[direction]:
                    loop.remove_writer(target)
            self._release_pipe(direction)
        if self.early:
            loop.remove_writer(self.upstream)
        self.ended |= 4
        self.result.reason = reason
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        self.done(self.result)


class SpliceEngine:
    """Zero-copy relay with splice(2) (Linux). Bytes the client sent ahead of the tunnel
    (`early_data`) are written with an ordinary send first.
    """

    def __init__(self) -> None:
        self._pool = _PipePool()

    def start(
        self,
        client: socket.socket,
        upstream: socket.socket,
        *,
        idle_timeout: float,
        early_data: bytes,
        done: DoneCallback,
    ) -> Tunnel:
        loop = asyncio.get_running_loop()
        tunnel = _SpliceTunnel(loop, self._pool, client, upstream, idle_timeout, done)
        tunnel.begin(early_data)
        return tunnel

    @property
    def pooled_pipes(self) -> int:
        """Empty pipes kept for reuse (two descriptors each)."""
        return len(self._pool.free)

    def close(self) -> None:
        """Close the pooled pipes."""
        self._pool.close()


#: `relay` setting -> engine class.
ENGINES: dict[str, type[PortableEngine] | type[SpliceEngine]] = {
    "portable": PortableEngine,
    "splice": SpliceEngine,
}


def splice_available() -> bool:
    """True where the zero-copy engine works: Linux with os.splice (Python 3.10+)."""
    return sys.platform.startswith("linux") and hasattr(os, "splice")


def select_engine(name: str = "auto") -> RelayEngine:
    """The engine called `name` ("splice", "portable"), or for "auto" the fastest that works
    here.

    Raises:
        ValueError: "splice" asked for where splice(2) is missing.
    """
    if name == "auto":
        name = "splice" if splice_available() else "portable"
    if name == "splice" and not splice_available():
        raise ValueError("relay = splice needs Linux (splice(2))")
    return ENGINES[name]()
