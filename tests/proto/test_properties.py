"""Properties of the codecs and state machines, checked with hypothesis.

- round trip: `decode(encode(m)) == m` for every message type;
- fuzzing: arbitrary bytes, and valid handshakes with bytes flipped, inserted or deleted, fed
  in arbitrary chunks to a `ServerConnection` or `ClientConnection`, give events and
  `NEED_DATA` or a `ProtocolError`, nothing else, and never more than `max_buffer` plus one
  chunk buffered while a message is incomplete;
- valid handshakes in arbitrary chunks reach ESTABLISHED with the relay's bytes intact;
- `decode_udp` on arbitrary bytes gives a `UdpDatagram` or a `ProtocolError`.

Profiles (`fast`, `deep`) are registered in conftest.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socks5d.errors import ProtocolError
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
    Greeting,
    GssapiMessageType,
    GssapiToken,
    MethodSelected,
    Reply,
    ServerConnection,
    Socks4Reply,
    Socks4Request,
    Socks4Response,
    State,
    UdpDatagram,
    UserPassAuth,
    decode_address,
    decode_udp,
    encode_address,
    encode_udp,
)
from socks5d.proto.buffer import Cursor
from socks5d.proto.connection import Connection
from socks5d.proto.gssapi import decode_gssapi, encode_gssapi
from socks5d.proto.rfc1928 import (
    decode_greeting,
    decode_method_selected,
    decode_reply,
    decode_request,
    encode_greeting,
    encode_method_selected,
    encode_reply,
    encode_request,
)
from socks5d.proto.rfc1929 import (
    decode_auth_result,
    decode_userpass,
    encode_auth_result,
    encode_userpass,
)
from socks5d.proto.socks4 import (
    decode_socks4_request,
    decode_socks4_response,
    encode_socks4_request,
    encode_socks4_response,
)

#: pyproject's 30 s per-test timeout is sized for the `fast` profile (200 examples); scale it
#: with the profile so that `deep` (5000) is not cut short.
pytestmark = pytest.mark.timeout(30 * max(1, (settings.default.max_examples or 200) // 200))

NO_AUTH = AuthMethod.NO_AUTHENTICATION_REQUIRED
USERPASS = AuthMethod.USERNAME_PASSWORD
GSSAPI = AuthMethod.GSSAPI

# --- strategies: one per message type -----------------------------------------------------------

octets = st.integers(0, 0xFF)
ports = st.integers(0, 0xFFFF)


def _fits(limit: int) -> Callable[[str], bool]:
    return lambda text: len(text.encode("utf-8", "surrogateescape")) <= limit


#: Text that is at most 255 octets on the wire: readable text, or any octets (which decode
#: with surrogateescape, the way the decoders keep undecodable bytes).
def octet_strings(min_size: int = 0) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(st.characters(codec="utf-8"), min_size=min_size, max_size=255).filter(_fits(255)),
        st.binary(min_size=min_size, max_size=255).map(
            lambda raw: raw.decode("utf-8", "surrogateescape")
        ),
    )


domain_names = octet_strings(min_size=1).map(DomainName)
hosts = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6), domain_names)
addresses = st.builds(Address, hosts, ports)

greetings = st.builds(Greeting, st.lists(octets, min_size=1, max_size=255).map(tuple))
method_selections = st.builds(MethodSelected, octets)
command_requests = st.builds(CommandRequest, st.sampled_from(Command), addresses)
command_replies = st.builds(CommandReply, st.sampled_from(Reply), addresses)
userpass_requests = st.builds(UserPassAuth, octet_strings(), octet_strings())
auth_results = st.builds(AuthResult, octets)
gssapi_tokens = st.one_of(
    st.builds(
        GssapiToken,
        st.sampled_from(
            [
                GssapiMessageType.AUTHENTICATION,
                GssapiMessageType.PROTECTION_LEVEL,
                GssapiMessageType.ENCAPSULATION,
            ]
        ),
        st.binary(max_size=0xFFFF),
    ),
    st.just(GssapiToken(GssapiMessageType.ABORT)),
)

#: SOCKS4 can carry what its own framing can: IPv4 destinations other than the SOCKS4a
#: marker 0.0.0.x (x != 0), host names without NUL, user ids without NUL (the encoder refuses
#: the rest, see test_codec.py).
socks4_ipv4 = st.ip_addresses(v=4).filter(
    lambda address: not (address.packed[:3] == b"\x00\x00\x00" and address.packed[3] != 0)
)
socks4_names = (
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=255)
    .filter(_fits(255))
    .map(DomainName)
)
socks4_requests = st.builds(
    Socks4Request,
    st.sampled_from([Command.CONNECT, Command.BIND]),
    st.builds(Address, st.one_of(socks4_ipv4, socks4_names), ports),
    st.binary(max_size=255).map(lambda raw: raw.replace(b"\x00", b"")),
)
socks4_responses = st.builds(
    Socks4Response, st.sampled_from(Socks4Reply), st.builds(Address, st.ip_addresses(v=4), ports)
)
udp_datagrams = st.builds(UdpDatagram, addresses, st.binary(max_size=2048), octets)

ROUND_TRIPS = [
    pytest.param(greetings, encode_greeting, decode_greeting, id="greeting"),
    pytest.param(method_selections, encode_method_selected, decode_method_selected, id="method"),
    pytest.param(command_requests, encode_request, decode_request, id="request"),
    pytest.param(command_replies, encode_reply, decode_reply, id="reply"),
    pytest.param(userpass_requests, encode_userpass, decode_userpass, id="userpass"),
    pytest.param(auth_results, encode_auth_result, decode_auth_result, id="auth_result"),
    pytest.param(gssapi_tokens, encode_gssapi, decode_gssapi, id="gssapi"),
    pytest.param(socks4_requests, encode_socks4_request, decode_socks4_request, id="socks4"),
    pytest.param(
        socks4_responses, encode_socks4_response, decode_socks4_response, id="socks4_reply"
    ),
    pytest.param(addresses, encode_address, decode_address, id="address"),
]


@pytest.mark.parametrize(("messages", "encode", "decode"), ROUND_TRIPS)
@given(data=st.data())
def test_decode_of_encode_is_the_message_and_consumes_every_byte(
    messages: st.SearchStrategy[Any],
    encode: Callable[[Any], bytes],
    decode: Callable[[Cursor], Any],
    data: st.DataObject,
) -> None:
    message = data.draw(messages)
    wire = encode(message)
    cursor = Cursor(wire)
    assert decode(cursor) == message
    assert cursor.position == len(wire)


@given(udp_datagrams)
def test_decode_udp_of_encode_udp_is_the_datagram(datagram: UdpDatagram) -> None:
    assert decode_udp(encode_udp(datagram)) == datagram


@given(st.binary(max_size=600))
def test_decode_udp_of_arbitrary_bytes_is_a_datagram_or_protocol_error(data: bytes) -> None:
    try:
        datagram = decode_udp(data)
    except ProtocolError:
        return
    assert isinstance(datagram, UdpDatagram)
    assert data.endswith(datagram.data)


#: RSV, FRAG and a known ATYP, so the address decoder gets arbitrary bytes too.
udp_header_starts = st.sampled_from([bytes([0, 0, 0, address_type]) for address_type in (1, 3, 4)])


@given(udp_header_starts, st.binary())
def test_decode_udp_of_a_header_start_and_arbitrary_bytes_is_a_datagram_or_protocol_error(
    start: bytes, data: bytes
) -> None:
    try:
        datagram = decode_udp(start + data)
    except ProtocolError:
        return
    assert isinstance(datagram, UdpDatagram)


# --- drivers: a minimal session on each side ---------------------------------------------------


@dataclass(frozen=True)
class ServerPolicy:
    """What the server answers; the method follows the client's offer like a real session."""

    auth_status: int = 0x00
    reply: Reply = Reply.SUCCEEDED
    socks4_status: Socks4Reply = Socks4Reply.GRANTED

    @staticmethod
    def choose(methods: tuple[int, ...]) -> int:
        for method in (NO_AUTH, USERPASS, GSSAPI):
            if method in methods:
                return method
        return AuthMethod.NO_ACCEPTABLE_METHODS


