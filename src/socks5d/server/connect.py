"""Outbound TCP connections: resolve without blocking, then race the addresses.

Happy-eyeballs style (RFC 8305): addresses of both families interleaved, a new attempt
started every `ATTEMPT_DELAY` seconds or as soon as the previous one fails; the first to
connect wins and the rest are cancelled and closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from socks5d.errors import (
    ConnectionRefused,
    HostUnreachable,
    NetworkUnreachable,
    Socks5Error,
    error_for_oserror,
)
from socks5d.proto.address import Address, DomainName
from socks5d.proto.constants import Reply
from socks5d.server.addresses import address_of

if TYPE_CHECKING:
    from socks5d.server.session import Request, Session

#: RFC 8305 §5: "A simple implementation can have a fixed delay ... 250 milliseconds".
ATTEMPT_DELAY = 0.25

SocketAddress = tuple[str, int] | tuple[str, int, int, int]
Target = tuple[socket.AddressFamily, SocketAddress]

#: When every attempt failed, the error that says most: the farthest any attempt got.
_ERROR_RANK: dict[type[Socks5Error], int] = {
    ConnectionRefused: 0,
    HostUnreachable: 1,
    NetworkUnreachable: 2,
}


#: Resolves a domain name and port to the addresses to try (may raise `socket.gaierror`).
Resolver = Callable[[DomainName, int], Awaitable[list[Target]]]


async def system_resolver(name: DomainName, port: int) -> list[Target]:
    """The system's resolver (`getaddrinfo`), run off the event loop by asyncio."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            str(name), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except UnicodeError as exc:  # not a name IDNA can encode (any octets arrive on the wire)
        raise socket.gaierror(socket.EAI_NONAME, f"invalid name: {exc}") from exc
    return [(family, address) for family, _, _, _, address in infos]  # type: ignore[misc]


async def resolve(destination: Address, resolver: Resolver = system_resolver) -> list[Target]:
    """The socket addresses to try for `destination`, families interleaved."""
    host = destination.host
    if isinstance(host, DomainName):
        return interleave(await resolver(host, destination.port))
    if isinstance(host, ipaddress.IPv6Address):
        return [(socket.AF_INET6, (str(host), destination.port, 0, 0))]
    return [(socket.AF_INET, (str(host), destination.port))]


def interleave(targets: Sequence[Target]) -> list[Target]:
    """RFC 8305 §4: alternate families, starting with the family of the first address."""
    by_family: dict[int, list[Target]] = {}
    for target in targets:
        if target not in by_family.setdefault(target[0], []):
            by_family[target[0]].append(target)
    queues = list(by_family.values())
    ordered: list[Target] = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


async def _attempt(family: socket.AddressFamily, address: SocketAddress) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_first(targets: Iterable[Target], delay: float = ATTEMPT_DELAY) -> socket.socket:
    """Connect to the first of `targets` that answers; returns a non-blocking socket.

    Raises:
        Socks5Error: the most telling error of all the failed attempts.
    """
    remaining = list(targets)
    pending: set[asyncio.Task[socket.socket]] = set()
    errors: list[Socks5Error] = []
    try:
        while remaining or pending:
            if remaining:
                family, address = remaining.pop(0)
                pending.add(asyncio.create_task(_attempt(family, address)))
            done, pending = await asyncio.wait(
                pending,
                timeout=delay if remaining else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            winners = [task.result() for task in done if task.exception() is None]
            for task in done:
                if (exc := task.exception()) is not None:
                    errors.append(error_for_oserror(exc))
            if winners:
                for extra in winners[1:]:
                    extra.close()
                return winners[0]
    finally:
        for task in pending:
            task.cancel()
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, socket.socket):
                result.close()
    if not errors:
        raise HostUnreachable("no address to connect to")
    raise min(errors, key=lambda error: _ERROR_RANK.get(type(error), len(_ERROR_RANK)))


async def open_outbound(
    destination: Address, timeout: float, resolver: Resolver = system_resolver
) -> socket.socket:
    """Resolve `destination` and connect to it within `timeout` seconds.

    Raises:
        Socks5Error: with the reply to send (DNS failure and timeout are HostUnreachable).
    """
    try:
        async with asyncio.timeout(timeout):
            return await connect_first(await resolve(destination, resolver))
    except Socks5Error:
        raise
    except (OSError, TimeoutError) as exc:
        raise error_for_oserror(exc) from exc


async def serve_connect(session: Session, request: Request) -> None:
    """CONNECT (RFC 1928 §6): connect, reply with the outbound socket's address, relay."""
    server = session.server
    upstream = await open_outbound(
        request.destination, server.config.timeouts.connect, server.resolver
    )
    try:
        await session.reply(Reply.SUCCEEDED, address_of(upstream.getsockname()))
        await session.relay(upstream)
    finally:
        upstream.close()
