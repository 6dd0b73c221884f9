"""The asyncio client's bridges over per-message protection (RFC 1961 §5): a local socket pair
whose far end the relay's protected engine connects to the protected connection, so that
code that takes a plain socket works unchanged. Kept per event loop until they end.
"""

from __future__ import annotations

import asyncio
import math
import socket
import weakref

from socks5d.client.handshake import Link
from socks5d.relay import RelayResult, Tunnel
from socks5d.relay.protected import ProtectedEngine

#: Bridges to protected proxies, kept until they end, by event loop.
_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[Tunnel]] = (
    weakref.WeakKeyDictionary()
)


async def end_bridges() -> None:
    """End the protection bridges of this event loop (`bridge`) and wait until they have:
    for a program that ends, a server closing its routed sessions."""
    bridges = list(_bridges.get(asyncio.get_running_loop(), ()))
    for bridge in bridges:
        bridge.abort()
    await asyncio.gather(*(bridge.wait() for bridge in bridges))


def bridge(sock: socket.socket, link: Link) -> socket.socket:
    """A local socket standing for the protected connection `sock`: what is written to it is
    wrapped on its way to the proxy, what the proxy sends is unwrapped (RFC 1961 §5). The
    bridge (the relay's protected engine) runs until both sides are done.
    """
    assert link.protection is not None
    mine, theirs = socket.socketpair()
    for end in (mine, theirs):
        end.setblocking(False)

    bridges = _bridges.setdefault(asyncio.get_running_loop(), set())

    def done(_result: RelayResult) -> None:
        bridges.discard(tunnel)
        sock.close()
        theirs.close()

    tunnel = ProtectedEngine(link.protection).start(
        sock,
        theirs,
        idle_timeout=math.inf,
        early_data=link.connection.trailing_data,
        done=done,
    )
    bridges.add(tunnel)
    return mine