@dataclass(frozen=True)
class ClientPlan:
    """What the client sends: a first message (greeting or SOCKS4 request), then the rest."""

    first: Greeting | Socks4Request
    request: CommandRequest
    credentials: UserPassAuth


GSSAPI_TOKEN = GssapiToken(GssapiMessageType.AUTHENTICATION, b"token")
ALICE = UserPassAuth("alice", "s3cret")
FINAL = (State.ESTABLISHED, State.CLOSED)


def answer_as_server(server: ServerConnection, event: Any, policy: ServerPolicy) -> None:
    """Send what a session would send after `event`."""
    if isinstance(event, Greeting):
        server.send(MethodSelected(policy.choose(event.methods)))
    elif isinstance(event, UserPassAuth):
        server.send(AuthResult(policy.auth_status))
    elif isinstance(event, GssapiToken):
        if event.message_type != GssapiMessageType.ABORT:
            server.send(GSSAPI_TOKEN)
            server.authentication_complete()
    elif isinstance(event, CommandRequest):
        server.send(CommandReply(policy.reply))
        if server.state is State.SECOND_REPLY:
            server.send(CommandReply(policy.reply))
    elif isinstance(event, Socks4Request):
        server.send(Socks4Response(policy.socks4_status))
        if server.state is State.SOCKS4_SECOND_REPLY:
            server.send(Socks4Response(policy.socks4_status))
    else:
        assert isinstance(event, ConnectionClosed), f"unexpected event {event!r}"


