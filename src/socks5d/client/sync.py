"""The blocking SOCKS client: the same operations as `socks5d.client.aio`, with sockets.

sock = create_connection(("example.org", 80), proxy="socks5h://127.0.0.1:1080")
binding = open_bind("peer.example", 0, proxy=url)   # binding.address: where to connect
conn = binding.accept()                             # once the peer has connected
with open_udp(proxy=url) as udp:
    udp.sendto(b"query", ("198.51.100.7", 53))
    data, (host, port) = udp.recvfrom()
"""

from __future__ import annotations

import asyncio
import math
import select
import socket
import threading
import time
from types import TracebackType

from socks5d.client.handshake import READ, Link, second_reply, wrap_datagram
from socks5d.client.route import (
    BindingBase,
    Dial,
    HostPort,
    Lookup,
    NextHop,
    Position,
    Stepper,
    Walk,
    destination,
    resolved_here,
    udp_chain,
    unreachable,
    walk,
)
from socks5d.client.wire import (
    DEFAULT_TIMEOUT,
    PEEK_SIZE,
    SocketUdpEndpoint,
    proxy_header,
    read_once,
    received,
    sockaddr,
)
from socks5d.errors import ProxyTimeout, Socks5Error
from socks5d.gss import Protection
from socks5d.net import lookup_blocking
from socks5d.proto import Address, Command, Event, UdpDatagram
from socks5d.proxies import Proxy, ProxyLike, as_chain
from socks5d.relay import relay
from socks5d.relay.protected import ProtectedEngine

#: The largest datagram received (the largest UDP payload over IPv4 is 65507).
MAX_DATAGRAM = 65535


def _read_event(sock: socket.socket, link: Link) -> Event:
    """The proxy's next message (see `wire.read_once`)."""
    while (event := read_once(sock, link)) is None:
        pass
    return event


def _drive(
    steps: Walk,
    at: Position,
    timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
) -> Address:
    """Do what `steps` (a walk or a handshake) ask, on `at`'s socket; `timeout` bounds each
    connect and each blocking call on the socket; the first proxy is dialled from
    `source_address` when given.
    """
    stepper = Stepper(steps)
    try:
        for step in stepper:
            if isinstance(step, Lookup):
                stepper.answer = lookup_blocking(step.host, step.port)
            elif isinstance(step, Dial):
                at.label = step.label
                at.sock = _dial(step, timeout, source_address)
                if step.proxy.proxy_protocol is not None:
                    at.sock.sendall(proxy_header(at.sock, step.proxy.proxy_protocol))
            elif isinstance(step, NextHop):
                at.enter(step, thread_bridge)
                at.connected.settimeout(timeout)
            elif step is READ:
                stepper.answer = _read_event(at.connected, at.link)
            else:
                assert isinstance(step, bytes)
                at.connected.sendall(at.link.outgoing(step))
    except Socks5Error:
        raise  # TTLExpired is a TimeoutError too, but it is the proxy's answer
    except TimeoutError:
        raise ProxyTimeout(at.timed_out(timeout)) from None
    return stepper.result


def _dial(
    step: Dial, timeout: float | None, source_address: tuple[str, int] | None = None
) -> socket.socket:
    """Connect to the proxy's addresses in turn, as `socket.create_connection` does (from
    `source_address`, when given)."""
    error: OSError = OSError(f"no address for proxy {step.proxy.url}")
    for family, address in step.targets:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    if isinstance(error, TimeoutError):
        raise ProxyTimeout(f"could not connect to {step.label} within {timeout:g} s") from None
    raise unreachable(error, step.label) from error


def _destination(proxy: Proxy, host: str, port: int) -> Address:
    """DST.ADDR for a datagram to `host`:`port` (see `route.destination`)."""
    targets = lookup_blocking(host, port) if resolved_here(proxy, host) else []
    return destination(proxy, host, port, targets)


def thread_bridge(sock: socket.socket, link: Link) -> socket.socket:
    """A local (blocking) socket standing for the protected connection `sock`: a thread runs
    the relay's protected engine between the two until both sides are done (RFC 1961 §5).
    """
    assert link.protection is not None
    mine, theirs = socket.socketpair()
    sock.setblocking(False)
    theirs.setblocking(False)
    engine = ProtectedEngine(link.protection)
    early_data = link.connection.trailing_data

    async def run() -> None:
        try:
            await relay(engine, sock, theirs, idle_timeout=math.inf, early_data=early_data)
        finally:
            sock.close()
            theirs.close()

    threading.Thread(target=asyncio.run, args=(run(),), name="socks5d-gssapi", daemon=True).start()
    return mine


def _through_chain(
    chain: list[Proxy],
    command: Command,
    host: str,
    port: int,
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
) -> tuple[socket.socket, Link, Address]:
    """Walk `chain` (`route.walk`) with `timeout` on each connect and socket call. Returns
    the (blocking) socket, the last handshake's link and the reply address. A hop with
    per-message protection carries the next hops inside it (`thread_bridge`).
    """
    at = Position()
    try:
        bound = _drive(walk(chain, command, host, port), at, timeout, source_address)
        at.connected.settimeout(None)
        return at.connected, at.link, at.reply_address(bound)
    except BaseException:
        at.close()
        raise


