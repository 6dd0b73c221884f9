"""The protected relay engine: the portable engine with RFC 1961 per-message protection
(GSS-API wrap / unwrap) on the client's side. Used by the server for a protected session and
by the client library for its bridge to a local socket.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from socks5d.relay.portable import READ_SIZE, PortableEngine, TunnelState
from socks5d.relay.seam import shutdown_write

if TYPE_CHECKING:
    from socks5d.gss import Protection


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
        self, client: socket.socket, upstream: socket.socket, tunnel: TunnelState, early_data: bytes
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
                shutdown_write(upstream)
                return

    async def _down(
        self, upstream: socket.socket, client: socket.socket, tunnel: TunnelState
    ) -> None:
        loop = asyncio.get_running_loop()
        result = tunnel.result
        seal = self.protection.seal
        size = self.protection.max_plaintext
        while True:
            data = await loop.sock_recv(upstream, size)
            if not data:
                shutdown_write(client)
                return
            await loop.sock_sendall(client, seal(data))
            tunnel.last_activity = loop.time()
            result.bytes_down += len(data)