def answer_as_client(client: ClientConnection, event: Any, plan: ClientPlan) -> None:
    """Send what a client would send after `event`."""
    # an abort closes; any other token completes the (simulated) authentication
    if isinstance(event, GssapiToken) and event.message_type != GssapiMessageType.ABORT:
        client.authentication_complete()
    if client.state is State.USERPASS:
        client.send(plan.credentials)
    elif client.state is State.GSSAPI and isinstance(event, MethodSelected):
        client.send(GSSAPI_TOKEN)
    elif client.state is State.REQUEST:
        client.send(plan.request)


SERVER_EVENTS = (Greeting, UserPassAuth, GssapiToken, CommandRequest, Socks4Request)
CLIENT_EVENTS = (MethodSelected, AuthResult, GssapiToken, CommandReply, Socks4Response)


def buffered(conn: Connection) -> int:
    """Bytes the machine holds and has not parsed (no public accessor that does not drain)."""
    return len(conn._buffer)


def drive(
    conn: Connection,
    chunks: list[bytes],
    answer: Callable[[Any], None],
    expected_events: tuple[type, ...],
) -> list[Any]:
    """Feed `chunks`, answer each event, stop at a protocol error.

    Asserts the fuzzing contract: only expected events, `NEED_DATA` or `ProtocolError`; while
    the handshake is incomplete, at most max_buffer plus the chunk just received is held.
    """
    events: list[Any] = []
    limit = conn._buffer.max_size
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            if conn.state in FINAL:
                continue  # the relay's bytes now; the bound no longer applies
            assert buffered(conn) <= limit + len(chunk)
            while conn.state not in FINAL:
                event = conn.next_event()
                if event is NEED_DATA:
                    assert buffered(conn) <= limit
                    break
                assert isinstance(event, (*expected_events, ConnectionClosed)), event
                events.append(event)
                answer(event)
    except ProtocolError as error:
        if conn.state is State.REPLY:
            # A malformed request is answerable with its REP, then the server closes.
            assert isinstance(conn, ServerConnection)
            conn.send(CommandReply(error.reply))
            assert conn.state is State.CLOSED
        else:
            assert conn.state is State.ERROR
        events.append(error)
    return events


# --- chunking and mutation ----------------------------------------------------------------------


@st.composite
def chunked(draw: st.DrawFn, payloads: st.SearchStrategy[bytes]) -> list[bytes]:
    """`payloads` cut at arbitrary split points, optionally followed by EOF (`b""`)."""
    data = draw(payloads)
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *points, len(data)]
    chunks = [data[start:end] for start, end in itertools.pairwise(bounds)]
    chunks = [chunk for chunk in chunks if chunk]  # b"" would mean EOF
    if draw(st.booleans()):
        chunks.append(b"")
    return chunks


