"""The anyio UDP ASSOCIATE (asyncio and trio alike): an association through one SOCKS5 proxy
or a chain of them, over a non-blocking UDP socket waited on with anyio.

async with await open_udp(proxy="socks5h://127.0.0.1:1080") as udp:
    await udp.sendto(b"query", ("198.51.100.7", 53))
    data, (host, port) = await udp.recvfrom()
"""

from __future__ import annotations

import contextlib
import socket
from types import TracebackType

import anyio
import anyio.lowlevel
import anyio.to_thread

from socks5d.client.anyio_walk import lookup, through_chain
from socks5d.client.handshake import wrap_datagram
from socks5d.client.route import (
    destination,
    resolved_here,
    udp_chain,
)
from socks5d.client.sync import MAX_DATAGRAM
from socks5d.client.wire import (
    DEFAULT_TIMEOUT,
    PEEK_SIZE,
    SocketUdpEndpoint,
    received,
    sockaddr,
)
from socks5d.errors import ProxyTimeout
from socks5d.gss import Protection
from socks5d.proto import Address, Command, UdpDatagram
from socks5d.proxies import Proxy, ProxyLike


class UdpEndpoint(SocketUdpEndpoint):
    """A UDP ASSOCIATE over a non-blocking UDP socket: `await sendto`/`await recvfrom`
    through the proxy's relay (one task receiving at a time); the TCP control connections
    stay open for the association's life and close with it.
    """

    def __init__(
        self,
        proxy: Proxy,
        controls: list[socket.socket],
        relays: list[Address],
        protection: Protection | None = None,
    ) -> None:
        super().__init__(proxy, controls, relays, protection, blocking=False)
        self._ended = False

    def _check_open(self) -> None:
        """RFC 1928 §6: "A UDP association terminates when the TCP connection that the UDP
        ASSOCIATE request arrived on terminates" (through a chain: any hop's).

        Raises:
            ConnectionError: it has.
        """
        for control in self._controls:
            if self._ended:
                break
            try:
                self._ended = not control.recv(PEEK_SIZE)  # a proxy sends nothing else here
            except BlockingIOError:
                continue
            except OSError:
                self._ended = True
        if self._ended:
            raise ConnectionError("the UDP association is closed")

    async def _readable(self) -> None:
        """Until a datagram arrives or a control connection has something (its end)."""
        async with anyio.create_task_group() as group:

            async def wait(sock: socket.socket) -> None:
                # closed by `aclose` meanwhile: `_check_open` says so
                with contextlib.suppress(anyio.ClosedResourceError):
                    await anyio.wait_readable(sock)
                group.cancel_scope.cancel()

            for sock in (self._sock, *self._controls):
                group.start_soon(wait, sock)

    async def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        """Send `data` to `address` (host, port) through the relay.

        Raises:
            ConnectionError: the association is closed.
        """
        self._check_open()
        host, port = address[0], address[1]
        targets = await lookup(host, port) if resolved_here(self.proxy, host) else []
        datagram = UdpDatagram(destination(self.proxy, host, port, targets), data)
        wire = wrap_datagram(datagram, self.protection, self.inner)
        while True:
            try:
                self._sock.sendto(wire, sockaddr(self.relay))
                return
            except BlockingIOError:
                await anyio.wait_writable(self._sock)

    async def recvfrom(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]]:
        """The next datagram and the (host, port) it came from.

        Raises:
            ConnectionError: the association ended (the proxy closed the TCP connection).
            ProxyTimeout: nothing arrived within `timeout` seconds.
        """
        try:
            with anyio.fail_after(timeout):
                while True:
                    await anyio.lowlevel.checkpoint()
                    self._check_open()
                    try:
                        data, sender = self._sock.recvfrom(MAX_DATAGRAM)
                    except BlockingIOError:
                        await self._readable()
                        continue
                    item = received(data, sender, self.relay, self.protection, self.inner)
                    if item is not None:
                        return item
                    self.dropped += 1
        except TimeoutError:
            raise ProxyTimeout("no datagram in time") from None

    async def aclose(self) -> None:
        """End the association: close the UDP socket and the TCP control connections."""
        self._ended = True
        for sock in (self._sock, *self._controls):
            if sock.fileno() != -1:
                anyio.notify_closing(sock)
            sock.close()
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> UdpEndpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


async def open_udp(
    *, proxy: ProxyLike | list[ProxyLike], timeout: float = DEFAULT_TIMEOUT
) -> UdpEndpoint:
    """Open a UDP association with `proxy`: one SOCKS5 proxy, or a chain of them, each of
    which then holds an association of its own (`route.udp_chain`), as `aio.open_udp`.

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
        return UdpEndpoint(chain[-1], controls, relays, link.protection)
    except BaseException:
        for control in controls:
            control.close()
        raise
