"""The anyio SOCKS client (asyncio and trio alike): CONNECT as an anyio socket stream, BIND,
UDP ASSOCIATE (`anyio_udp.py`), chains. A third driver of the same walk (`route.walk`) as
`aio` and `sync` (`anyio_walk.py`): no asyncio API, so it runs under `trio.run`.

stream = await connect("example.org", 80, proxy="socks5h://127.0.0.1:1080")  # SocketStream
binding = await open_bind("0.0.0.0", 0, proxy=url)  # binding.address; await binding.accept()
async with await open_udp(proxy=url) as udp: ...    # await udp.sendto(data, (host, port))

Imported only by name (`import socks5d.client.anyio`): `socks5d.client` never imports anyio.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import SocketStream

from socks5d.client.anyio_udp import UdpEndpoint as UdpEndpoint
from socks5d.client.anyio_udp import open_udp as open_udp
from socks5d.client.anyio_walk import bridge, drive, stream_of, through_chain
from socks5d.client.handshake import second_reply
from socks5d.client.route import (
    BindingBase,
    HostPort,
)
from socks5d.client.wire import (
    DEFAULT_TIMEOUT,
)
from socks5d.errors import ProxyTimeout, Socks5Error
from socks5d.proto import Command
from socks5d.proxies import ProxyLike, as_chain

__all__ = ["Binding", "UdpEndpoint", "connect", "open_bind", "open_udp"]


async def connect(
    host: str, port: int, *, proxy: ProxyLike | list[ProxyLike], timeout: float = DEFAULT_TIMEOUT
) -> SocketStream:
    """An anyio socket stream connected to `host`:`port` through `proxy` (one, or a chain);
    for TLS to the destination, `anyio.streams.tls.TLSStream.wrap(stream, hostname=host)`.

    `timeout` bounds connecting to the first proxy and each handshake.

    Raises:
        Socks5Error: the subclass for the proxy's reply (e.g. `ConnectionRefused` for X'05'),
            `AuthFailed`, `RequestRejected` (SOCKS4), `ProxyTimeout` or `ProtocolError`.
        OSError: the first proxy cannot be reached.
    """
    sock, link, _ = await through_chain(as_chain(proxy), Command.CONNECT, host, port, timeout)
    return await stream_of(sock if link.protection is None else bridge(sock, link))


class Binding(BindingBase):
    """A BIND in progress: `address` is where the proxy listens; `accept()` waits for the
    peer and gives a stream; `aclose()` gives up.
    """

    async def accept(self, timeout: float | None = None) -> SocketStream:
        """Wait for the second reply; return a stream connected to the peer (`peer`).

        Raises:
            ProxyTimeout: no peer within `timeout` seconds.
            TTLExpired: the proxy's own BIND timeout passed (X'06').
        """
        try:
            with anyio.fail_after(timeout):
                self.peer = HostPort.of(await drive(second_reply(), self._at))
        except TimeoutError as exc:
            self.close()
            if isinstance(exc, Socks5Error):
                raise  # TTLExpired: the proxy's own BIND timeout
            raise ProxyTimeout("no incoming connection in time") from None
        except BaseException:
            self.close()
            raise
        return await stream_of(self._connected(bridge))

    async def aclose(self) -> None:
        """Give up the BIND (the proxy stops listening); wakes a task waiting in `accept`."""
        if self._at.sock is not None and self._at.sock.fileno() != -1:
            anyio.notify_closing(self._at.sock)
        self.close()
        await anyio.lowlevel.checkpoint()


async def open_bind(
    host: str, port: int, *, proxy: ProxyLike | list[ProxyLike], timeout: float = DEFAULT_TIMEOUT
) -> Binding:
    """Ask the (last) proxy to listen for one connection from `host` (0.0.0.0: anyone).

    Returns once the proxy listens: `binding.address` says where; `await binding.accept()`.
    """
    sock, link, bound = await through_chain(as_chain(proxy), Command.BIND, host, port, timeout)
    return Binding(sock, link, bound)
