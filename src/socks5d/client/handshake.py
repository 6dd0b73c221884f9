"""The client's side of a handshake as a generator: the one piece of logic both the asyncio
and the blocking clients drive. It does no I/O: it yields bytes to write, or `READ` to get the
proxy's next message, and returns the reply.

    steps = negotiate(proxy, Command.CONNECT, destination)
    to_send = next(steps)
    ...  # write what it yields; on READ, send it the next event (see aio.py / sync.py)
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Final, Protocol

from socks5d.errors import (
    AuthFailed,
    CommandNotSupported,
    ConnectionRefused,
    HostUnreachable,
    NotAllowed,
    ProtocolError,
    RequestRejected,
    Socks5Error,
    error_for_reply,
)
from socks5d.gss import (
    Protection,
    client_level_token,
    client_read_level,
    initiate,
    initiator_step,
    level_name,
)
from socks5d.proto import (
    NEED_DATA,
    Address,
    AuthMethod,
    AuthResult,
    ClientConnection,
    Command,
    CommandReply,
    CommandRequest,
    ConnectionClosed,
    DomainName,
    Event,
    Greeting,
    GssapiMessageType,
    GssapiToken,
    MethodSelected,
    ProtectionLevel,
    Reply,
    Socks4Reply,
    Socks4Request,
    Socks4Response,
    UdpDatagram,
    UserPassAuth,
    decode_udp,
    encode_udp,
)
from socks5d.proto.events import HttpResponse, _NeedData
from socks5d.proto.http_connect import HttpConnectParser, encode_connect
from socks5d.proxies import HTTP, GssapiOptions, Proxy


class _Read:
    def __repr__(self) -> str:
        return "READ"


#: Yielded by a handshake step when it needs the proxy's next message.
READ: Final = _Read()

#: A handshake step yields bytes to write or READ, and is sent back the event read (or None
#: after a write).
Steps = Generator[bytes | _Read, Event | None, Address]
#: An authentication method's steps return the per-message protection it set up, if any.
AuthSteps = Generator[bytes | _Read, Event | None, Protection | None]


@dataclass(slots=True)
class Link:
    """One connection to a proxy as the drivers see it: the handshake's codec and, once
    GSS-API agreed on integrity or confidentiality, the protection that everything after
    goes through (RFC 1961 §5), the request and the replies included.
    """

    #: the codec: SOCKS, or HTTP CONNECT's response reader (`http_connect`)
    connection: ClientConnection | HttpConnectParser = field(default_factory=ClientConnection)
    protection: Protection | None = None

    def outgoing(self, data: bytes) -> bytes:
        """Bytes a step yields, as they go on the wire."""
        return data if self.protection is None else self.protection.seal(data)

    def take_wire(self, wire: bytes) -> Event | None:
        """With protection: feed bytes read from the socket (all of them are the proxy's:
        tokens carry no one else's data), return the next event or None.
        """
        assert self.protection is not None
        connection = self.connection
        plaintext = self.protection.open(wire)
        if plaintext or not wire:
            connection.receive_data(plaintext)
        event = connection.next_event()
        if isinstance(event, _NeedData):
            return None
        return event


def take_event(
    connection: ClientConnection | HttpConnectParser, peeked: bytes
) -> tuple[Event | None, int]:
    """Feed bytes *peeked* from the socket; return the next event (None if incomplete) and how
    many of the peeked bytes it used, which are the only ones to consume from the socket.

    Reading this way never takes bytes that follow the proxy's message out of the socket, so
    a destination that speaks first (a banner) or a BIND peer's first bytes stay there for
    whoever reads the socket next.
    """
    connection.receive_data(peeked)
    event = connection.next_event()
    if event is NEED_DATA:
        return None, len(peeked)  # all of it belongs to the incomplete message
    assert not isinstance(event, _NeedData)
    if isinstance(event, ConnectionClosed):
        return event, 0  # end of stream: nothing was peeked
    return event, len(peeked) - len(connection.trailing_data)


class ClientAuth(Protocol):
    """An authentication method a client can offer (RFC 1928 §3)."""

    @property
    def code(self) -> int:
        """The METHOD octet."""
        ...

    def authenticate(self, connection: ClientConnection) -> AuthSteps:
        """The method-specific sub-negotiation, run after the proxy selected this method."""
        ...


@dataclass(frozen=True, slots=True)
class NoAuthentication:
    """X'00': nothing to do."""

    code: int = AuthMethod.NO_AUTHENTICATION_REQUIRED

    def authenticate(self, connection: ClientConnection) -> AuthSteps:
        return None
        yield


@dataclass(frozen=True, slots=True)
class UsernamePassword:
    """X'02': RFC 1929."""

    username: str
    password: str = field(repr=False)
    code: int = AuthMethod.USERNAME_PASSWORD

    def authenticate(self, connection: ClientConnection) -> AuthSteps:
        yield connection.send(UserPassAuth(self.username, self.password))
        result = yield READ
        if not isinstance(result, AuthResult):
            raise ProtocolError(f"expected the username/password status, got {result!r}")
        if not result.success:
            # RFC 1929 §2: "If the server returns a `failure' [...] status, it MUST close the
            # connection."
            raise AuthFailed(
                f"the proxy refused user {self.username!r} (status {result.status:#04x})"
            )
        return None


@dataclass(frozen=True, slots=True)
class Gssapi:
    """X'01': RFC 1961, with the default credentials (the Kerberos ccache)."""

    options: GssapiOptions
    #: the host part of the service principal
    host: str
    #: ask for sequence checking; not for UDP, whose datagrams may be lost or reordered
    in_sequence: bool = True
    code: int = AuthMethod.GSSAPI

    def authenticate(self, connection: ClientConnection) -> AuthSteps:
        options = self.options
        context = initiate(options.service, self.host, in_sequence=self.in_sequence)
        token = initiator_step(context, None)
        while True:
            if token:
                yield connection.send(GssapiToken(GssapiMessageType.AUTHENTICATION, token))
            if context.complete:
                break
            token = initiator_step(
                context, _gssapi_token((yield READ), GssapiMessageType.AUTHENTICATION)
            )
        wanted = options.level
        unwrapped = options.unwrapped_level
        level_token = client_level_token(context, wanted, unwrapped=unwrapped)
        yield connection.send(GssapiToken(GssapiMessageType.PROTECTION_LEVEL, level_token))
        answer = _gssapi_token((yield READ), GssapiMessageType.PROTECTION_LEVEL)
        agreed = client_read_level(context, answer, unwrapped=unwrapped)
        if agreed != wanted:
            # RFC 1961 §4.4: "If the server's choice of protection level is unacceptable to
            # the client, then the client must close its connection to the server"
            raise AuthFailed(
                f"the proxy agreed to protection level {level_name(agreed)}, "
                f"not {level_name(wanted)}"
            )
        connection.authentication_complete()
        if agreed == ProtectionLevel.CLEAR:
            return None
        return Protection(context, agreed)


def _gssapi_token(message: Event | None, expected: GssapiMessageType) -> bytes:
    if isinstance(message, GssapiToken):
        if message.message_type == GssapiMessageType.ABORT:
            raise AuthFailed("the proxy refused GSS-API authentication (abort message)")
        if message.message_type == expected:
            return message.token
    if isinstance(message, ConnectionClosed):
        raise AuthFailed("the proxy closed the connection during GSS-API authentication")
    raise ProtocolError(f"expected GSS-API message type {expected:#04x}, got {message!r}")


def methods_for(proxy: Proxy, command: Command = Command.CONNECT) -> list[ClientAuth]:
    """The methods offered to `proxy` for `command`, in our order of preference. With GSS-API
    configured only GSS-API is offered: falling back to no authentication would be a silent
    downgrade.
    """
    if proxy.gssapi is not None:
        in_sequence = command != Command.UDP_ASSOCIATE
        return [Gssapi(proxy.gssapi, proxy.gssapi.host or proxy.host, in_sequence)]
    if proxy.username is not None and proxy.password is not None:
        return [UsernamePassword(proxy.username, proxy.password), NoAuthentication()]
    return [NoAuthentication()]


def _expect_reply(event: Event | None) -> Address:
    if isinstance(event, CommandReply):
        if event.reply != Reply.SUCCEEDED:
            raise error_for_reply(event.reply)
        return event.bound
    if isinstance(event, Socks4Response):
        if event.status != Socks4Reply.GRANTED:
            raise RequestRejected(
                f"SOCKS4 proxy replied {event.status.value}: request rejected or failed",
                event.status,
            )
        return event.bound
    if isinstance(event, ConnectionClosed):
        raise ProtocolError("the proxy closed the connection before replying")
    raise ProtocolError(f"expected a reply, got {event!r}")


def negotiate(
    link: Link,
    proxy: Proxy,
    command: Command,
    destination: Address,
    methods: list[ClientAuth] | None = None,
) -> Steps:
    """Greeting, authentication and request; returns BND.ADDR/BND.PORT of the (first) reply.
    A method that sets up per-message protection leaves it in `link.protection`.
    """
    if proxy.version == HTTP:
        return (yield from http_connect(link, proxy, command, destination))
    connection = link.connection
    assert isinstance(connection, ClientConnection)
    if proxy.version == 4:
        user_id = (proxy.username or "").encode()
        yield connection.send(Socks4Request(command, destination, user_id))
        return _expect_reply((yield READ))
    offered = methods if methods is not None else methods_for(proxy, command)
    yield connection.send(Greeting(tuple(method.code for method in offered)))
    selected = yield READ
    if isinstance(selected, ConnectionClosed):
        raise ProtocolError("the proxy closed the connection after the greeting")
    assert isinstance(selected, MethodSelected)
    if not selected.acceptable:
        codes = ", ".join(f"X'{m.code:02X}'" for m in offered)
        raise AuthFailed(f"the proxy accepts none of the methods offered ({codes})")
    method = next(m for m in offered if m.code == selected.method)
    link.protection = yield from method.authenticate(connection)
    yield connection.send(CommandRequest(command, destination))
    return _expect_reply((yield READ))


def http_connect(link: Link, proxy: Proxy, command: Command, destination: Address) -> Steps:
    """HTTP/1.1 CONNECT (RFC 9110 §9.3.6); the status maps to the SOCKS error it means.
    Returns the unspecified address: an HTTP proxy says nothing of its outbound end."""
    if command != Command.CONNECT:
        raise CommandNotSupported(f"{command.name} through an HTTP proxy ({proxy.url})")
    link.connection = HttpConnectParser()
    yield encode_connect(destination, proxy.username, proxy.password)
    response = yield READ
    if isinstance(response, ConnectionClosed):
        raise ProtocolError("the HTTP proxy closed the connection before answering CONNECT")
    assert isinstance(response, HttpResponse)
    if not response.success:
        raise _http_error(response)
    return Address.unspecified()


def _http_error(response: HttpResponse) -> Socks5Error:
    """The SOCKS error an HTTP proxy's refusal of CONNECT means."""
    said = f"the HTTP proxy answered {response.status} {response.reason}".rstrip()
    if response.status in (401, 407):  # Proxy Authentication Required (tinyproxy: 401)
        return AuthFailed(said)
    if response.status in (403, 405):
        return NotAllowed(said)
    if response.status == 504:  # Gateway Timeout
        return HostUnreachable(said)
    if response.status in (500, 502, 503):  # the proxy could not reach the destination
        return ConnectionRefused(said)
    return Socks5Error(said)


def second_reply() -> Steps:
    """BIND's second reply: the address of the peer that connected."""
    return _expect_reply((yield READ))


def destination_for(proxy: Proxy, host: str, port: int) -> Address:
    """DST.ADDR for `host`: as given (an IP, or a name the proxy resolves)."""
    address = Address.from_host(host, port)
    if proxy.version == 4 and isinstance(address.host, DomainName) and not proxy.remote_dns:
        raise ValueError("socks4:// needs an IPv4 address; resolve it first or use socks4a://")
    return address


def usable_address(bound: Address, proxy_ip: str) -> Address:
    """A reply's BND.ADDR as an address to use: a wildcard means the proxy's own address."""
    host = bound.host
    if not isinstance(host, DomainName) and host == type(host)(0):
        return Address.from_host(proxy_ip, bound.port)
    return bound


def wrap_datagram(
    datagram: UdpDatagram, protection: Protection | None, inner: tuple[Address, ...] = ()
) -> bytes:
    """A datagram for the relay: the RFC 1928 header and data, as one protected token when
    GSS-API protects the association (RFC 1961 §5). Through a chain (`inner`: the relays of
    the later hops, in order) each hop's header goes around the next hop's datagram: the
    first relay sends the rest to the second relay, and so on.
    """
    data = encode_udp(datagram)
    for relay in reversed(inner):
        data = encode_udp(UdpDatagram(relay, data))
    return data if protection is None else protection.seal_datagram(data)


def unwrap_datagram(
    data: bytes,
    sender: Address,
    relay: Address,
    protection: Protection | None = None,
    inner: tuple[Address, ...] = (),
) -> UdpDatagram | None:
    """A datagram from the relay with its header read, or None when it is to be dropped: not
    from the relay, malformed, not verified (with protection), or a fragment (RFC 1928 §7:
    without fragmentation support, "drop any datagram whose FRAG field is other than X'00'").
    Through a chain each header in turn must name the next hop's relay (`inner`).
    """
    if sender != relay:
        return None
    try:
        if protection is not None:
            data = protection.open_datagram(data)
        datagram = decode_udp(data)
        for next_relay in inner:
            if datagram.fragment != 0 or datagram.destination != next_relay:
                return None
            datagram = decode_udp(datagram.data)
    except ProtocolError:
        return None
    return datagram if datagram.fragment == 0 else None
