"""One client connection: handshake (driving `proto.ServerConnection`), command, relay, log.

The single error boundary of the server is `Session.run`: any `Socks5Error` raised while the
request is being served becomes a reply carrying `exc.reply` (when the protocol still expects
a reply), one access-log line, and a close. Command handlers just raise.

`Session` is the `SessionContext` the handlers and authentication methods get; they are
dispatched through two tables, `AUTHENTICATORS` (auth.py) and `COMMANDS` (here).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import replace
from typing import Any

from socks5d import proto
from socks5d.errors import AuthFailed, NotAllowed, ProtocolError, Socks5Error
from socks5d.gss import Protection
from socks5d.names import BadDestinationName, canonical_destination, escape_octets
from socks5d.net import address_of, discard_unread, format_peer
from socks5d.proto import Address, AuthMethod, Command, Reply, Socks4Reply, State
from socks5d.proto.events import _NeedData
from socks5d.relay import RelayEngine, RelayResult, Tunnel, relay
from socks5d.relay.protected import ProtectedEngine
from socks5d.rules import Decision
from socks5d.server.accesslog import AccessRecord, write_access_record
from socks5d.server.auth import AUTHENTICATORS, choose_method
from socks5d.server.bind import serve_bind
from socks5d.server.connect import serve_connect
from socks5d.server.context import CommandHandler, IPAddress, Services, describe_block, rule_request
from socks5d.server.context import Request as Request
from socks5d.server.context import decide as decide_rules
from socks5d.server.proxied import untrusted_header
from socks5d.server.udp import serve_udp_associate

log = logging.getLogger(__name__)

#: Bytes asked for per read during the handshake.
HANDSHAKE_READ_SIZE = 4096
#: The most bytes kept from a client that sends before its tunnel is up (BIND); then we stop
#: reading, which is backpressure.
MAX_EARLY_DATA = 64 * 1024

#: What a handed-over session keeps of its early data (the tunnel took the bytes).
_NO_EARLY_DATA = bytearray()

#: The access log's `auth` field for each method.
AUTH_NAMES: dict[int, str] = {
    AuthMethod.NO_AUTHENTICATION_REQUIRED: "none",
    AuthMethod.USERNAME_PASSWORD: "userpass",
    AuthMethod.GSSAPI: "gssapi",
}

#: States in which the protocol still owes the client a reply.
_REPLY_STATES = {State.REPLY, State.SECOND_REPLY, State.SOCKS4_REPLY, State.SOCKS4_SECOND_REPLY}


class Session:
    """Serves one accepted client socket from greeting to close.

    Args:
        services: the server's services; the session keeps these to its end.
        tunnels: the server's set of sessions whose tunnel the relay engine runs.
        client: the accepted socket, non-blocking.
        peer: the client's socket address, as accept() gave it.
        listener: the name of the listening address ("127.0.0.1:1080").
        address: `peer` as an `Address`.
        live: the server's registry of open sessions (oldest first): the session is in it
            from `run` to its end.
    """

    __slots__ = (
        "client",
        "client_ip",
        "connection",
        "counts",
        "early_data",
        "engine",
        "listener",
        "live",
        "peer",
        "protection",
        "record",
        "services",
        "started",
        "tunnel",
        "tunnels",
        "upstream",
        "user",
    )

    def __init__(
        self,
        services: Services,
        tunnels: set[Session],
        client: socket.socket,
        peer: Any,
        listener: str,
        address: Address,
        *,
        live: dict[Session, None] | None = None,
    ) -> None:
        self.services = services
        self.tunnels = tunnels
        self.live: dict[Session, None] = {} if live is None else live
        self.client = client
        #: the client's address (`peer` as an `Address`)
        self.peer = address
        client_ip = address.host
        assert not isinstance(client_ip, proto.DomainName)
        self.client_ip: IPAddress = client_ip
        self.connection = proto.ServerConnection(accept_socks4=services.config.serves_socks4)
        #: the authenticated user (RFC 1929), for the rules
        self.user: str | None = None
        self.listener = listener
        self.started = time.monotonic()
        #: bytes the client sent that belong to the tunnel, not the handshake
        self.early_data = bytearray()
        #: the destination, once the tunnel is handed over to the relay engine
        self.upstream: socket.socket | None = None
        self.tunnel: Tunnel | None = None
        #: the bytes relayed so far (a tunnel's or an association's), read by the metrics
        self.counts: RelayResult | None = None
        #: RFC 1961 per-message protection, once GSS-API agreed on integrity or confidentiality
        self.protection: Protection | None = None
        #: the relay engine: the server's, or one that wraps and unwraps (`protection`)
        self.engine: RelayEngine = services.relay_engine
        self.record = AccessRecord(
            client=format_peer(peer), listener=listener, bytes_up=0, bytes_down=0
        )

    @property
    def local(self) -> Address:
        """Our end of the client's connection."""
        return address_of(self.client.getsockname())

    async def run(self) -> None:
        """Serve the client; never raises except `CancelledError`."""
        self.live[self] = None
        try:
            try:
                # from the accept: a PROXY header read before counts (`proxied`)
                left = self.services.config.timeouts.handshake - (time.monotonic() - self.started)
                async with asyncio.timeout(left):
                    request = await self._handshake()
                if request is not None:
                    self.services.stats.handshake.observe(time.monotonic() - self.started)
            except TimeoutError:
                self.record["outcome"] = "handshake timeout"
                return
            finally:
                self.services.handshake_slots.release(self.client_ip)
            if request is not None:
                request = self._canonical(request)
                destination: Address | None = request.destination
                if request.command == Command.UDP_ASSOCIATE:
                    destination = None  # the client's own address (RFC 1928 §6), no destination
                self.authorize(request.command, destination)
                await COMMANDS[request.command](self, request)
        except asyncio.CancelledError:  # the server ends the session: drain deadline, stop
            self.record["outcome"] = "server closing"
            raise
        except Socks5Error as exc:
            if self.connection.state in _REPLY_STATES:
                await self._reply_failure(exc)
            self.record["outcome"] = untrusted_header(exc, self) or _describe(exc)
        except OSError as exc:
            self.record["outcome"] = f"client error: {exc}"
        except Exception:  # a bug: log it whole, keep the server running
            log.exception("session %s crashed", self.record["client"])
            self.record["outcome"] = "internal error"
        finally:
            if self.upstream is None:  # else the tunnel ends the session (`hand_over`)
                self._end()

    def _end(self, *, discard: bool = True) -> None:
        """Give back the session's slot, close the client, count the session, write the
        access-log line."""
        services = self.services
        services.session_slots.release(self.client_ip)
        self.live.pop(self, None)
        record = self.record
        stats = services.stats
        stats.session_ended(record["protocol"], record["command"], record["reply"])
        if self.counts is not None:  # from now on in the totals, no longer read live
            stats.add_bytes(self.counts.bytes_up, self.counts.bytes_down)
        if discard:
            discard_unread(self.client)
        self.client.close()
        self.record["duration"] = round(time.monotonic() - self.started, 6)
        write_access_record(self.record)

    async def _reply_failure(self, exc: Socks5Error) -> None:
        # OSError: the client is gone; the outcome says why the request failed
        with contextlib.suppress(OSError):
            await self.reply(exc.reply)

    def protect(self, protection: Protection) -> None:
        """From now on, wrap and unwrap everything exchanged with the client, tunnel included."""
        self.protection = protection
        self.engine = ProtectedEngine(protection)

    async def next_event(self) -> proto.Event:
        """The client's next protocol message; at EOF `proto.ConnectionClosed`."""
        connection = self.connection
        while isinstance(event := connection.next_event(), _NeedData):
            connection.receive_data(await self.receive())
        return event

    async def send(self, message: proto.Event) -> None:
        """Send a protocol message to the client (wrapped when protected)."""
        data = self.connection.send(message)
        if self.protection is not None:
            data = self.protection.seal(data)
        await asyncio.get_running_loop().sock_sendall(self.client, data)

    async def receive(self) -> bytes:
        """The client's next bytes (unwrapped when protected); `b""` at EOF."""
        loop = asyncio.get_running_loop()
        while True:
            if self.protection is not None:
                self.protection.check()  # a bad token after the ones already delivered
            try:  # the bytes are usually there already: no readiness wait, no registration
                data = self.client.recv(HANDSHAKE_READ_SIZE)
            except BlockingIOError:
                data = await loop.sock_recv(self.client, HANDSHAKE_READ_SIZE)
            if self.protection is None:
                return data
            plaintext = self.protection.open(data)
            if plaintext or not data:
                return plaintext

    async def reply(self, reply: Reply, bound: Address | None = None) -> None:
        """Send the (first or second) reply in the client's protocol: SOCKS5 or SOCKS4."""
        if isinstance(self.connection.request, proto.Socks4Request):
            # SOCKS4 replies carry IPv4 only; CONNECT's "remaining fields are ignored".
            if bound is None or not isinstance(bound.host, ipaddress.IPv4Address):
                bound = Address(ipaddress.IPv4Address(0), bound.port if bound else 0)
            status = Socks4Reply.GRANTED if reply == Reply.SUCCEEDED else Socks4Reply.REJECTED
            self.record["reply"] = status.name.lower()
            await self.send(proto.Socks4Response(status, bound))
        else:
            self.record["reply"] = reply.name.lower()
            await self.send(proto.CommandReply(reply, bound or Address.unspecified()))

    async def _handshake(self) -> Request | None:
        """Negotiate and authenticate; return the request, or None if the client left."""
        while True:
            if self.connection.state is State.CLOSED:  # an authentication method met EOF
                self.record["outcome"] = "client closed during handshake"
                return None
            event = await self.next_event()
            if isinstance(event, proto.Greeting):
                self.record["protocol"] = "socks5"
                method = choose_method(event.methods, self.services.config.auth)
                await self.send(proto.MethodSelected(method))
                if method == AuthMethod.NO_ACCEPTABLE_METHODS:
                    offered = ",".join(f"{m:#04x}" for m in event.methods) or "none"
                    raise AuthFailed(f"no acceptable method (offered {offered})")
                self.record["auth"] = AUTH_NAMES.get(method)
                await AUTHENTICATORS[AuthMethod(method)](self)
            elif isinstance(event, proto.CommandRequest):
                return event
            elif isinstance(event, proto.Socks4Request):
                named = isinstance(event.destination.host, proto.DomainName)
                self.record["protocol"] = "socks4a" if named else "socks4"
                self.record["user"] = event.user_id.decode("utf-8", "backslashreplace") or None
                return event
            elif isinstance(event, proto.ConnectionClosed):
                self.record["outcome"] = "client closed during handshake"
                return None
            else:
                raise ProtocolError(f"unexpected {type(event).__name__}")

    def _canonical(self, request: Request) -> Request:
        """The request with its destination name in canonical form (`socks5d.names`): from
        here on the rules, the resolver and the log see that name and no other. The raw octets
        go to the log too (`raw_destination`) when they differ.

        Raises:
            BadDestinationName: not a host name; X'04' before any lookup.
        """
        record = self.record
        record["command"] = request.command.name.lower()
        raw = request.destination
        try:
            destination = canonical_destination(raw)
        except BadDestinationName as exc:
            record["raw_destination"] = escape_octets(str(raw.host))
            log.debug("%s: bad destination name: %s", record["client"], exc.why)
            raise
        if destination is not raw:
            record["raw_destination"] = escape_octets(str(raw.host))
            request = replace(request, destination=destination)
        record["destination"] = str(destination)
        return request

    def decide(
        self, command: Command, destination: Address | None, resolved: IPAddress | None = None
    ) -> Decision:
        """The `[[socks]]` rules' decision on a request, an address its name resolved to
        (`resolved`), a BIND peer or a UDP datagram; writes nothing. A block names its rule."""
        request = rule_request(
            self.client_ip, self.listener, self.user, command, destination, resolved
        )
        return decide_rules(self.services.rules, request)

    def authorize(
        self, command: Command, destination: Address | None, *, resolved: IPAddress | None = None
    ) -> None:
        """Apply the `[[socks]]` rules to the request itself. A domain destination is checked
        by name alone (before resolving) and again with each address it resolved to
        (`resolved`).

        Raises:
            NotAllowed: a block rule (or the default) decided; its name goes to the record.
        """
        decision = self.decide(command, destination, resolved)
        if not decision.allowed:
            self.record["rule"] = decision.rule
            self.services.stats.rule_block("socks")
            raise NotAllowed(describe_block(command, destination, resolved, decision.rule))

    async def watch_control(self, *, keep: bool) -> None:
        """Return when the client closes its connection (it ends a BIND wait or a UDP
        association). What it sends meanwhile is kept for the tunnel (`keep`), up to
        `MAX_EARLY_DATA`, or discarded.
        """
        while not keep or len(self.early_data) < MAX_EARLY_DATA:
            data = await self.receive()
            if not data:
                return
            if keep:
                self.early_data += data
        await asyncio.Event().wait()  # stop reading; the caller cancels us

    def hand_over(self, upstream: socket.socket) -> None:
        """CONNECT is established: relay between the client and `upstream` in the background.
        The session's task ends now; the tunnel owns both sockets, and when it ends it closes
        them, writes the access-log line and frees the slot. An idle tunnel costs no task.
        """
        self.upstream = upstream
        self.tunnels.add(self)
        try:
            self.tunnel = self.engine.start(
                self.client,
                upstream,
                idle_timeout=self.services.config.timeouts.idle,
                early_data=self.connection.trailing_data + bytes(self.early_data),
                done=self._relayed,
            )
            if self.tunnel is not None and self.counts is None:  # else it ended already
                self.counts = self.tunnel.result
            # What the tunnel keeps while it lasts is what it needs: no protocol state.
            self.early_data = _NO_EARLY_DATA
            del self.connection
        except BaseException:  # not started: the session ends the usual way
            self.tunnels.discard(self)
            self.upstream = None
            upstream.close()
            raise

    def _relayed(self, result: RelayResult) -> None:
        # The tunnel called back through a reference to us: let go of it, so that no cycle
        # is left and both are freed now, not by a pass of the garbage collector.
        self.tunnel = None
        self.counts = result
        self.record["bytes_up"] = result.bytes_up
        self.record["bytes_down"] = result.bytes_down
        self.record["outcome"] = result.reason
        self.tunnels.discard(self)
        if self.upstream is not None:
            self.upstream.close()
        # After EOF from both sides there is nothing unread to discard.
        self._end(discard=result.reason != "closed")

    async def relay(self, upstream: socket.socket) -> None:
        """Relay between the client and `upstream` until both directions are done."""
        result = await relay(
            self.engine,
            self.client,
            upstream,
            idle_timeout=self.services.config.timeouts.idle,
            early_data=self.connection.trailing_data + bytes(self.early_data),
            started=self._count_tunnel,
        )
        self.counts = result
        self.record["bytes_up"] = result.bytes_up
        self.record["bytes_down"] = result.bytes_down
        self.record["outcome"] = result.reason

    def _count_tunnel(self, tunnel: Tunnel) -> None:
        self.counts = tunnel.result

    def count_bytes(self, counts: RelayResult) -> None:
        """The session's bytes so far are in `counts` (a UDP association's): the metrics read
        them while the session lasts and add them to the totals when it ends."""
        self.counts = counts


def _describe(exc: Socks5Error) -> str:
    if isinstance(exc, AuthFailed):
        return f"auth failed: {exc}"
    if isinstance(exc, ProtocolError):
        return f"protocol error: {exc}"
    return str(exc) or type(exc).__name__


#: The one table from CMD to the code that serves it.
COMMANDS: dict[Command, CommandHandler] = {
    Command.CONNECT: serve_connect,
    Command.BIND: serve_bind,
    Command.UDP_ASSOCIATE: serve_udp_associate,
}