def connect(
    host: str,
    port: int,
    *,
    proxy: ProxyLike | list[ProxyLike],
    timeout: float | None = DEFAULT_TIMEOUT,
) -> socket.socket:
    """A blocking socket connected to `host`:`port` through `proxy` (one, or a chain).

    `timeout` bounds connecting to the first proxy and each handshake; the returned socket
    has no timeout.

    Raises:
        Socks5Error: the subclass for the proxy's reply (e.g. `ConnectionRefused` for X'05'),
            `AuthFailed`, `RequestRejected` (SOCKS4), `ProxyTimeout` or `ProtocolError`.
        OSError: the first proxy cannot be reached.
    """
    sock, link, _ = _through_chain(as_chain(proxy), Command.CONNECT, host, port, timeout)
    return sock if link.protection is None else thread_bridge(sock, link)


def create_connection(
    address: tuple[str, int],
    timeout: float | None = DEFAULT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
    *,
    proxy: ProxyLike | list[ProxyLike],
) -> socket.socket:
    """`socket.create_connection` through `proxy`: `timeout` bounds reaching the first proxy
    and each handshake, and stays set on the returned socket, as `socket.create_connection`
    leaves it; the connection to the first proxy is made from `source_address` when given.
    """
    host, port = address[0], address[1]
    sock, link, _ = _through_chain(
        as_chain(proxy), Command.CONNECT, host, port, timeout, source_address
    )
    if link.protection is not None:
        sock = thread_bridge(sock, link)
    sock.settimeout(timeout)
    return sock


class Binding(BindingBase):
    """A BIND in progress: `address` is where the proxy listens; `accept()` waits for the
    peer and gives a blocking socket.
    """

    def accept(self, timeout: float | None = None) -> socket.socket:
        """Wait for the second reply; return the socket, now connected to the peer."""
        sock = self._at.connected
        sock.settimeout(timeout)
        try:
            self.peer = HostPort.of(_drive(second_reply(), self._at))
        except BaseException:
            self.close()
            raise
        sock.settimeout(None)
        return self._connected(thread_bridge)


def open_bind(
    host: str,
    port: int,
    *,
    proxy: ProxyLike | list[ProxyLike],
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Binding:
    """Ask the (last) proxy to listen for one connection from `host` (0.0.0.0: anyone)."""
    sock, link, bound = _through_chain(as_chain(proxy), Command.BIND, host, port, timeout)
    return Binding(sock, link, bound)


class UdpEndpoint(SocketUdpEndpoint):
    """A UDP ASSOCIATE over a blocking UDP socket: `sendto`/`recvfrom` through the proxy's
    relay; the TCP control connection stays open for the association's life and closes with
    it.
    """

    def __init__(
        self,
        proxy: Proxy,
        controls: list[socket.socket],
        relays: list[Address],
        protection: Protection | None = None,
    ) -> None:
        super().__init__(proxy, controls, relays, protection, blocking=True)

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        """Send `data` to `address` (host, port) through the relay."""
        destination = _destination(self.proxy, address[0], address[1])
        self._sock.sendto(
            wrap_datagram(UdpDatagram(destination, data), self.protection, self.inner),
            sockaddr(self.relay),
        )

    def recvfrom(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]]:
        """The next datagram and the (host, port) it came from.

        Raises:
            ConnectionError: the association ended (the proxy closed the TCP connection).
            ProxyTimeout: nothing arrived within `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._sock, *self._controls], [], [], remaining)
            if not ready:
                raise ProxyTimeout("no datagram in time")
            if any(c in ready and not c.recv(PEEK_SIZE) for c in self._controls):
                # RFC 1928 §6: the association ends with its TCP connection (any hop's)
                raise ConnectionError("the UDP association is closed")
            if self._sock not in ready:
                continue
            data, sender = self._sock.recvfrom(MAX_DATAGRAM)
            item = received(data, sender, self.relay, self.protection, self.inner)
            if item is None:
                self.dropped += 1
                continue
            return item

    def close(self) -> None:
        """End the association: close the UDP socket and the TCP control connection."""
        self._sock.close()
        for control in self._controls:
            control.close()

    def __enter__(self) -> UdpEndpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_udp(
    *, proxy: ProxyLike | list[ProxyLike], timeout: float | None = DEFAULT_TIMEOUT
) -> UdpEndpoint:
    """Open a UDP association with `proxy`: one SOCKS5 proxy, or a chain of them (as
    `aio.open_udp`)."""
    chain = udp_chain(proxy)
    controls: list[socket.socket] = []
    relays: list[Address] = []
    try:
        for hops in range(1, len(chain) + 1):  # hop N's association, through hops 1..N-1
            control, link, relay = _through_chain(
                chain[:hops], Command.UDP_ASSOCIATE, "0.0.0.0", 0, timeout
            )
            controls.append(control)
            relays.append(relay)
        return UdpEndpoint(chain[-1], controls, relays, link.protection)
    except BaseException:
        for control in controls:
            control.close()
        raise
