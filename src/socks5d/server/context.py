"""What a command handler or an authentication method gets: a `SessionContext`, and through it
the server's `Services`.

A handler (connect.py, bind.py, udp.py) or an authentication method (auth.py, gssapi.py) sees
one client connection through `SessionContext`, a narrow interface the session implements:
who the client is, the access record, the protocol codec, sending and receiving, the two
replies, the relay, and the `[[socks]]` rules. It never sees the `Session` or the `Server`:
this module imports neither, and a handler imports this module and never session.py or
listen.py.

`Services` is everything the server shares between sessions, built by `Server` and swapped
whole on reload (`Server.apply`): a session takes the services current when it starts and keeps
them to its end, so one session never sees half of an old configuration and half of a new one.
The stateful parts (slots, the login throttle, the password checker, the relay engine, the
metrics) are the same objects from one `Services` to the next: a slot taken under the old
configuration is given back to the counter it came from.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from socks5d import proto
from socks5d.config import ServerConfig
from socks5d.gss import Protection
from socks5d.net import Target, unmapped
from socks5d.proto import Address, Command, DomainName, Reply
from socks5d.relay import RelayEngine, RelayResult
from socks5d.routing import Health, Routes
from socks5d.rules import Decision, RuleSet
from socks5d.rules import Request as RuleRequest
from socks5d.server.accesslog import AccessRecord
from socks5d.server.limits import AuthThrottle, Slots
from socks5d.server.passwords import Authenticator
from socks5d.server.stats import Stats

if TYPE_CHECKING:  # python-gssapi is optional: installed only where GSS-API is offered
    import gssapi

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Resolves a domain name and port to the addresses to try (may raise `socket.gaierror`).
Resolver = Callable[[DomainName, int], Awaitable[list[Target]]]
#: A client's request, in either protocol.
Request = proto.CommandRequest | proto.Socks4Request
#: The name a block by the `[[socks]]` default goes by in the log.
SOCKS_DEFAULT_RULE = "rules.socks_default"


@dataclass(frozen=True, slots=True)
class Services:
    """What every session of a server shares; one value per configuration (see the module
    docstring)."""

    #: the validated configuration
    config: ServerConfig
    #: the `[[client]]` and `[[socks]]` rules, with the private-destinations preset in front
    rules: RuleSet
    #: resolves domain-name destinations
    resolver: Resolver
    #: checks RFC 1929 passwords (its `pool` bounds the slow hashes)
    authenticator: Authenticator
    #: counts failed logins and blocks password guessing
    throttle: AuthThrottle
    #: sessions, in all and per client
    session_slots: Slots
    #: handshakes in progress, in all and per client
    handshake_slots: Slots
    #: UDP associations, in all and per client
    udp_slots: Slots
    #: BIND listeners, in all and per client
    bind_slots: Slots
    #: the relay engine of unprotected tunnels
    relay_engine: RelayEngine
    #: the service's key for GSS-API (RFC 1961); None when GSS-API is not offered
    gssapi_credentials: gssapi.Credentials | None
    #: the server's metrics (the same object across reloads)
    stats: Stats
    #: the `[[route]]` tables: where requests go out
    routes: Routes = field(default_factory=Routes)
    #: which upstreams failed lately (the same object across reloads)
    health: Health = field(default_factory=Health)


def rule_request(
    client_ip: IPAddress,
    listener: str,
    user: str | None,
    command: Command,
    destination: Address | None,
    resolved: IPAddress | None = None,
) -> RuleRequest:
    """What the `[[socks]]` rules judge of a request, a resolved address, a BIND peer or a UDP
    datagram. A domain destination is judged by its name alone, or with an address it resolved
    to (`resolved`); None is a UDP ASSOCIATE request, which names no destination.
    """
    name = address = port = None
    if destination is not None:
        port = destination.port
        if isinstance(destination.host, DomainName):
            name = str(destination.host)
            address = resolved
        else:
            address = destination.host
        if address is not None:  # ::ffff:a.b.c.d is a.b.c.d to the rules
            address = unmapped(address)
    return RuleRequest(
        client_ip,
        listener,
        user,
        command,
        name,
        address,
        port,
        has_destination=destination is not None,
    )


def decide(rules: RuleSet, request: RuleRequest) -> Decision:
    """The `[[socks]]` rules' decision on `request`; a block by the default names
    `SOCKS_DEFAULT_RULE`, so that a refusal always has a rule to log."""
    decision = rules.check_request(request)
    if decision.allowed or decision.rule is not None:
        return decision
    return Decision(False, SOCKS_DEFAULT_RULE)


def describe_block(
    command: Command, destination: Address | None, resolved: IPAddress | None, rule: str | None
) -> str:
    """The log's words for a refusal: "connect to example.com:80 (10.0.0.1) blocked by socks[2]"."""
    target = f"{destination}" + (f" ({resolved})" if resolved is not None else "")
    return f"{command.name.lower()} to {target or '-'} blocked by {rule}"


