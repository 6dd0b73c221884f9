"""The relay seam: what every engine takes and returns (`RelayEngine`, `Tunnel`,
`RelayResult`), and `relay()`, which awaits any engine's tunnel to its end. The engines import
this module, and the package (`socks5d.relay`) re-exports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


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

    #: the counts so far, updated by the engine as bytes move (read it, never write it)
    result: RelayResult

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
    started: Callable[[Tunnel], None] | None = None,
) -> RelayResult:
    """Relay with `engine` until both directions are done; cancelling ends the tunnel.
    `started` is given the tunnel once it runs (to read its counts while it lasts)."""
    finished: asyncio.Future[RelayResult] = asyncio.get_running_loop().create_future()

    def done(result: RelayResult) -> None:
        if not finished.done():
            finished.set_result(result)

    tunnel = engine.start(
        client, upstream, idle_timeout=idle_timeout, early_data=early_data, done=done
    )
    if started is not None:
        started(tunnel)
    try:
        return await finished
    finally:
        if not finished.done():  # cancelled: end the tunnel before the sockets are closed
            tunnel.abort()
            await tunnel.wait()


def shutdown_write(sock: socket.socket) -> None:
    """Half-close: pass an EOF on by shutting down writing on `sock`."""
    # OSError: already reset or closed by the peer, nothing left to flush
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
