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
  those dropped, by reason (`udprelay.DROP_REASONS`).
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
from collections.abc import Callable

from socks5d.client import aio
from socks5d.errors import Socks5Error
from socks5d.net import address_of
from socks5d.proto import Address, Command, Reply
from socks5d.rules import Decision
from socks5d.server.context import Request, SessionContext
from socks5d.server.udpnames import NameCache
from socks5d.server.udprelay import IPAddress, UdpAssociation
from socks5d.server.upstream import associate_routed, route_of

log = logging.getLogger(__name__)


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