@st.composite
def mutations(draw: st.DrawFn, payloads: st.SearchStrategy[bytes]) -> bytes:
    """`payloads` with a few bytes flipped, inserted or deleted."""
    data = bytearray(draw(payloads))
    operations = st.tuples(
        st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 1 << 16), st.integers(1, 255)
    )
    for operation, position, value in draw(st.lists(operations, min_size=1, max_size=6)):
        if operation == "insert":
            data.insert(position % (len(data) + 1), value)
        elif data and operation == "flip":
            data[position % len(data)] ^= value
        elif data:
            del data[position % len(data)]
    return bytes(data)


# --- valid handshakes ---------------------------------------------------------------------------

private_methods = st.lists(st.integers(0x03, 0xFE), max_size=4)


@st.composite
def client_handshakes(draw: st.DrawFn) -> tuple[bytes, ServerPolicy]:
    """The bytes a valid client sends, and a server policy under which they are the whole
    handshake (the server grants everything)."""
    kind = draw(st.sampled_from(["no_auth", "userpass", "gssapi", "socks4"]))
    request = draw(command_requests)
    policy = ServerPolicy()
    if kind == "socks4":
        return encode_socks4_request(draw(socks4_requests)), policy
    method = {"no_auth": NO_AUTH, "userpass": USERPASS, "gssapi": GSSAPI}[kind]
    greeting = Greeting(tuple(draw(st.permutations([method, *draw(private_methods)]))))
    data = encode_greeting(greeting)
    if kind == "userpass":
        data += encode_userpass(draw(userpass_requests))
    elif kind == "gssapi":
        data += encode_gssapi(GSSAPI_TOKEN)
    return data + encode_request(request), policy


@st.composite
def server_handshakes(draw: st.DrawFn) -> tuple[bytes, ClientPlan]:
    """The bytes a valid, granting server sends, and the client plan they answer."""
    kind = draw(st.sampled_from(["no_auth", "userpass", "gssapi", "socks4"]))
    if kind == "socks4":
        request = draw(socks4_requests)
        granted = encode_socks4_response(draw(socks4_responses.map(_granted_socks4)))
        replies = granted * (2 if request.command == Command.BIND else 1)
        return replies, ClientPlan(request, draw(command_requests), ALICE)
    request = draw(command_requests)
    method = {"no_auth": NO_AUTH, "userpass": USERPASS, "gssapi": GSSAPI}[kind]
    offered = tuple(draw(st.permutations([method, *draw(private_methods)])))
    data = encode_method_selected(MethodSelected(method))
    if kind == "userpass":
        data += encode_auth_result(AuthResult(0x00))
    elif kind == "gssapi":
        data += encode_gssapi(GSSAPI_TOKEN)
    succeeded = encode_reply(draw(command_replies.map(_succeeded)))
    data += succeeded * (2 if request.command == Command.BIND else 1)
    return data, ClientPlan(Greeting(offered), request, draw(userpass_requests))


def _granted_socks4(response: Socks4Response) -> Socks4Response:
    return Socks4Response(Socks4Reply.GRANTED, response.bound)


def _succeeded(reply: CommandReply) -> CommandReply:
    return CommandReply(Reply.SUCCEEDED, reply.bound)


server_policies = st.builds(
    ServerPolicy, octets, st.sampled_from(Reply), st.sampled_from(Socks4Reply)
)
max_buffers = st.sampled_from([16, 64, 300, 0x10000 + 4])


def new_client(plan: ClientPlan, max_buffer: int) -> ClientConnection:
    client = ClientConnection(max_buffer=max_buffer)
    client.send(plan.first)
    return client


def client_plans() -> st.SearchStrategy[ClientPlan]:
    return st.builds(
        ClientPlan,
        st.one_of(greetings, socks4_requests),
        command_requests,
        userpass_requests,
    )


# --- fuzzing ------------------------------------------------------------------------------------

#: Arbitrary bytes, half of them behind a version octet so the decoders get past it.
arbitrary_input = st.one_of(
    st.binary(max_size=600),
    st.tuples(st.sampled_from([b"\x05", b"\x04", b"\x01", b"\x00"]), st.binary(max_size=600)).map(
        b"".join
    ),
)


