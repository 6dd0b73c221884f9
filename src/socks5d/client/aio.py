"""The asyncio SOCKS client: CONNECT (streams or a socket), BIND, UDP ASSOCIATE, chains.

reader, writer = await open_connection("example.org", 80, proxy="socks5h://127.0.0.1:1080")
sock = await connect("example.org", 80, proxy=["socks5://a:1080", "socks5h://b:1080"])
binding = await open_bind("peer.example", 0, proxy=url)   # binding.address: where to connect
reader, writer = await binding.accept()                   # once the peer has connected
async with await open_udp(proxy=url) as udp:
    await udp.sendto(b"query", ("198.51.100.7", 53))
    data, (host, port) = await udp.recvfrom()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType
from typing import Any

from socks5d.client.bridges import bridge
from socks5d.client.handshake import READ, Link, second_reply, wrap_datagram
from socks5d.client.route import (
    BindingBase,
    Dial,
    Lookup,
    NextHop,
    Position,
    Stepper,
    Walk,
    destination,
    resolved_here,
    udp_chain,
    walk,
)
from socks5d.client.wire import (
    DEFAULT_TIMEOUT,
    PEEK_SIZE,
    datagram_source,
    proxy_header,
    read_once,
    received,
    sockaddr,
)
from socks5d.errors import ProxyTimeout, Socks5Error
from socks5d.gss import Protection
from socks5d.net import connect_first, lookup
from socks5d.proto import Address, Command, Event, UdpDatagram
from socks5d.proxies import Proxy, ProxyLike, as_chain


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _read_event(sock: socket.socket, link: Link) -> Event:
    """The proxy's next message (see `wire.read_once`)."""
    while True:
        if link.protection is not None:
            link.protection.check()  # before waiting: a bad token may be all there was
        await _readable(sock)
        try:
            event = read_once(sock, link)
        except BlockingIOError:
            continue
        if event is not None:
            return event


async def _drive(
    steps: Walk, at: Position, deadline: asyncio.Timeout | None = None, timeout: float = 0.0
) -> Address:
    """Do what `steps` (a walk or a handshake) ask, on `at`'s socket; with `deadline`, each
    hop gets `timeout` seconds from its start.
    """
    loop = asyncio.get_running_loop()
    stepper = Stepper(steps)
    for step in stepper:
        if isinstance(step, Lookup):
            stepper.answer = await lookup(step.host, step.port)
        elif isinstance(step, Dial):
            at.sock = await _dial(step)
            if step.proxy.proxy_protocol is not None:
                header = proxy_header(at.sock, step.proxy.proxy_protocol)
                await loop.sock_sendall(at.sock, header)
        elif isinstance(step, NextHop):
            if deadline is not None:
                deadline.reschedule(loop.time() + timeout)
            at.enter(step, bridge)
        elif step is READ:
            stepper.answer = await _read_event(at.connected, at.link)
        else:
            assert isinstance(step, bytes)
            await loop.sock_sendall(at.connected, at.link.outgoing(step))
    return stepper.result


async def _dial(step: Dial) -> socket.socket:
    try:
        return await connect_first(step.targets)
    except Socks5Error as exc:
        # The proxy itself is unreachable: an OSError like any failed connect, not a reply.
        builtin = ConnectionRefusedError if isinstance(exc, ConnectionRefusedError) else OSError
        raise builtin(f"cannot reach proxy {step.proxy.url}: {exc}") from exc


async def _destination(proxy: Proxy, host: str, port: int) -> Address:
    """DST.ADDR for a datagram to `host`:`port` (see `route.destination`)."""
    targets = await lookup(host, port) if resolved_here(proxy, host) else []
    return destination(proxy, host, port, targets)


async def _through_chain(
    chain: list[Proxy], command: Command, host: str, port: int, timeout: float
) -> tuple[socket.socket, Link, Address]:
    """Walk `chain` (`route.walk`), connecting to the first proxy and each handshake within
    `timeout` seconds. Returns the socket, the last handshake's link and the (first) reply's
    address. A hop with per-message protection carries the next hops inside it (`bridges.bridge`).
    """
    at = Position()
    try:
        async with asyncio.timeout(timeout) as deadline:
            bound = await _drive(walk(chain, command, host, port), at, deadline, timeout)
    except Socks5Error:
        at.close()
        raise  # TTLExpired is a TimeoutError too, but it is the proxy's answer
    except TimeoutError:
        at.close()
        if at.sock is None or at.proxy is None:
            raise ProxyTimeout(
                f"no connection to proxy {chain[0].url} within {timeout:g} s"
            ) from None
        raise ProxyTimeout(f"no reply from proxy {at.proxy.url} within {timeout:g} s") from None
    except BaseException:
        at.close()
        raise
    return at.connected, at.link, at.reply_address(bound)


async def connect(
    host: str, port: int, *, proxy: ProxyLike | list[ProxyLike], timeout: float = DEFAULT_TIMEOUT
) -> socket.socket:
    """A non-blocking socket connected to `host`:`port` through `proxy` (one, or a chain).

    Raises:
        Socks5Error: the subclass for the proxy's reply (e.g. `ConnectionRefused` for X'05'),
            `AuthFailed`, `RequestRejected` (SOCKS4), `ProxyTimeout` or `ProtocolError`.
        OSError: the first proxy cannot be reached.
    """
    sock, link, _ = await _through_chain(as_chain(proxy), Command.CONNECT, host, port, timeout)
    return sock if link.protection is None else bridge(sock, link)


async def tunnel(
    host: str, port: int, *, proxy: ProxyLike | list[ProxyLike], timeout: float = DEFAULT_TIMEOUT
) -> tuple[socket.socket, Address]:
    """As `connect`, and the last proxy's BND.ADDR/BND.PORT (its outbound end, when it says;
    the unspecified address from an HTTP proxy)."""
    sock, link, bound = await _through_chain(as_chain(proxy), Command.CONNECT, host, port, timeout)
    return (sock if link.protection is None else bridge(sock, link)), bound


async def open_connection(
    host: str,
    port: int,
    *,
    proxy: ProxyLike | list[ProxyLike],
    timeout: float = DEFAULT_TIMEOUT,
    limit: int = 2**16,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like `asyncio.open_connection`, through `proxy`. Raises as `connect` does."""
    sock = await connect(host, port, proxy=proxy, timeout=timeout)
    try:
        return await asyncio.open_connection(sock=sock, limit=limit)
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
                self.peer = await _drive(second_reply(), self._at)
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
    sock, link, bound = await _through_chain(as_chain(proxy), Command.BIND, host, port, timeout)
    return Binding(sock, link, bound)


async def _until_closed(control: socket.socket) -> None:
    """Until the proxy closes (or breaks) the TCP connection `control`."""
    while True:
        await _readable(control)
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
            control, link, relay = await _through_chain(
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
