"""Socket-level pieces the asyncio and the blocking clients share: reading one message of
the proxy's from a socket ready to read, and the addresses of a UDP association's socket
and datagrams. No waiting here: that is each driver's own (an event loop, or a blocking
call).
"""

from __future__ import annotations

import socket
from typing import Any

from socks5d.client.handshake import Link, take_event, unwrap_datagram
from socks5d.gss import Protection
from socks5d.net import address_of
from socks5d.proto import Address, AddressType, Event
from socks5d.proto.proxy_protocol import encode_v1, encode_v2
from socks5d.proxies import Proxy

#: Seconds allowed for connecting to the first proxy, and for each handshake.
DEFAULT_TIMEOUT = 30.0
#: The most octets looked at (or, with protection, taken) by one read.
PEEK_SIZE = 4096
#: The wildcard address of each family.
_ANY = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}


def proxy_header(sock: socket.socket, version: int) -> bytes:
    """The PROXY protocol header (`version` 1 or 2) a balancer would send ahead of this
    connection: our end as the source, the proxy's as the destination."""
    # both ends unmapped alike: one family
    source, destination = address_of(sock.getsockname()), address_of(sock.getpeername())
    if version == 1:
        return encode_v1(source, destination)
    return encode_v2(source, destination)


def read_once(sock: socket.socket, link: Link) -> Event | None:
    """One read from `sock`: the proxy's next message, or None while it is incomplete.

    Only the bytes the message used are consumed from the socket (with protection, whole
    tokens: what is left over stays in `link`), so what follows the message stays there for
    whoever reads the socket next. A non-blocking socket that has nothing raises
    `BlockingIOError`, and nothing is consumed.
    """
    if link.protection is not None:
        link.protection.check()  # a bad token after the ones already read
        return link.take_wire(sock.recv(PEEK_SIZE))
    event, used = take_event(link.connection, sock.recv(PEEK_SIZE, socket.MSG_PEEK))
    if used:
        sock.recv(used)
    return event


def datagram_source(control: socket.socket, relay: Address) -> tuple[socket.AddressFamily, str]:
    """The family and local IP for the UDP socket of an association whose relay is `relay`:
    the IP of the TCP connection, which the proxy expects datagrams from; else any.
    """
    family = socket.AF_INET6 if relay.type == AddressType.IPV6 else socket.AF_INET
    local_ip = control.getsockname()[0] if control.family == family else _ANY[family]
    return family, str(local_ip)


def sockaddr(address: Address) -> tuple[str, int]:
    """`address` (an IP) as a socket address to send to."""
    return str(address.host), address.port


def received(
    data: bytes,
    sender: Any,
    relay: Address,
    protection: Protection | None,
    inner: tuple[Address, ...] = (),
) -> tuple[bytes, tuple[str, int]] | None:
    """A datagram from socket address `sender` as (data, (host, port) it came from), or None
    when it is to be dropped (see `handshake.unwrap_datagram`).
    """
    datagram = unwrap_datagram(data, address_of(sender), relay, protection, inner)
    if datagram is None:
        return None
    return datagram.data, sockaddr(datagram.destination)


class SocketUdpEndpoint:
    """What the blocking and the anyio UDP endpoints share: the association's proxies and
    relays, and a UDP socket of its own, bound to the address its TCP connection uses."""

    def __init__(
        self,
        proxy: Proxy,
        controls: list[socket.socket],
        relays: list[Address],
        protection: Protection | None = None,
        *,
        blocking: bool,
    ) -> None:
        #: the last proxy: the one that sends the datagrams to their destinations
        self.proxy = proxy
        #: GSS-API per-message protection of the datagrams, when agreed
        self.protection = protection
        self._controls = controls
        #: BND.ADDR/BND.PORT: the relay datagrams go to (the first proxy's, through a chain)
        self.relay = relays[0]
        #: through a chain: the later hops' relays, in order
        self.inner = tuple(relays[1:])
        family, local_ip = datagram_source(controls[0], self.relay)
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(blocking)
            self._sock.bind((local_ip, 0))
        except BaseException:
            self._sock.close()
            raise
        #: datagrams dropped on the way in (not from the relay, malformed, fragments)
        self.dropped = 0
