"""The asyncio SOCKS client: CONNECT (streams or a socket), BIND, UDP ASSOCIATE, chains.

reader, writer = await open_connection("example.org", 443, proxy="socks5h://127.0.0.1:1080",
                                       ssl=True)
sock = await connect("example.org", 80, proxy=["socks5://a:1080", "socks5h://b:1080"])
binding = await open_bind("peer.example", 0, proxy=url)   # binding.address: where to connect
reader, writer = await binding.accept()                   # once the peer has connected
async with await open_udp(proxy=url) as udp:              # (aio_udp.py)
    await udp.sendto(b"query", ("198.51.100.7", 53))
    data, (host, port) = await udp.recvfrom()
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module

from socks5d.client.aio_udp import UdpEndpoint as UdpEndpoint
from socks5d.client.aio_udp import open_udp as open_udp
from socks5d.client.aio_walk import drive, through_chain
from socks5d.client.bridges import bridge
from socks5d.client.handshake import second_reply
from socks5d.client.route import BindingBase, HostPort
from socks5d.client.wire import DEFAULT_TIMEOUT
from socks5d.errors import ProxyTimeout, Socks5Error
from socks5d.proto import Address, Command
from socks5d.proxies import ProxyLike, as_chain


async def connect(
    host: str, port: int, *, proxy: ProxyLike | list[ProxyLike], timeout: float = DEFAULT_TIMEOUT
) -> socket.socket:
    """A non-blocking socket connected to `host`:`port` through `proxy` (one, or a chain).

    Raises:
        Socks5Error: the subclass for the proxy's reply (e.g. `ConnectionRefused` for X'05'),
            `AuthFailed`, `RequestRejected` (SOCKS4), `ProxyTimeout` or `ProtocolError`.
        OSError: the first proxy cannot be reached.
    """
    sock, link, _ = await through_chain(as_chain(proxy), Command.CONNECT, host, port, timeout)
    return sock if link.protection is None else bridge(sock, link)


async def tunnel(
    host: str, port: int, *, proxy: ProxyLike | list[ProxyLike], timeout: float = DEFAULT_TIMEOUT
) -> tuple[socket.socket, Address]:
    """As `connect`, and the last proxy's BND.ADDR/BND.PORT (its outbound end, when it says;
    the unspecified address from an HTTP proxy)."""
    sock, link, bound = await through_chain(as_chain(proxy), Command.CONNECT, host, port, timeout)
    return (sock if link.protection is None else bridge(sock, link)), bound


async def open_connection(
    host: str,
    port: int,
    *,
    proxy: ProxyLike | list[ProxyLike],
    ssl: ssl_module.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    limit: int = 2**16,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like `asyncio.open_connection`, through `proxy`: with `ssl` (True for the default
    context, or an `SSLContext`), TLS to the destination inside the tunnel, its certificate
    checked against `server_hostname` (by default `host`). Raises as `connect` does, and
    `ssl.SSLError` when the destination's TLS handshake fails.
    """
    sock = await connect(host, port, proxy=proxy, timeout=timeout)
    try:
        if not ssl:
            return await asyncio.open_connection(sock=sock, limit=limit)
        return await asyncio.open_connection(
            sock=sock,
            limit=limit,
            ssl=ssl,
            server_hostname=host if server_hostname is None else server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
        )
    except BaseException:
        sock.close()
        raise


class Binding(BindingBase):
    """A BIND in progress: `address` is where the proxy listens; `accept()` waits for the
    peer and gives streams, `accept_socket()` a non-blocking socket.
    """

    async def accept_socket(self, timeout: float | None = None) -> socket.socket:
        """Wait for the second reply; return the socket, now connected to the peer."""
        try:
            async with asyncio.timeout(timeout):
                self.peer = HostPort.of(await drive(second_reply(), self._at))
        except TimeoutError as exc:
            self.close()
            if isinstance(exc, Socks5Error):
                raise  # TTLExpired: the proxy's own BIND timeout
            raise ProxyTimeout("no incoming connection in time") from None
        except BaseException:
            self.close()
            raise
        return self._connected(bridge)

    async def accept(
        self, timeout: float | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Wait for the second reply; return a stream pair connected to the peer."""
        sock = await self.accept_socket(timeout)
        try:
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise


async def open_bind(
    host: str,
    port: int,
    *,
    proxy: ProxyLike | list[ProxyLike],
    timeout: float = DEFAULT_TIMEOUT,
) -> Binding:
    """Ask the (last) proxy to listen for one connection from `host` (0.0.0.0: anyone).

    Returns once the proxy listens: `binding.address` says where; `await binding.accept()`.
    """
    sock, link, bound = await through_chain(as_chain(proxy), Command.BIND, host, port, timeout)
    return Binding(sock, link, bound)
