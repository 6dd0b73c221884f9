"""Socket-level helpers for server and client alike: socket addresses as protocol addresses,
outbound TCP connections with addresses raced happy-eyeballs style, and the client's name
lookups (`lookup`, and `lookup_blocking` for blocking code: one question to the resolver).

RFC 8305: addresses of both families interleaved, a new attempt started every
`ATTEMPT_DELAY` seconds or as soon as the previous one fails; the first to connect wins and
the rest are cancelled and closed.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from socks5d.errors import (
    ConnectionRefused,
    HostUnreachable,
    NetworkUnreachable,
    Socks5Error,
    error_for_oserror,
)
from socks5d.proto import Address


def format_peer(address: Any) -> str:
    """`host:port` of a socket address, IPv6 in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unmapped(
    host: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), else `host`."""
    if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
        return host.ipv4_mapped
    return host


def address_of(sockaddr: Any) -> Address:
    """A socket address as a protocol `Address`; IPv4-mapped IPv6 addresses become IPv4."""
    return Address(unmapped(ipaddress.ip_address(sockaddr[0].partition("%")[0])), sockaddr[1])


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


def numeric_target(host: str, port: int) -> Target | None:
    """The socket address of an IP address literal `host`, or None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 6:
        return (socket.AF_INET6, (host, port, 0, 0))
    return (socket.AF_INET, (host, port))


def _stream_targets(infos: Sequence[tuple[Any, ...]]) -> list[Target]:
    """`getaddrinfo` results as the addresses to try, families interleaved (RFC 8305 §4)."""
    return interleave([(family, sockaddr) for family, _, _, _, sockaddr in infos])


async def lookup(host: str, port: int) -> list[Target]:
    """The TCP socket addresses of `host` (a name or an IP literal), families interleaved;
    the system's resolver (`getaddrinfo`), run off the event loop by asyncio.

    Raises:
        socket.gaierror: the name does not resolve.
    """
    if (target := numeric_target(host, port)) is not None:
        return [target]
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return _stream_targets(infos)


def lookup_blocking(host: str, port: int) -> list[Target]:
    """`lookup` for blocking code: the same question to the same resolver, the same answer."""
    if (target := numeric_target(host, port)) is not None:
        return [target]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return _stream_targets(infos)


#: connect() results that mean "under way": wait until the socket is writable.
IN_PROGRESS = {errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR}


async def connect_numeric(sock: socket.socket, address: SocketAddress) -> None:
    """Connect the non-blocking `sock` to a numeric socket address.

    The event loop's `sock_connect` would do, but uvloop's resolves even a numeric address in
    a worker thread first (a thread hand-off per connection); this is the plain
    connect / wait-writable / SO_ERROR sequence.

    Raises:
        OSError: with the errno connect() reported.
    """
    error = sock.connect_ex(address)
    if error in IN_PROGRESS:
        loop = asyncio.get_running_loop()
        writable = loop.create_future()

        def wake() -> None:
            if not writable.done():
                writable.set_result(None)

        fd = sock.fileno()
        loop.add_writer(fd, wake)
        try:
            await writable
        finally:
            loop.remove_writer(fd)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


async def _attempt(family: socket.AddressFamily, address: SocketAddress) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await connect_numeric(sock, address)
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
    if len(remaining) == 1:  # nothing to race: no task, no timer
        try:
            return await _attempt(*remaining[0])
        except OSError as exc:
            raise error_for_oserror(exc) from exc
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
                if (failure := task.exception()) is not None:
                    mapped = error_for_oserror(failure)
                    mapped.__cause__ = failure  # the errno, for whoever reports it
                    errors.append(mapped)
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
    raise most_telling(errors)


def most_telling(errors: Sequence[Socks5Error]) -> Socks5Error:
    """Of the failed attempts to reach one destination, the error that says most (refused
    over unreachable over timed out: `_ERROR_RANK`)."""
    return min(errors, key=lambda error: _ERROR_RANK.get(type(error), len(_ERROR_RANK)))


def discard_unread(sock: socket.socket) -> None:
    """Read away what the peer sent and nobody will read, so that close() sends FIN.

    Closing a socket with unread received data makes the kernel send RST, and an RST can
    destroy a reply the client has not read yet (a failure reply, or the tail of a tunnel).
    """
    try:
        for _ in range(16):  # bounded: a client that keeps sending gets its RST
            if not sock.recv(4096):
                break
    except OSError:
        pass  # EAGAIN: nothing more buffered; or the connection is already gone