@given(
    chunks=chunked(arbitrary_input),
    policy=server_policies,
    accept_socks4=st.booleans(),
    max_buffer=max_buffers,
)
def test_server_fed_arbitrary_bytes_in_any_chunks_gives_events_or_protocol_error(
    chunks: list[bytes], policy: ServerPolicy, accept_socks4: bool, max_buffer: int
) -> None:
    server = ServerConnection(accept_socks4=accept_socks4, max_buffer=max_buffer)
    drive(server, chunks, lambda event: answer_as_server(server, event, policy), SERVER_EVENTS)


@given(chunks=chunked(arbitrary_input), plan=client_plans(), max_buffer=max_buffers)
def test_client_fed_arbitrary_bytes_in_any_chunks_gives_events_or_protocol_error(
    chunks: list[bytes], plan: ClientPlan, max_buffer: int
) -> None:
    client = new_client(plan, max_buffer)
    drive(client, chunks, lambda event: answer_as_client(client, event, plan), CLIENT_EVENTS)


@st.composite
def mutated_client_handshakes(draw: st.DrawFn) -> tuple[list[bytes], ServerPolicy]:
    data, policy = draw(client_handshakes())
    return draw(chunked(mutations(st.just(data)))), policy


@st.composite
def mutated_server_handshakes(draw: st.DrawFn) -> tuple[list[bytes], ClientPlan]:
    data, plan = draw(server_handshakes())
    return draw(chunked(mutations(st.just(data)))), plan


@given(
    case=mutated_client_handshakes(),
    policy=server_policies,
    accept_socks4=st.booleans(),
    max_buffer=max_buffers,
)
def test_server_fed_a_mutated_handshake_gives_events_or_protocol_error(
    case: tuple[list[bytes], ServerPolicy],
    policy: ServerPolicy,
    accept_socks4: bool,
    max_buffer: int,
) -> None:
    chunks, _ = case
    server = ServerConnection(accept_socks4=accept_socks4, max_buffer=max_buffer)
    drive(server, chunks, lambda event: answer_as_server(server, event, policy), SERVER_EVENTS)


@given(case=mutated_server_handshakes(), max_buffer=max_buffers)
def test_client_fed_a_mutated_handshake_gives_events_or_protocol_error(
    case: tuple[list[bytes], ClientPlan], max_buffer: int
) -> None:
    chunks, plan = case
    client = new_client(plan, max_buffer)
    drive(client, chunks, lambda event: answer_as_client(client, event, plan), CLIENT_EVENTS)


# --- valid handshakes in any chunks -------------------------------------------------------------

relay_bytes = st.binary(max_size=64)


@st.composite
def chunked_with_trailer(
    draw: st.DrawFn, handshakes: st.SearchStrategy[tuple[bytes, Any]]
) -> tuple[list[bytes], Any, bytes]:
    data, setup = draw(handshakes)
    trailer = draw(relay_bytes)
    chunks = [chunk for chunk in draw(chunked(st.just(data + trailer))) if chunk]
    return chunks, setup, trailer


@given(case=chunked_with_trailer(client_handshakes()))
def test_server_reads_a_valid_handshake_in_any_chunks_and_keeps_the_relay_bytes(
    case: tuple[list[bytes], ServerPolicy, bytes],
) -> None:
    chunks, policy, trailer = case
    server = ServerConnection(accept_socks4=True)
    events = drive(
        server, chunks, lambda event: answer_as_server(server, event, policy), SERVER_EVENTS
    )
    assert not any(isinstance(event, Exception) for event in events), events
    assert server.state is State.ESTABLISHED
    assert server.trailing_data == trailer


@given(case=chunked_with_trailer(server_handshakes()))
def test_client_reads_a_valid_handshake_in_any_chunks_and_keeps_the_relay_bytes(
    case: tuple[list[bytes], ClientPlan, bytes],
) -> None:
    chunks, plan, trailer = case
    client = new_client(plan, 0x10000 + 4)
    events = drive(
        client, chunks, lambda event: answer_as_client(client, event, plan), CLIENT_EVENTS
    )
    assert not any(isinstance(event, Exception) for event in events), events
    assert client.state is State.ESTABLISHED
    assert client.trailing_data == trailer
