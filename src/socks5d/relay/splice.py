"""The zero-copy relay engine (Linux): splice(2) moves bytes socket -> pipe -> socket inside
the kernel, driven by the event loop's readiness callbacks; no task and no buffer per
direction, and a pipe only while bytes are in flight (idle tunnels hold none).

Imported only when the engine is built (`socks5d.relay.ENGINES`): it needs `fcntl` and
`os.splice`, which other platforms lack.
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import os
import socket

from socks5d.relay.seam import DoneCallback, RelayResult, Tunnel, shutdown_write

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
            shutdown_write(self.sockets[1 - direction])

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
