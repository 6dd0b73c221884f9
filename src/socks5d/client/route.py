"""The way through a chain of proxies, as steps: the one walk both the asyncio and the
blocking clients drive. Like the handshake it runs (`socks5d.client.handshake`), it does no
I/O: it yields what it needs done and is sent back the answer.

    steps = walk(chain, Command.CONNECT, host, port)
    step = next(steps)  # Lookup: send the addresses; Dial, NextHop: do it, send None;
    ...                 # bytes and READ: the handshake's (see aio.py / sync.py)

Here, too, lives the choice of DST.ADDR (a name the proxy resolves, or an address looked up
here), so that both clients send the same request for the same destination.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, NamedTuple

from socks5d.client.handshake import (
    Link,
    _Read,
    destination_for,
    negotiate,
    usable_address,
)
from socks5d.errors import ProxyTimeout, Socks5Error
from socks5d.net import Target, numeric_target
from socks5d.proto import Address, Command, Event
from socks5d.proxies import Proxy, ProxyLike, as_chain


@dataclass(frozen=True, slots=True)
class Lookup:
    """Yielded for the TCP addresses of `host`: send back `socks5d.net.lookup`'s answer
    (`lookup_blocking` in blocking code), families interleaved.
    """

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Dial:
    """Yielded once, first: connect to the first proxy, `proxy`, at the first of `targets`
    that answers; send back None. The socket is the driver's. A failure is raised as
    `unreachable` makes it.
    """

    proxy: Proxy
    targets: list[Target]
    #: how errors name this hop (`hop_label`)
    label: str


@dataclass(frozen=True, slots=True)
class NextHop:
    """Yielded as each hop's handshake begins: from here on the steps' bytes are `link`'s,
    with `proxy` (whose deadline starts now). With `carrier`, the previous hop agreed on
    per-message protection (RFC 1961 §5): the driver first puts a bridge over `carrier`'s
    protection in place of its socket, and this hop's handshake goes through it.
    """

    proxy: Proxy
    link: Link
    carrier: Link | None
    #: how errors name this hop (`hop_label`)
    label: str


#: What a walk yields: a handshake's bytes to write or READ, or a Lookup, Dial or NextHop.
WalkStep = bytes | _Read | Lookup | Dial | NextHop
#: A walk (or a handshake, whose steps are a subset) returns the reply's BND.ADDR/BND.PORT.
#: It is sent the event read after READ, the addresses after Lookup, else None.
Walk = Generator[WalkStep, Any, Address]


class Stepper:
    """Runs a walk (or a handshake) for a driver: iterating gives each step; set `answer`
    to what a step asks for (the event read, the addresses looked up) before the next.

        stepper = Stepper(walk(chain, command, host, port))
        for step in stepper:
            if isinstance(step, Lookup):
                stepper.answer = lookup_blocking(step.host, step.port)
            ...
        bound = stepper.result
    """

    def __init__(self, steps: Walk) -> None:
        self._steps = steps
        #: sent with the next step: the event after READ, the addresses after Lookup
        self.answer: Event | list[Target] | None = None
        self._result: Address | None = None

    def __iter__(self) -> Stepper:
        return self

    def __next__(self) -> WalkStep:
        answer, self.answer = self.answer, None
        try:
            return self._steps.send(answer)
        except StopIteration as done:
            self._result = done.value
            raise

    @property
    def result(self) -> Address:
        """What the steps returned, once they have all been done."""
        assert self._result is not None, "the steps are not done"
        return self._result


def resolved_here(proxy: Proxy, host: str) -> bool:
    """Whether the name `host` is to be looked up here, not by `proxy` (socks5, socks4)."""
    return not proxy.remote_dns and numeric_target(host, 0) is None


def destination(proxy: Proxy, host: str, port: int, targets: Sequence[Target] = ()) -> Address:
    """DST.ADDR for `host`: the name itself when the proxy resolves it (socks5h, socks4a) or
    an IP as given; else the first of `targets`, the addresses of the name looked up here
    (SOCKS4 carries IPv4 only: its DSTIP is four octets).

    Raises:
        socket.gaierror: the name has no usable address (EAI_NONAME).
    """
    if not resolved_here(proxy, host):
        return destination_for(proxy, host, port)
    usable = [t for t in targets if proxy.version != 4 or t[0] == socket.AF_INET]
    if not usable:
        raise socket.gaierror(socket.EAI_NONAME, f"no usable address for {host}")
    return Address.from_host(usable[0][1][0], port)


def _named(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hop_label(proxy: Proxy, number: int, total: int) -> str:
    """How an error names a hop: `proxy 127.0.0.1:1080`; in a chain of several,
    `proxy 2 of 3 (127.0.0.1:1081)`. The same words from every face of the client."""
    where = _named(proxy.host, proxy.port)
    return f"proxy {where}" if total == 1 else f"proxy {number} of {total} ({where})"


def in_context(exc: Socks5Error, label: str, host: str, port: int) -> Socks5Error:
    """`exc`, a hop's failure, with its message naming the hop and what was asked of it:
    `proxy 2 of 2 (127.0.0.1:1081) replied X'05' Connection refused for example.org:443`."""
    message = str(exc)
    if message.startswith("replied "):  # a failure REP (`errors.error_for_reply`)
        exc.args = (f"{label} {message} for {_named(host, port)}",)
    else:
        exc.args = (f"{label}: {message} (request for {_named(host, port)})",)
    return exc


def unreachable(exc: OSError | Socks5Error, label: str) -> OSError:
    """A failed connect to the first proxy as an `OSError` of the same kind with the same
    errno, naming the proxy: `[Errno 111] could not connect to proxy 1 of 2 (127.0.0.1:1080):
    Connection refused`. Not a `Socks5Error`: no proxy replied."""
    cause = exc.__cause__
    code = getattr(exc, "errno", None) or getattr(cause, "errno", None)
    reason = getattr(exc, "strerror", None) or getattr(cause, "strerror", None) or str(exc)
    kind: type[OSError] = OSError
    for builtin in (ConnectionRefusedError, TimeoutError, ConnectionError):
        if isinstance(exc, builtin):
            kind = builtin
            break
    message = f"could not connect to {label}: {reason}"
    return kind(code, message) if code is not None else kind(message)


def walk(chain: list[Proxy], command: Command, host: str, port: int) -> Walk:
    """Connect to the first proxy, CONNECT through each to the next, then `command` to
    `host`:`port` at the last; returns the last reply's BND.ADDR/BND.PORT (the first reply,
    for BIND). A hop with per-message protection carries the next hops inside it. A hop's
    failure names the hop and its destination (`in_context`).
    """
    first = chain[0]
    total = len(chain)
    targets = yield Lookup(first.host, first.port)
    yield Dial(first, targets, hop_label(first, 1, total))
    hops = [(proxy, Command.CONNECT, nxt.host, nxt.port) for proxy, nxt in pairwise(chain)]
    hops.append((chain[-1], command, host, port))
    carrier: Link | None = None
    bound = Address.unspecified()
    for number, (proxy, hop_command, hop_host, hop_port) in enumerate(hops, 1):
        link = Link()
        label = hop_label(proxy, number, total)
        yield NextHop(proxy, link, carrier, label)
        targets = (yield Lookup(hop_host, hop_port)) if resolved_here(proxy, hop_host) else []
        request = destination(proxy, hop_host, hop_port, targets)
        try:
            bound = yield from negotiate(link, proxy, hop_command, request)
        except Socks5Error as exc:
            raise in_context(exc, label, hop_host, hop_port) from None
        carrier = link if link.protection is not None else None
    return bound


def udp_chain(proxy: ProxyLike | list[ProxyLike]) -> list[Proxy]:
    """The chain of a UDP ASSOCIATE: SOCKS5 proxies only, each of which opens an association
    (`udp_relays`); GSS-API protection only with one proxy.

    Raises:
        ValueError: naming the hop that cannot carry datagrams.
    """
    chain = as_chain(proxy)
    for number, hop in enumerate(chain, 1):
        if hop.version != 5:
            raise ValueError(f"UDP ASSOCIATE needs SOCKS5 at every hop: hop {number}, {hop.url}")
        if hop.gssapi is not None and len(chain) > 1:
            raise ValueError(
                f"UDP ASSOCIATE through a chain carries no GSS-API protection: hop {number}, "
                f"{hop.url}"
            )
    return chain


#: Puts a bridge over a link's protection in place of a socket (the driver's own kind).
Bridge = Callable[[socket.socket, Link], socket.socket]


@dataclass(slots=True)
class Position:
    """Where a driver is on its walk: the proxy and link of the hop being negotiated, and
    the socket (None until dialled; a bridge's end once a hop carries the next).
    """

    link: Link = field(default_factory=Link)
    sock: socket.socket | None = None
    #: None until the first hop begins
    proxy: Proxy | None = None
    #: how errors name the hop under way (`hop_label`); None until the first is dialled
    label: str | None = None

    @property
    def connected(self) -> socket.socket:
        """The socket the steps' bytes go over (a walk dials before anything else)."""
        assert self.sock is not None, "a step before Dial needs the socket"
        return self.sock

    def enter(self, hop: NextHop, bridge: Bridge) -> None:
        """Begin `hop`: through a bridge over the previous hop's protection, if it has any."""
        if hop.carrier is not None:
            self.sock = bridge(self.connected, hop.carrier)
        self.proxy, self.link, self.label = hop.proxy, hop.link, hop.label

    def timed_out(self, timeout: float | None) -> str:
        """What a deadline that passed on this walk means, naming the hop."""
        within = "in time" if timeout is None else f"within {timeout:g} s"
        if self.sock is None:
            return f"could not connect to {self.label or 'the proxy'} {within}"
        return f"no reply from {self.label or 'the proxy'} {within}"

    def close(self) -> None:
        """Give up: close the socket, if there is one."""
        if self.sock is not None:
            self.sock.close()

    @contextmanager
    def given_up_on_failure(self, timeout: float | None) -> Iterator[None]:
        """Close the socket when the walk fails; a deadline that passed (the driver's own
        timeout) becomes `ProxyTimeout` naming the hop. A proxy's TTL-expired reply is a
        TimeoutError too, but the proxy's answer, and goes out as it is."""
        try:
            yield
        except Socks5Error:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise ProxyTimeout(self.timed_out(timeout)) from None
        except BaseException:
            self.close()
            raise

    def reply_address(self, bound: Address) -> Address:
        """The last reply's BND.ADDR as an address to use: a wildcard is the proxy's own."""
        sock = self.connected
        assert self.proxy is not None, "a walk replies after its hops began"
        proxy_ip = self.proxy.host if sock.family == socket.AF_UNIX else sock.getpeername()[0]
        return usable_address(bound, str(proxy_ip))


class HostPort(NamedTuple):
    """A host and port as Python's socket functions take them (`("192.0.2.1", 1080)`), so
    `open_connection(*binding.address)` works; `str()` gives `192.0.2.1:1080` (`[::1]:1080`)."""

    host: str
    port: int

    @classmethod
    def of(cls, address: Address) -> HostPort:
        """The host and port of a SOCKS address (BND.ADDR/BND.PORT)."""
        return cls(str(address.host), address.port)

    def __str__(self) -> str:
        return _named(self.host, self.port)


class BindingBase:
    """A BIND in progress, as both clients keep it: the connection that waits for the
    second reply, and the two addresses (RFC 1928 §6: "The first [reply] is sent after the
    server creates and binds a new socket. [...] The second reply occurs only after the
    anticipated incoming connection succeeds or fails.").
    """

    def __init__(self, sock: socket.socket, link: Link, address: Address) -> None:
        self._at = Position(link, sock)
        #: BND.ADDR/BND.PORT of the first reply: tell the peer to connect here
        self.address = HostPort.of(address)
        #: the peer's address (BND.ADDR/BND.PORT of the second reply), once it has connected
        self.peer: HostPort | None = None

    def _connected(self, bridge: Bridge) -> socket.socket:
        """After the second reply: the socket to the peer, through `bridge` if protected."""
        at = self._at
        return at.connected if at.link.protection is None else bridge(at.connected, at.link)

    def close(self) -> None:
        """Give up the BIND (the proxy stops listening)."""
        self._at.close()
