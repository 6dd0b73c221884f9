"""Requests that a `[[route]]` sends through upstream proxies: the candidates tried in the
route's order (`routing.Health`), through the client library, and what the client is told.

An upstream that cannot be reached or fails its handshake (refused, timed out, a bad or
refused login, a protocol error) is skipped for the route's `upstream_retry` seconds and the
next one is tried; one log line says so, and one more when it works again. An upstream that
answers the request with a failure (X'05' from the destination, say) is up: its answer is the
client's, with the same code. When every candidate failed the client gets X'04'.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from socks5d.client import aio
from socks5d.client.route import udp_chain
from socks5d.constants import Command
from socks5d.errors import (
    AuthFailed,
    CommandNotSupported,
    HostUnreachable,
    LocalProtocolError,
    ProtocolError,
    ProxyTimeout,
    Socks5Error,
)
from socks5d.proto import Address
from socks5d.proxies import ProxyLike
from socks5d.routing import Health, Route, Upstream
from socks5d.server.context import SessionContext, rule_request

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What an upstream's failure to carry the request is, rather than its answer to it.
_HANDSHAKE_FAILURES = (ProtocolError, AuthFailed, ProxyTimeout, LocalProtocolError)


def route_of(
    session: SessionContext, command: Command, destination: Address | None
) -> Route | None:
    """The route of a request (after the `[[socks]]` rules passed it), written to the record;
    None when it goes out directly (no route matched, or a route's only upstream is `direct`).
    """
    record = session.record
    request = rule_request(
        session.client_ip, record["listener"], session.user, command, destination
    )
    route = session.services.routes.route_for(request)
    if route is None:
        return None
    record["route"] = route.name
    if all(upstream.direct for upstream in route.via):
        record["upstream"] = "direct"
        return None
    return route


def is_handshake_failure(exc: BaseException) -> bool:
    """Whether `exc` says the upstream did not carry the request (unreachable, timed out, a
    handshake that failed), as opposed to its reply to the request."""
    if not isinstance(exc, Socks5Error):
        return isinstance(exc, OSError | TimeoutError)
    return type(exc) in _HANDSHAKE_FAILURES


async def through_route(
    session: SessionContext, route: Route, attempt: Callable[[Upstream], Awaitable[T]]
) -> T | None:
    """`attempt(upstream)` for the candidates of `route` in turn, until one carries the
    request; None when the candidate to use is `direct` (the caller goes out itself). The
    upstream used goes to the record.

    Raises:
        Socks5Error: the upstream's own failure reply (the client gets the same code), or
            HostUnreachable when no candidate carried the request.
    """
    health = session.services.health
    failures: list[str] = []
    for upstream in health.order(route, time.monotonic()):
        session.record["upstream"] = str(upstream)
        if upstream.direct:
            return None
        try:
            result = await attempt(upstream)
        except Exception as exc:  # cancelled: the session ends, no word on the upstream
            if not is_handshake_failure(exc):
                _worked(health, upstream, route)
                raise
            failures.append(f"{upstream}: {exc}")
            if health.failed(upstream, route, time.monotonic()):
                log.warning(
                    "upstream %s of %s is down for %gs: %s", upstream, route.name, route.retry, exc
                )
            continue
        _worked(health, upstream, route)
        return result
    raise HostUnreachable(f"no upstream of {route.name} carried it ({'; '.join(failures)})")


async def connect_routed(
    session: SessionContext, route: Route, destination: Address, timeout: float
) -> tuple[socket.socket, Address] | None:
    """A connection to `destination` through `route` (`through_route`), and the BND.ADDR to
    reply: the upstream's, or our end when it gives none (an HTTP proxy)."""

    async def attempt(upstream: Upstream) -> tuple[socket.socket, Address]:
        sock, bound = await aio.tunnel(
            str(destination.host), destination.port, proxy=list(upstream.chain), timeout=timeout
        )
        if bound.port == 0:
            bound = Address.from_host(*sock.getsockname()[:2])
        return sock, bound

    return await through_route(session, route, attempt)


async def bind_routed(
    session: SessionContext, route: Route, peer: Address, timeout: float
) -> aio.Binding | None:
    """A BIND at the upstream `route` leads to (`through_route`), expecting `peer`; its
    `address` is the first reply to pass on, `accept_socket()` waits for the second."""

    async def attempt(upstream: Upstream) -> aio.Binding:
        chain: list[ProxyLike] = list(upstream.chain)
        return await aio.open_bind(str(peer.host), peer.port, proxy=chain, timeout=timeout)

    return await through_route(session, route, attempt)


async def associate_routed(
    session: SessionContext, route: Route, timeout: float
) -> aio.UdpEndpoint | None:
    """A UDP association of our own with the upstream `route` leads to (`through_route`),
    which the client's datagrams go out through: SOCKS5 proxies only (a chain of them too).

    Raises:
        CommandNotSupported: the upstream is (or has a hop that is) HTTP or SOCKS4.
    """

    async def attempt(upstream: Upstream) -> aio.UdpEndpoint:
        chain: list[ProxyLike] = list(upstream.chain)
        try:
            udp_chain(chain)
        except ValueError as exc:
            raise CommandNotSupported(f"through {upstream}: {exc}") from None
        return await aio.open_udp(proxy=chain, timeout=timeout)

    return await through_route(session, route, attempt)


def _worked(health: Health, upstream: Upstream, route: Route) -> None:
    if health.worked(upstream):
        log.info("upstream %s of %s is up again", upstream, route.name)
