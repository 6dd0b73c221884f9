"""CONNECT: resolve the destination without blocking, race its addresses (`socks5d.net`),
reply, relay.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable

from socks5d.constants import Command, Reply
from socks5d.errors import Socks5Error, error_for_oserror
from socks5d.net import Target as Target
from socks5d.net import address_of, connect_first, interleave, lookup
from socks5d.proto.address import Address, DomainName
from socks5d.server.context import Request, SessionContext
from socks5d.server.context import Resolver as Resolver
from socks5d.server.upstream import connect_routed, route_of


async def system_resolver(name: DomainName, port: int) -> list[Target]:
    """The system's resolver, asked as the client library asks it (`socks5d.net.lookup`)."""
    try:
        return await lookup(str(name), port)
    except UnicodeError as exc:  # not a name IDNA can encode (any octets arrive on the wire)
        raise socket.gaierror(socket.EAI_NONAME, f"invalid name: {exc}") from exc


async def resolve(destination: Address, resolver: Resolver = system_resolver) -> list[Target]:
    """The socket addresses to try for `destination`, families interleaved."""
    host = destination.host
    if isinstance(host, DomainName):
        return interleave(await resolver(host, destination.port))
    if isinstance(host, ipaddress.IPv6Address):
        return [(socket.AF_INET6, (str(host), destination.port, 0, 0))]
    return [(socket.AF_INET, (str(host), destination.port))]


async def open_outbound(
    destination: Address,
    timeout: float,
    resolver: Resolver = system_resolver,
    check: Callable[[Target], None] | None = None,
) -> socket.socket:
    """Resolve `destination` and connect to it within `timeout` seconds.

    Args:
        check: called with every resolved address before any connect; raises to refuse.

    Raises:
        Socks5Error: with the reply to send (DNS failure and timeout are HostUnreachable).
    """
    try:
        async with asyncio.timeout(timeout):
            targets = await resolve(destination, resolver)
            if check is not None:
                for target in targets:
                    check(target)
            return await connect_first(targets)
    except Socks5Error:
        raise
    except (OSError, TimeoutError) as exc:
        raise error_for_oserror(exc) from exc


async def serve_connect(session: SessionContext, request: Request) -> None:
    """CONNECT (RFC 1928 §6): connect, reply with the outbound socket's address, hand the
    two sockets over to the relay engine.
    """
    services = session.services
    destination = request.destination

    def check(target: Target) -> None:
        # A name is checked again with each address it resolved to (DNS rebinding).
        if isinstance(destination.host, DomainName):
            resolved = address_of(target[1]).host
            assert not isinstance(resolved, DomainName)
            session.authorize(Command.CONNECT, destination, resolved=resolved)

    started = time.monotonic()
    timeout = services.config.timeouts.connect
    routed = None
    try:
        route = route_of(session, Command.CONNECT, destination)
        if route is not None:
            routed = await connect_routed(session, route, destination, timeout)
        if routed is None:
            upstream = await open_outbound(destination, timeout, services.resolver, check)
            bound = address_of(upstream.getsockname())
        else:
            upstream, bound = routed
    finally:  # every attempt, failed ones too: a slow destination shows either way
        services.stats.connect.observe(time.monotonic() - started)
    del check  # nothing the tunnel needs stays referenced while it lasts
    try:
        if upstream.family != socket.AF_UNIX:  # a protected upstream's bridge is a socket pair
            # Relayed bytes go out as they come, as the client's own side does (listen.py).
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await session.reply(Reply.SUCCEEDED, bound)
    except BaseException:
        upstream.close()
        raise
    session.hand_over(upstream)
