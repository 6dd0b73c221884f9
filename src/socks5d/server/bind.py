"""BIND (RFC 1928 §6, SOCKS4): listen for one incoming connection on the client's behalf.

RFC 1928 §6: "Two replies are sent from the SOCKS server to the client during a BIND
operation. The first is sent after the server creates and binds a new socket. [...] The second
reply occurs only after the anticipated incoming connection succeeds or fails."

The listening socket lives exactly as long as the wait: it is closed once a peer is accepted,
on timeout, or when the client closes its control connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from socks5d.client import aio
from socks5d.errors import NotAllowed, Socks5Error, TTLExpired, error_for_oserror
from socks5d.net import address_of, format_peer, unmapped
from socks5d.proto import Address, Command, DomainName, Reply, Socks4Request
from socks5d.server.context import Request, SessionContext, describe_block
from socks5d.server.upstream import bind_routed, route_of

log = logging.getLogger(__name__)

T = TypeVar("T")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Connections queued while a wrong peer is being turned away.
BACKLOG = 8


async def expected_peers(session: SessionContext, destination: Address) -> set[IPAddress]:
    """The IPs allowed to connect; empty means anyone.

    RFC 1928 §6: "In the reply to a BIND, [...] DST.ADDR [...] The SOCKS server will
    typically evaluate the DST.ADDR and DST.PORT fields of the BIND request"; an all-zeros
    address names nobody in particular.

    Raises:
        NotAllowed: a name one of whose addresses the rules block.
    """
    host = destination.host
    if isinstance(host, DomainName):
        targets = await session.services.resolver(host, destination.port)
        peers = {unmapped(ipaddress.ip_address(sockaddr[0])) for _, sockaddr in targets}
        for peer in peers:  # as CONNECT does: a name is judged by every address it has too
            session.authorize(Command.BIND, destination, resolved=peer)
        return peers
    # ::ffff:a.b.c.d is a.b.c.d: the peer's own address is compared unmapped (`address_of`).
    host = unmapped(host)
    if host.packed == bytes(len(host.packed)):
        return set()
    return {host}


def _outward_address(session: SessionContext, peers: set[IPAddress], ipv4_only: bool) -> IPAddress:
    """The address to listen on: configured, else this host's source address toward the
    expected peer (found with a UDP connect, which sends nothing), else our end of the
    client's connection.
    """
    configured = session.services.config.bind.address
    if configured is not None:
        return ipaddress.ip_address(configured)
    for peer in sorted(peers, key=lambda ip: ip.version):
        if ipv4_only and peer.version != 4:
            continue
        family = socket.AF_INET if peer.version == 4 else socket.AF_INET6
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((str(peer), 9))
                return unmapped(ipaddress.ip_address(probe.getsockname()[0]))
        except OSError:
            continue
    local = session.local.host
    assert not isinstance(local, DomainName)
    if ipv4_only and local.version != 4:
        return ipaddress.IPv4Address(0)
    return local


def open_listener(address: IPAddress, ports: tuple[int, int] | None) -> socket.socket:
    """A listening socket on `address`, on a free port of `ports` (any port when None)."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    candidates = [0]
    if ports is not None:
        candidates = list(range(ports[0], ports[1] + 1))
        random.shuffle(candidates)
    last_error: OSError | None = None
    for port in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((str(address), port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
    raise Socks5Error(f"cannot listen on {address} ports {ports}: {last_error}")


@dataclass(slots=True)
class _Waiting:
    """What the wait for the peer has learnt so far."""

    #: the rule that turned away the last peer, unless a peer came in since: when the wait
    #: fails, it names the rule in the access record
    turned_away_by: str | None = None


def _turned_away(session: SessionContext, peer: Address) -> str | None:
    """The rules apply to the incoming peer too: None when they let it in, else the rule that
    turned it away (and a log line)."""
    decision = session.decide(Command.BIND, peer)
    if decision.allowed:
        return None
    session.services.stats.rule_block("socks")
    refusal = describe_block(Command.BIND, peer, None, decision.rule)
    log.warning("BIND for %s: refused a connection: %s", session.record["client"], refusal)
    return decision.rule


async def _accept_expected(
    session: SessionContext,
    listener: socket.socket,
    peers: set[IPAddress],
    strict: bool,
    waiting: _Waiting,
) -> tuple[socket.socket, Address]:
    loop = asyncio.get_running_loop()
    while True:
        incoming, sockaddr = await loop.sock_accept(listener)
        peer = address_of(sockaddr)
        if not peers or peer.host in peers:
            rule = waiting.turned_away_by = _turned_away(session, peer)
            if rule is None:
                incoming.setblocking(False)
                return incoming, peer
            incoming.close()
            if strict:
                raise NotAllowed(f"BIND: connection from {peer} blocked by the rules")
            continue
        incoming.close()
        expected = ", ".join(sorted(str(ip) for ip in peers))
        if strict:
            # SOCKS4: "If a mismatch is found, the CD field in the second reply is set to 91
            # and the SOCKS server closes both connections."
            raise NotAllowed(f"BIND: connection from {format_peer(sockaddr)}, expected {expected}")
        log.warning(
            "BIND on %s: refused a connection from %s (expected %s); still waiting",
            format_peer(listener.getsockname()),
            format_peer(sockaddr),
            expected,
        )


async def wait_for_peer(
    session: SessionContext, listener: socket.socket, peers: set[IPAddress], strict: bool
) -> tuple[socket.socket, Address]:
    """Accept the expected peer, unless the timeout passes or the client closes first. When
    the wait fails after the rules turned a peer away, the record names that rule.

    Raises:
        TTLExpired: no connection within the BIND timeout.
        Socks5Error: the client closed its control connection, or accept failed.
        NotAllowed: SOCKS4 (`strict`): the rules turned the peer away.
    """
    waiting = _Waiting()
    try:
        return await _until_peer(
            session,
            _accept_expected(session, listener, peers, strict, waiting),
            lambda late: late[0].close(),
        )
    finally:
        if waiting.turned_away_by is not None:
            session.record["rule"] = waiting.turned_away_by


async def _until_peer(
    session: SessionContext, arrival: Coroutine[Any, Any, T], discard: Callable[[T], None]
) -> T:
    """`arrival` (the peer connecting, here or at an upstream), raced against the client
    closing its control connection and against `bind.timeout`; what arrives too late is
    `discard`ed.

    Raises:
        Socks5Error: the arrival's failure mapped to its reply; the client left; TTLExpired,
            the only reply code that speaks of time running out.
    """
    accepting = asyncio.create_task(arrival)
    watching = asyncio.create_task(session.watch_control(keep=True))
    timeout = session.services.config.bind.timeout
    try:
        done, _ = await asyncio.wait(
            {accepting, watching}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (accepting, watching):
            task.cancel()
        results = await asyncio.gather(accepting, watching, return_exceptions=True)
    if accepting in done and not accepting.cancelled():
        exc = accepting.exception()
        if exc is not None:
            raise error_for_oserror(exc) from exc
        return accepting.result()
    if not isinstance(results[0], BaseException):  # arrived while being cancelled: too late
        discard(results[0])
    if watching in done:
        raise Socks5Error("client closed the control connection during BIND")
    raise TTLExpired(f"BIND: no connection within {timeout:g} s")


async def serve_bind(session: SessionContext, request: Request) -> None:
    """Listen, send the first reply, accept one peer, send the second reply, relay; or the
    same at the upstream a `[[route]]` names, its two replies passed on."""
    socks4 = isinstance(request, Socks4Request)
    client_ip = session.client_ip
    slots = session.services.bind_slots
    refusal = slots.acquire(client_ip)  # here or at an upstream: a listener on our behalf
    if refusal is not None:
        session.services.stats.limit_refusal("bind_listeners")
        raise Socks5Error(f"BIND listeners: {refusal}")
    try:
        route = route_of(session, Command.BIND, request.destination)
        if route is not None:
            timeout = session.services.config.timeouts.connect
            binding = await bind_routed(session, route, request.destination, timeout)
            if binding is not None:
                await _relay_routed(session, binding)
                return
        try:
            peers = await expected_peers(session, request.destination)
        except OSError as exc:
            raise error_for_oserror(exc) from exc
        address = _outward_address(session, peers, ipv4_only=socks4)
        await _bind_and_relay(session, address, peers, socks4)
    finally:
        slots.release(client_ip)


async def _relay_routed(session: SessionContext, binding: aio.Binding) -> None:
    """The upstream listens: its first reply to the client, then its second (the peer, which
    the `[[socks]]` rules judge as a local BIND's), then the relay."""
    try:
        await session.reply(Reply.SUCCEEDED, Address.from_host(*binding.address))
        incoming = await _until_peer(session, binding.accept_socket(), socket.socket.close)
    except BaseException:
        binding.close()
        raise
    try:
        assert binding.peer is not None
        peer = Address.from_host(*binding.peer)
        session.authorize(Command.BIND, peer)
        await session.reply(Reply.SUCCEEDED, peer)
        log.info(
            "BIND for %s through %s: %s connected",
            session.record["client"],
            session.record["upstream"],
            peer,
        )
        await session.relay(incoming)
    finally:
        incoming.close()


async def _bind_and_relay(
    session: SessionContext, address: IPAddress, peers: set[IPAddress], socks4: bool
) -> None:
    listener = open_listener(address, session.services.config.bind.ports)
    try:
        bound = address_of(listener.getsockname())
        if bound.host == type(bound.host)(0):  # a wildcard is no address to give out
            bound = Address(session.local.host, bound.port)
        await session.reply(Reply.SUCCEEDED, bound)
        log.debug("BIND for %s listening on %s", session.record["client"], bound)
        incoming, peer = await wait_for_peer(session, listener, peers, strict=socks4)
    finally:
        listener.close()
    try:
        await session.reply(Reply.SUCCEEDED, peer)
        log.info("BIND for %s: %s connected to %s", session.record["client"], peer, bound)
        await session.relay(incoming)
    finally:
        incoming.close()
