"""The `--workers` supervisor's port reservations: one bound (not listening) SO_REUSEPORT
socket per listen address, so that port 0 becomes one real port all workers share, and no
other program takes a port while a worker restarts.

`PortReservations` follows the configuration: `update(listen)` on a reload reserves the added
addresses and releases the removed ones, all or nothing. A new address with port 0 cannot be
shared (each worker would get a port of its own): it is refused.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from socks5d.config import ListenAddress
from socks5d.errors import ConfigError


def _stream_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def reserve(address: ListenAddress) -> tuple[ListenAddress, socket.socket]:
    """Bind one SO_REUSEPORT socket to `address`; the address with its real port, and the
    socket to keep open.

    Raises:
        OSError: the address cannot be bound (in use, not local).
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # First without SO_REUSEPORT: fails when anyone listens there, even a program with
    # SO_REUSEPORT of its own, whose connections the workers would share.
    with _stream_socket(family) as probe:
        probe.bind(sockaddr)
        port = probe.getsockname()[1]
    sock = _stream_socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((sockaddr[0], port, *sockaddr[2:]))
    except BaseException:
        sock.close()
        raise
    return ListenAddress(address.host, port), sock


class PortReservations:
    """The reserved sockets, by the address the configuration names (port 0 included)."""

    def __init__(self) -> None:
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigError("performance.workers: needs SO_REUSEPORT, missing on this system")
        #: configured address -> (the address with its real port, the reserved socket)
        self.held: dict[ListenAddress, tuple[ListenAddress, socket.socket]] = {}
        #: the first `update` (the start) is done: port 0 can no longer be added
        self.started = False

    def shared(self, listen: Iterable[ListenAddress]) -> tuple[ListenAddress, ...]:
        """`listen` with the real port of every reserved port-0 address.

        Raises:
            ConfigError: a port-0 address that is not reserved (new in a reload).
        """
        found = []
        for address in listen:
            if address in self.held:
                found.append(self.held[address][0])
            elif address.port == 0:
                raise ConfigError(
                    f"listen: {address} (port 0) cannot be added by a reload under "
                    "performance.workers: each worker would listen on a port of its own; "
                    "name the port, or restart"
                )
            else:
                found.append(address)
        return tuple(found)

    def update(self, listen: Iterable[ListenAddress]) -> tuple[ListenAddress, ...]:
        """Hold exactly the addresses of `listen`: reserve the new ones, release the others;
        nothing changes when one fails. Returns `listen` with real ports (`shared`).

        Raises:
            ConfigError: a new address has port 0 (see `shared`).
            OSError: a new address cannot be bound.
        """
        wanted = list(dict.fromkeys(listen))
        added = [address for address in wanted if address not in self.held]
        for address in added:
            if address.port == 0 and self.started:
                self.shared([address])  # raises: a reload cannot share a new port 0
        new: dict[ListenAddress, tuple[ListenAddress, socket.socket]] = {}
        try:
            for address in added:
                new[address] = reserve(address)
        except BaseException:
            for _, sock in new.values():
                sock.close()
            raise
        for address in [address for address in self.held if address not in wanted]:
            self.held.pop(address)[1].close()
        self.held.update(new)
        self.started = True
        return self.shared(wanted)

    def sockets(self) -> list[socket.socket]:
        return [sock for _, sock in self.held.values()]

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()
        self.held.clear()
