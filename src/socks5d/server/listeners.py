"""The listening sockets of a server: binding them, their accept loops, and changing the set
while the server runs (a reload), all or nothing.

listeners = Listeners(accepted, reuse_port=False)
listeners.open(config.listen)           # binds every address; starts accepting
change = listeners.prepare(new_listen)  # binds what is new, accepts nothing yet
change.commit() / change.abort()        # swap the sets, or close what `prepare` bound
listeners.close()

A socket is known by the listen address it was bound for (`ListenAddress`), so "127.0.0.1:0"
keeps its real port across reloads. What happens to an accepted connection is the caller's
(`accepted(client, peer, listener_name)`); nothing here knows SOCKS.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from socks5d.config import ListenAddress
from socks5d.net import format_peer

log = logging.getLogger("socks5d.server.listen")

BACKLOG = 1024
#: accept() errors that mean "out of descriptors or memory": back off and retry, never stop.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
#: The longest pause of accepting after running out of descriptors.
MAX_ACCEPT_BACKOFF = 1.0
#: The most connections accepted per readiness event, before other work gets a turn.
ACCEPT_BATCH = 32

Accepted = Callable[[socket.socket, Any, str], None]


class ListenError(OSError):
    """A listen address could not be bound; the message names it:
    `cannot listen on 0.0.0.0:1080: [Errno 98] Address already in use`.
    """

    def __init__(self, address: ListenAddress, cause: OSError) -> None:
        super().__init__(f"cannot listen on {address}: {cause}")
        self.errno = cause.errno
        self.address = address


def bind(address: ListenAddress, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening socket on `address`.

    Raises:
        ListenError: the address cannot be resolved or bound (in use, not local, privileged).
    """
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(address, exc) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # worker processes: the kernel spreads connections over them
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(address, exc) from exc
    except BaseException:
        sock.close()
        raise
    return sock


def _name(sock: socket.socket) -> str:
    return format_peer(sock.getsockname())


class Listeners:
    """The bound listening sockets, by the listen address each was bound for.

    Args:
        accepted: called with each accepted (blocking) socket, its peer address and the
            listener's name ("127.0.0.1:1080").
        reuse_port: bind with SO_REUSEPORT, beside other processes on the same addresses.
    """

    def __init__(self, accepted: Accepted, *, reuse_port: bool = False) -> None:
        self.accepted = accepted
        self.reuse_port = reuse_port
        self.sockets: dict[ListenAddress, socket.socket] = {}
        #: pauses of accepting after running out of descriptors
        self._paused: dict[socket.socket, asyncio.TimerHandle] = {}
        self._backoff = 0.0

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) each listener is bound to (real ports when 0 was asked)."""
        return [sock.getsockname()[:2] for sock in self.sockets.values()]

    def open(self, listen: Iterable[ListenAddress]) -> None:
        """Bind every address of `listen` and start accepting; on an error none stays bound.

        Raises:
            ListenError: an address cannot be bound.
        """
        self.prepare(listen).commit()

    def prepare(self, listen: Iterable[ListenAddress]) -> ListenerChange:
        """Bind the addresses of `listen` not bound yet, without accepting on them; what is
        bound already stays as it is until `commit`.

        Raises:
            ListenError: an address cannot be bound; nothing is changed.
        """
        wanted = list(dict.fromkeys(listen))
        kept = {address: self.sockets[address] for address in wanted if address in self.sockets}
        added: dict[ListenAddress, socket.socket] = {}
        try:
            for address in wanted:
                if address not in kept:
                    added[address] = bind(address, reuse_port=self.reuse_port)
        except BaseException:
            for sock in added.values():
                sock.close()
            raise
        return ListenerChange(self, wanted, kept, added)

    def close(self) -> None:
        """Stop accepting and close every listening socket (accepted connections go on)."""
        for address in list(self.sockets):
            self._close(address)

    def _close(self, address: ListenAddress) -> None:
        sock = self.sockets.pop(address)
        handle = self._paused.pop(sock, None)
        if handle is not None:
            handle.cancel()
        else:
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()

    def _accept(self, listener: socket.socket, name: str) -> None:
        """The listener is readable: accept what is queued (up to `ACCEPT_BATCH`), hand each
        over. Out of descriptors: stop watching the listener for a growing pause.
        """
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                client, peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self._backoff = min(MAX_ACCEPT_BACKOFF, self._backoff * 2 or 0.01)
                    log.warning("accept on %s: %s; retrying in %.2fs", name, exc, self._backoff)
                    loop.remove_reader(listener.fileno())
                    self._paused[listener] = loop.call_later(
                        self._backoff, self._watch, listener, name
                    )
                else:
                    log.warning("accept on %s: %s", name, exc)
                return
            self._backoff = 0.0
            self.accepted(client, peer, name)

    def _watch(self, listener: socket.socket, name: str) -> None:
        self._paused.pop(listener, None)
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener, name)


class ListenerChange:
    """A new set of listen addresses, bound but not yet in force (`Listeners.prepare`)."""

    def __init__(
        self,
        listeners: Listeners,
        wanted: list[ListenAddress],
        kept: dict[ListenAddress, socket.socket],
        added: dict[ListenAddress, socket.socket],
    ) -> None:
        self._listeners = listeners
        self._wanted = wanted
        self._kept = kept
        self.added = added

    @property
    def bound(self) -> list[ListenAddress]:
        """The addresses the sockets of the new set are bound to (real ports)."""
        sockets = [*self._kept.values(), *self.added.values()]
        return [ListenAddress(*sock.getsockname()[:2]) for sock in sockets]

    def commit(self) -> None:
        """Close the listeners no longer wanted (their connections go on), start accepting
        on the new ones."""
        listeners = self._listeners
        for address in [a for a in listeners.sockets if a not in self._kept]:
            name = _name(listeners.sockets[address])
            listeners._close(address)
            log.info("stopped listening on %s", name, extra={"fields": {"listener": name}})
        for address in self._wanted:  # the file's order
            sock = self._kept.get(address) or self.added[address]
            listeners.sockets.pop(address, None)
            listeners.sockets[address] = sock
            if address in self.added:
                name = _name(sock)
                log.info("listening on %s", name, extra={"fields": {"listener": name}})
                listeners._watch(sock, name)
        self.added = {}

    def abort(self) -> None:
        """Close what `prepare` bound; the listeners in force stay."""
        for sock in self.added.values():
            sock.close()
        self.added = {}
