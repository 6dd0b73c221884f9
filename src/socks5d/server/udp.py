"""UDP ASSOCIATE (RFC 1928 §6, §7): one UDP relay socket per association.

The client sends datagrams with the UDP request header to the relay socket; the relay sends
their DATA to DST.ADDR:DST.PORT from the same socket, and wraps what comes back in a header
carrying the sender's address. Rules:

- Only the client's IP (that of its TCP connection) may use the association; when the request
  names a port, only that port; when it names none, the first datagram's port is locked in.
  RFC 1928 §7: "the UDP relay server MUST acquire from the SOCKS server the expected IP address
  of the client that will send datagrams to the BND.PORT given in the reply to UDP ASSOCIATE.
  It MUST drop any datagrams arriving from any source IP address other than the one recorded
  for the particular association."
- Only hosts the client has sent to may answer (anyone else is dropped): the relay is no open
  door into the client.
- FRAG other than X'00' is dropped: §7 "An implementation that does not support fragmentation
  MUST drop any datagram whose FRAG field is other than X'00'."
- Everything dropped is counted; the count goes into the access log, and so does the rule that
  blocked the last datagram the rules dropped. The metrics count datagrams relayed each way and
  those dropped, by reason (`DROP_REASONS`).
- §6: "A UDP association terminates when the TCP connection that the UDP ASSOCIATE request
  arrived on terminates." So does an association idle for `udp.idle_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from socks5d.client import aio
from socks5d.errors import LocalProtocolError, ProtocolError, Socks5Error
from socks5d.gss import Protection
from socks5d.names import BadDestinationName, canonical_destination, escape_octets
from socks5d.net import Target, address_of, unmapped
from socks5d.proto import (
    Address,
    Command,
    DomainName,
    Reply,
    UdpDatagram,
    decode_udp,
    encode_udp,
)
from socks5d.relay import RelayResult
from socks5d.rules import Decision
from socks5d.server.context import Request, SessionContext
from socks5d.server.stats import Stats
from socks5d.server.udpnames import NameCache
from socks5d.server.upstream import associate_routed, route_of

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: The largest UDP payload over IPv4 (65535 - 8 - 20), and so the largest datagram relayed.
MAX_DATAGRAM = 65507
#: Datagrams waiting in a socket's send buffer before more are dropped.
MAX_SEND_BACKLOG = 1024 * 1024
#: Destinations remembered per association (hosts allowed to answer).
MAX_PEERS = 4096
#: Name resolutions in flight per association; more datagrams to unresolved names are dropped.
MAX_PENDING_RESOLUTIONS = 16
#: Why a datagram was dropped: the `reason` of `socks5d_udp_dropped_total`.
DROP_REASONS = (
    "stranger",  # from neither the client nor a host it sent to
    "malformed",  # not a UDP request header (or a bad GSS-API token)
    "fragment",  # FRAG other than X'00'
    "bad_name",  # DST.ADDR not a host name
    "rules",  # the [[socks]] rules blocked the destination
    "resolutions",  # too many names being resolved already
    "unresolved",  # the destination name did not resolve
    "family",  # no address the relay socket's family can reach
    "too_large",  # a reply too large with its header or protection
    "send_buffer",  # the socket's send buffer is full
)


def _relay_socket(configured: str | None) -> socket.socket:
    """The association's socket: on the configured address, else the IPv6 wildcard taking
    IPv4 too (dual stack), else the IPv4 wildcard.
    """
    if configured is not None:
        address = ipaddress.ip_address(configured)
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((configured, 0))
        except BaseException:
            sock.close()
            raise
        return sock
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 0))
        return sock
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpAssociation(asyncio.DatagramProtocol):
    """The relay socket of one association and its counters."""

    def __init__(
        self,
        client_ip: IPAddress,
        client_port: int | None,
        names: NameCache,
        family: int,
        decide: Callable[[Address, IPAddress | None], Decision],
        protection: Protection | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.client_ip = client_ip
        #: the metrics the datagrams are counted in
        self.stats = stats if stats is not None else Stats()
        #: GSS-API per-message protection of the client's datagrams (RFC 1961 §5)
        self.protection = protection
        #: the rules: may the client send to this destination (name, resolved address)?
        self.decide = decide
        #: the rule that blocked the last datagram the rules dropped
        self.rule: str | None = None
        #: the client's source port; None until the first datagram locks it in
        self.client_port = client_port
        self.names = names
        self.family = family
        self.transport: asyncio.DatagramTransport | None = None
        #: set once the socket is really closed (asyncio closes it a loop pass after close())
        self.closed = asyncio.Event()
        #: hosts the client sent to, most recent last, with the socket address to send to
        self.peers: OrderedDict[tuple[IPAddress, int], tuple[Any, ...]] = OrderedDict()
        #: socket addresses datagrams came from, parsed
        self.sources: dict[Any, Address] = {}
        #: the client's socket address once its port is known
        self.client_address: tuple[str, int | None] | None = None
        self.resolutions: set[asyncio.Task[None]] = set()
        #: payload bytes relayed each way (read live by the metrics)
        self.counts = RelayResult()
        self.dropped = 0
        self.last_activity = time.monotonic()
        #: the upstream association datagrams go out through (a `[[route]]`); None: direct
        self.upstream: aio.UdpEndpoint | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier datagram (port unreachable...): UDP has no one to tell.
        log.debug("UDP relay: %s", exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        source = self.sources.get(addr)
        if source is None:  # parsing an address costs more than relaying the datagram
            if len(self.sources) >= MAX_PEERS:
                self.sources.clear()
            source = self.sources[addr] = address_of(addr)
        host = source.host
        assert not isinstance(host, DomainName)
        if host == self.client_ip and self.client_port in (None, source.port):
            if self.client_port is None:
                self.client_port = source.port  # lock onto the first datagram's port
            self._from_client(data)
        elif self.upstream is None and (host, source.port) in self.peers:
            self._from_peer(source, data)
        else:
            self._drop("stranger", f"datagram from stranger {source}")

    def _drop(self, reason: str, why: str) -> None:
        self.dropped += 1
        self.stats.dropped(reason)
        log.debug("UDP relay for %s: dropped %s", self.client_ip, why)

    def _allowed(self, destination: Address, resolved: IPAddress | None) -> bool:
        decision = self.decide(destination, resolved)
        if not decision.allowed:
            self.rule = decision.rule
        return decision.allowed

    def _from_client(self, data: bytes) -> None:
        try:
            if self.protection is not None:
                # RFC 1961 §5: "For TCP and UDP clients and servers, the GSS-API functions
                # for encapsulation and de-encapsulation shall be used": each datagram is one
                # framed token wrapping the whole RFC 1928 datagram, header included.
                data = self.protection.open_datagram(data)
            datagram = decode_udp(data)
        except ProtocolError as exc:
            self._drop("malformed", f"malformed datagram: {exc}")
            return
        if datagram.fragment != 0:
            self._drop("fragment", f"fragment {datagram.fragment} (not implemented)")
            return
        try:  # the same canonical name as a CONNECT request's (socks5d.names)
            destination = canonical_destination(datagram.destination)
        except BadDestinationName as exc:
            host = escape_octets(str(datagram.destination.host))
            self._drop("bad_name", f"datagram to a bad destination name {host}: {exc.why}")
            return
        if not self._allowed(destination, None):
            self._drop("rules", f"datagram to {destination}: blocked by the rules")
            return
        if isinstance(destination.host, DomainName):
            targets = self.names.get(destination.host, destination.port)
            if targets is None:
                self._resolve_then_send(destination, datagram.data)
                return
            self._send_to_targets(destination, targets, datagram.data)
        else:
            self._send(destination.host, destination.port, datagram.data)

    def _resolve_then_send(self, destination: Address, data: bytes) -> None:
        if len(self.resolutions) >= MAX_PENDING_RESOLUTIONS:
            self._drop("resolutions", f"datagram to {destination}: too many names resolving")
            return

        async def resolve() -> None:
            assert isinstance(destination.host, DomainName)
            try:
                targets = await self.names.resolve(destination.host, destination.port)
            except OSError as exc:
                self._drop("unresolved", f"datagram to {destination}: {exc}")
                return
            self._send_to_targets(destination, targets, data)

        task = asyncio.get_running_loop().create_task(resolve())
        self.resolutions.add(task)
        task.add_done_callback(self.resolutions.discard)

    def _send_to_targets(self, name: Address, targets: list[Target], data: bytes) -> None:
        for _, sockaddr in targets:
            host = unmapped(ipaddress.ip_address(sockaddr[0].partition("%")[0]))
            if self.upstream is not None or self.family == socket.AF_INET6 or host.version == 4:
                # the name was allowed; the address it resolved to must be too (rebinding)
                if not self._allowed(name, host):
                    self._drop("rules", f"datagram to {name} ({host}): blocked by the rules")
                    return
                self._send(host, sockaddr[1], data)
                return
        self._drop("family", "datagram to a name with no address of the relay's family")

    def _send(self, host: IPAddress, port: int, data: bytes) -> None:
        host = unmapped(host)
        peer = (host, port)
        target = self.peers.get(peer)
        if self.upstream is not None:
            try:
                self.upstream.send_datagram(data, Address(host, port))
            except (ConnectionError, LocalProtocolError) as exc:
                self._drop("send_buffer", f"datagram to {host}: upstream: {exc}")
                return
            target = target or (str(host), port)
        elif target is None:
            if self.family == socket.AF_INET6 and host.version == 4:
                target = (f"::ffff:{host}", port, 0, 0)
            elif self.family == socket.AF_INET and host.version == 6:
                self._drop("family", f"datagram to {host}: IPv6 destination, IPv4 relay")
                return
            else:
                target = (str(host), port)
        if self.upstream is None and not self._transmit(data, target):
            return
        self.last_activity = time.monotonic()
        self.peers[peer] = target
        self.peers.move_to_end(peer)
        if len(self.peers) > MAX_PEERS:
            self.peers.popitem(last=False)
        self.counts.bytes_up += len(data)
        self.stats.datagram("up")

    def from_upstream(self, data: bytes, sender: tuple[str, int]) -> None:
        """A datagram the upstream relayed to us from `sender`: for the client when it came
        from a host the client sent to, as from the relay socket when direct."""
        source = Address.from_host(*sender)
        host = source.host
        if isinstance(host, DomainName) or (unmapped(host), source.port) not in self.peers:
            self._drop("stranger", f"datagram from stranger {source} through the upstream")
            return
        self._from_peer(Address(unmapped(host), source.port), data)

    def _from_peer(self, source: Address, data: bytes) -> None:
        wrapped = encode_udp(UdpDatagram(source, data))
        if self.protection is not None:
            try:
                wrapped = self.protection.seal_datagram(wrapped)
            except LocalProtocolError:
                self._drop("too_large", f"reply of {len(data)} bytes from {source}: to protect")
                return
        if len(wrapped) > MAX_DATAGRAM:
            self._drop("too_large", f"reply of {len(data)} bytes from {source} with its header")
            return
        if self.client_address is None:
            client_host = str(self.client_ip)
            if self.family == socket.AF_INET6 and self.client_ip.version == 4:
                client_host = f"::ffff:{client_host}"
            self.client_address = (client_host, self.client_port)
        if self._transmit(wrapped, self.client_address):
            self.counts.bytes_down += len(data)
            self.stats.datagram("down")

    def _transmit(self, data: bytes, target: tuple[Any, ...]) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_SEND_BACKLOG:  # type: ignore[attr-defined]
            self._drop("send_buffer", "datagram: send buffer full")
            return False
        transport.sendto(data, target)
        self.last_activity = time.monotonic()
        return True

    def close(self) -> None:
        """Close the socket and stop pending resolutions."""
        for task in self.resolutions:
            task.cancel()
        if self.transport is not None:
            self.transport.close()


def _advertised(session: SessionContext, sock: socket.socket) -> Address:
    """BND.ADDR/BND.PORT: an address the client can send to (never a wildcard)."""
    settings = session.services.config.udp
    port = sock.getsockname()[1]
    if settings.advertise_address is not None:
        return Address(ipaddress.ip_address(settings.advertise_address), port)
    bound = address_of(sock.getsockname())
    if bound.host == type(bound.host)(0):
        return Address(session.local.host, port)
    return bound


async def serve_udp_associate(session: SessionContext, request: Request) -> None:
    """Open the association, reply with its address, serve it until the client leaves."""
    services = session.services
    slots = services.udp_slots
    client_ip = session.client_ip
    # RFC 1928 §6: "The DST.ADDR and DST.PORT fields contain the address and port that the
    # client expects to use to send UDP datagrams on for the association." Not a destination.
    requested_port = request.destination.port or None
    refusal = slots.acquire(client_ip)
    if refusal is not None:
        services.stats.limit_refusal("udp_associations")
        raise Socks5Error(f"UDP associations: {refusal}")
    try:
        await _associate(session, client_ip, requested_port)
    finally:
        slots.release(client_ip)


def _decide(session: SessionContext) -> Callable[[Address, IPAddress | None], Decision]:
    def decide(destination: Address, resolved: IPAddress | None) -> Decision:
        return session.decide(Command.UDP_ASSOCIATE, destination, resolved)

    return decide


async def _associate(
    session: SessionContext, client_ip: IPAddress, requested_port: int | None
) -> None:
    services = session.services
    loop = asyncio.get_running_loop()
    sock = _relay_socket(services.config.udp.address)
    try:
        sock.setblocking(False)
        association = UdpAssociation(
            client_ip,
            requested_port,
            NameCache(services.resolver),
            sock.family,
            _decide(session),
            session.protection,
            services.stats,
        )
        session.count_bytes(association.counts)
        await loop.create_datagram_endpoint(lambda: association, sock=sock)
    except BaseException:
        sock.close()
        raise
    pump = None
    try:
        route = route_of(session, Command.UDP_ASSOCIATE, None)
        if route is not None:
            timeout = services.config.timeouts.connect
            association.upstream = await associate_routed(session, route, timeout)
        if association.upstream is not None:
            pump = asyncio.create_task(_pump(association.upstream, association))
        bound = _advertised(session, sock)
        await session.reply(Reply.SUCCEEDED, bound)
        log.debug("UDP ASSOCIATE for %s relaying on %s", session.record["client"], bound)
        session.record["outcome"] = await _serve(session, association, pump)
    finally:
        if pump is not None:
            pump.cancel()
        if association.upstream is not None:
            await association.upstream.close()
        association.close()
        await association.closed.wait()  # "its socket is closed at once": before the log line
        session.record.update(
            bytes_up=association.counts.bytes_up,
            bytes_down=association.counts.bytes_down,
            dropped=association.dropped,
        )
        if association.rule is not None:  # the datagrams' rule, as for a refused request
            session.record["rule"] = association.rule


async def _pump(upstream: aio.UdpEndpoint, association: UdpAssociation) -> None:
    """The upstream's datagrams to the association, until the upstream ends it."""
    with contextlib.suppress(ConnectionError):
        while True:
            association.from_upstream(*(await upstream.recvfrom()))


async def _serve(
    session: SessionContext, association: UdpAssociation, pump: asyncio.Task[None] | None
) -> str:
    idle_timeout = session.services.config.udp.idle_timeout
    control = asyncio.create_task(session.watch_control(keep=False))
    waits: set[asyncio.Task[None]] = {control} if pump is None else {control, pump}
    try:
        while True:
            remaining = association.last_activity + idle_timeout - time.monotonic()
            if remaining <= 0:
                return "idle timeout"
            done, _ = await asyncio.wait(waits, timeout=remaining, return_when="FIRST_COMPLETED")
            if pump in done:
                return "upstream closed the association"
            if done:
                control.result()  # raises the client's connection error, if any
                return "closed"
    finally:
        control.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, Socks5Error):
            await control