class SessionContext(Protocol):
    """One client connection as a command handler or an authentication method sees it."""

    #: the authenticated user (RFC 1929 username, GSS-API principal), for the rules
    user: str | None

    @property
    def services(self) -> Services:
        """The server's services, as they were when the session started."""

    @property
    def client_ip(self) -> IPAddress:
        """The client's IP address (of its TCP connection)."""

    @property
    def peer(self) -> Address:
        """The client's address and port."""

    @property
    def local(self) -> Address:
        """Our end of the client's connection."""

    @property
    def record(self) -> AccessRecord:
        """The session's access-log record, filled in as the session goes on."""

    @property
    def client(self) -> socket.socket:
        """The client's socket: to watch it for a close, never to read from it."""

    @property
    def connection(self) -> proto.ServerConnection:
        """The protocol codec of the client's connection."""

    @property
    def protection(self) -> Protection | None:
        """RFC 1961 per-message protection, once GSS-API agreed on integrity or
        confidentiality."""

    def protect(self, protection: Protection) -> None:
        """From now on, wrap and unwrap everything exchanged with the client, tunnel included."""

    async def next_event(self) -> proto.Event:
        """The client's next protocol message (reading as much as it takes); at EOF
        `proto.ConnectionClosed`.

        Raises:
            ProtocolError: the client's bytes break the protocol.
        """

    async def send(self, message: proto.Event) -> None:
        """Send a protocol message to the client (wrapped when protected)."""

    async def receive(self) -> bytes:
        """The client's next bytes (unwrapped when protected); `b""` at EOF."""

    async def reply(self, reply: Reply, bound: Address | None = None) -> None:
        """Send the (first or second) reply in the client's protocol: SOCKS5 or SOCKS4."""

    def hand_over(self, upstream: socket.socket) -> None:
        """Relay between the client and `upstream` in the background; the tunnel now owns the
        session's end (both sockets, the access-log line, the slot)."""

    async def relay(self, upstream: socket.socket) -> None:
        """Relay between the client and `upstream` until both directions are done."""

    def count_bytes(self, counts: RelayResult) -> None:
        """The session's bytes so far are in `counts` (a UDP association's): the metrics read
        them while the session lasts and add them to the totals when it ends."""

    async def watch_control(self, *, keep: bool) -> None:
        """Return when the client closes its connection; what it sends meanwhile is kept for
        the tunnel (`keep`) or discarded."""

    def authorize(
        self, command: Command, destination: Address | None, *, resolved: IPAddress | None = None
    ) -> None:
        """Apply the `[[socks]]` rules to the request itself (or to an address its name
        resolved to): a block decides the session, and its rule goes to the record.

        Raises:
            NotAllowed: a block rule (or the default) decided.
        """

    def decide(
        self, command: Command, destination: Address | None, resolved: IPAddress | None = None
    ) -> Decision:
        """The `[[socks]]` rules' decision on a destination of this session (a BIND peer, a UDP
        datagram); never raises, never writes the record. A block always names its rule."""


#: Serves one command of a session (`COMMANDS`).
CommandHandler = Callable[[SessionContext, Request], Awaitable[None]]
#: Runs one authentication method's subnegotiation, right after the method was selected
#: (`AUTHENTICATORS`); it reads the method's messages itself (`SessionContext.next_event`).
AuthenticationMethod = Callable[[SessionContext], Awaitable[None]]
