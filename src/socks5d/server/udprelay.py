"""The relay of one UDP association (RFC 1928 §7): the client's datagrams checked and sent
on, directly from the relay socket or through an upstream association (`[[route]]`), and the
answers of the hosts the client sent to wrapped back to it. The checks are those udp.py's
docstring lists; `DROP_REASONS` names what is dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from socks5d.client import aio
from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.gss import Protection
from socks5d.names import BadDestinationName, canonical_destination, escape_octets
from socks5d.net import Target, address_of, unmapped
from socks5d.proto import Address, DomainName, UdpDatagram, decode_udp, encode_udp
from socks5d.relay import RelayResult
from socks5d.rules import Decision
from socks5d.server.stats import Stats
from socks5d.server.udpnames import NameCache

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: The largest UDP payload over IPv4 (65535 - 8 - 20), and so the largest datagram relayed.
MAX_DATAGRAM = 65507
#: The most a relay socket reads at once: the largest IP packet (65,535 bytes) and one more.
MAX_RECEIVE = 65536
#: Datagrams waiting in a socket's send buffer before more are dropped.
MAX_SEND_BACKLOG = 1024 * 1024
#: Destinations remembered per association (hosts allowed to answer).
MAX_PEERS = 4096
#: Name resolutions in flight per association; more datagrams to unresolved names are dropped.
MAX_PENDING_RESOLUTIONS = 16
#: The length of the RFC 1928 §7 header, RSV(2) FRAG ATYP DST.ADDR DST.PORT, by ATYP, for the
#: address literals (X'01' IPv4, X'04' IPv6): the headers the relay may remember.
_LITERAL_HEADER_SIZE = {0x01: 10, 0x04: 22}
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
        #: headers of the client's datagrams already checked and relayed (an address literal,
        #: FRAG X'00', allowed by the rules) -> the destination's key in `peers`: the next
        #: datagram with the same header goes out unparsed. The rules a session judges by do
        #: not change while it lasts (a reload applies to new sessions), so neither does the
        #: answer for an address; names are not remembered here (their addresses expire).
        self.checked: dict[bytes, tuple[IPAddress, int]] = {}
        #: the RFC 1928 §7 header wrapped around each peer's answers, by peer
        self.reply_headers: dict[Address, bytes] = {}
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
        if isinstance(getattr(transport, "max_size", None), int):
            # asyncio's selector transport receives each datagram into a buffer of
            # `max_size` (256 KiB), over glibc's mmap threshold: with many associations open
            # that became an mmap, an mremap and a munmap per datagram (strace). No datagram
            # is larger than an IP packet. uvloop's transport has no such attribute.
            transport.max_size = MAX_RECEIVE  # type: ignore[attr-defined]

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
            size = _LITERAL_HEADER_SIZE.get(data[3]) if len(data) > 3 else None
            if size is not None and len(data) >= size:
                peer = self.checked.get(data[:size])
                if peer is not None:  # the same header as a datagram checked before
                    self._send(peer[0], peer[1], data[size:])
                    return
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
        elif self._send(destination.host, destination.port, datagram.data) and size:
            if len(self.checked) >= MAX_PEERS:
                self.checked.clear()
            self.checked[data[:size]] = (destination.host, destination.port)

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

    def _send(self, host: IPAddress, port: int, data: bytes) -> bool:
        """Send `data` to `host`:`port` (directly, or through the upstream); False if dropped."""
        host = unmapped(host)
        peer = (host, port)
        target = self.peers.get(peer)
        if self.upstream is not None:
            try:
                self.upstream.send_datagram(data, Address(host, port))
            except (ConnectionError, LocalProtocolError) as exc:
                self._drop("send_buffer", f"datagram to {host}: upstream: {exc}")
                return False
            target = target or (str(host), port)
        elif target is None:
            if self.family == socket.AF_INET6 and host.version == 4:
                target = (f"::ffff:{host}", port, 0, 0)
            elif self.family == socket.AF_INET and host.version == 6:
                self._drop("family", f"datagram to {host}: IPv6 destination, IPv4 relay")
                return False
            else:
                target = (str(host), port)
        if self.upstream is None and not self._transmit(data, target):
            return False
        self.last_activity = time.monotonic()
        self.peers[peer] = target
        self.peers.move_to_end(peer)
        if len(self.peers) > MAX_PEERS:
            self.peers.popitem(last=False)
        self.counts.bytes_up += len(data)
        self.stats.datagram("up")
        return True

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
        header = self.reply_headers.get(source)
        if header is None:
            if len(self.reply_headers) >= MAX_PEERS:
                self.reply_headers.clear()
            header = self.reply_headers[source] = encode_udp(UdpDatagram(source, b""))
        wrapped = header + data
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
