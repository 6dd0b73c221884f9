"""The asyncio UDP ASSOCIATE: an association through one SOCKS5 proxy or a chain of them,
datagrams wrapped for every hop on the way out and unwrapped on the way in.

async with await open_udp(proxy="socks5h://127.0.0.1:1080") as udp:
    await udp.sendto(b"query", ("198.51.100.7", 53))
    data, (host, port) = await udp.recvfrom()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType
from typing import Any

from socks5d.client.aio_walk import readable, through_chain
from socks5d.client.handshake import wrap_datagram
from socks5d.client.route import destination, resolved_here, udp_chain
from socks5d.client.wire import DEFAULT_TIMEOUT, PEEK_SIZE, datagram_source, received, sockaddr
from socks5d.errors import ProxyTimeout
from socks5d.gss import Protection
from socks5d.net import lookup
from socks5d.proto import Address, Command, UdpDatagram
from socks5d.proxies import Proxy, ProxyLike


async def _destination(proxy: Proxy, host: str, port: int) -> Address:
    """DST.ADDR for a datagram to `host`:`port` (see `route.destination`)."""
    targets = await lookup(host, port) if resolved_here(proxy, host) else []
    return destination(proxy, host, port, targets)


async def _until_closed(control: socket.socket) -> None:
    """Until the proxy closes (or breaks) the TCP connection `control`."""
    while True:
        await readable(control)
        try:
            if not control.recv(PEEK_SIZE):
                return
        except BlockingIOError:
            continue
        except OSError:
            return


class _Datagrams(asyncio.DatagramProtocol):
    """Receives the relay's datagrams into a bounded queue (a full queue drops, as UDP does)."""

    def __init__(
        self,
        relay: Address,
        queue: asyncio.Queue[tuple[bytes, tuple[str, int]] | None],
        protection: Protection | None = None,
        inner: tuple[Address, ...] = (),
    ):
        self.relay = relay
        #: through a chain: the later hops' relays, in order
        self.inner = inner
        self.queue = queue
        #: GSS-API per-message protection of the datagrams, when agreed
        self.protection = protection
        #: datagrams dropped: not from the relay, malformed, fragments, or queue full
        self.dropped = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        item = received(data, addr, self.relay, self.protection, self.inner)
        if item is None:
            self.dropped += 1
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1


class UdpEndpoint:
    """A UDP ASSOCIATE: `await sendto`/`await recvfrom` through the proxy's relay, arriving
    datagrams queued by the event loop; the TCP control connection stays open for the
    association's life and closes with it.
    """

    def __init__(
        self,
        proxy: Proxy,
        controls: list[socket.socket],
        transport: asyncio.DatagramTransport,
        protocol: _Datagrams,
    ) -> None:
        #: the last proxy: the one that sends the datagrams to their destinations
        self.proxy = proxy
        self._controls = controls
        self._transport = transport
        self._protocol = protocol
        self._watch = asyncio.create_task(self._watch_controls())
        #: BND.ADDR/BND.PORT: the relay datagrams go to (the first proxy's, through a chain)
        self.relay = protocol.relay

    async def _watch_controls(self) -> None:
        """RFC 1928 §6: the association ends with its TCP connection (through a chain: with
        any hop's); tell recvfrom."""
        watches = [asyncio.create_task(_until_closed(control)) for control in self._controls]
        try:
            await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for watch in watches:
                watch.cancel()
        self._transport.close()
        with contextlib.suppress(asyncio.QueueFull):
            self._protocol.queue.put_nowait(None)

    async def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        """Send `data` to `address` (host, port) through the relay."""
        if self._transport.is_closing():
            raise ConnectionError("the UDP association is closed")
        destination = await _destination(self.proxy, address[0], address[1])
        self.send_datagram(data, destination)

    def send_datagram(self, data: bytes, destination: Address) -> None:
        """Send `data` to `destination` as it is (an IP address, or a name for the proxy to
        resolve): no lookup here, so no waiting.

        Raises:
            ConnectionError: the association is closed.
        """
        if self._transport.is_closing():
            raise ConnectionError("the UDP association is closed")
        protocol = self._protocol
        datagram = wrap_datagram(
            UdpDatagram(destination, data), protocol.protection, protocol.inner
        )
        self._transport.sendto(datagram, sockaddr(self.relay))

    async def recvfrom(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]]:
        """The next datagram and the (host, port) it came from.

        Raises:
            ConnectionError: the association ended (the proxy closed the TCP connection).
            ProxyTimeout: nothing arrived within `timeout` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                item = await self._protocol.queue.get()
        except TimeoutError:
            raise ProxyTimeout("no datagram in time") from None
        if item is None:
            self._protocol.queue.put_nowait(None)  # every later call fails the same way
            raise ConnectionError("the UDP association is closed")
        return item

    @property
    def dropped(self) -> int:
        """Datagrams dropped on the way in."""
        return self._protocol.dropped

    async def close(self) -> None:
        """End the association: close the UDP socket and the TCP control connection."""
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        self._transport.close()
        for control in self._controls:
            control.close()

    async def __aenter__(self) -> UdpEndpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


#: Datagrams held for `recvfrom` before more are dropped.
UDP_QUEUE_SIZE = 256


async def open_udp(
    *, proxy: ProxyLike | list[ProxyLike], timeout: float = DEFAULT_TIMEOUT
) -> UdpEndpoint:
    """Open a UDP association with `proxy`: one SOCKS5 proxy, or a chain of them, each of
    which then holds an association of its own (`route.udp_chain`): datagrams go to the
    first relay wrapped for every hop, each relay passing the rest on to the next one.

    Each request names 0.0.0.0:0 (RFC 1928 §6: "If the client is not in possession of the
    information at the time of the UDP ASSOCIATE, the client MUST use a port number and
    address of all zeros"); datagrams are sent from the address the TCP connection uses.
    """
    chain = udp_chain(proxy)
    controls: list[socket.socket] = []
    relays: list[Address] = []
    try:
        for hops in range(1, len(chain) + 1):  # hop N's association, through hops 1..N-1
            control, link, relay = await through_chain(
                chain[:hops], Command.UDP_ASSOCIATE, "0.0.0.0", 0, timeout
            )
            controls.append(control)
            relays.append(relay)
        family, local_ip = datagram_source(controls[0], relays[0])
        queue: asyncio.Queue[tuple[bytes, tuple[str, int]] | None] = asyncio.Queue(UDP_QUEUE_SIZE)
        protocol = _Datagrams(relays[0], queue, link.protection, tuple(relays[1:]))
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: protocol, local_addr=(local_ip, 0), family=family
        )
    except BaseException:
        for control in controls:
            control.close()
        raise
    return UdpEndpoint(chain[-1], controls, transport, protocol)
