"""socks5d's client (asyncio and blocking) against Dante's sockd built with GSSAPI: CONNECT,
BIND and UDP ASSOCIATE at each protection level Dante knows (clear, integrity,
confidentiality), and a level sockd does not allow.

Dante is the reference here: its own client and server agree (test_realm_and_dante.py), so
data that comes back intact through sockd, with sockd logging a GSSAPI session at the level
asked for, shows that our client's token loop, level sub-negotiation and per-message
encapsulation (stream and datagram) are what Dante expects. Every test proves passage by
sockd's log line for the session, which names the GSSAPI level and principal and counts the
bytes on each side: the far side carries the plain payload, the client side the wire, which
is larger than the payload (plus SOCKS UDP headers) exactly when it travelled in tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from interop.conftest import (
    EchoServer,
    Endpoint,
    UdpEchoServer,
    _EchoHandler,
    _UdpEchoHandler,
    serving,
)
from interop.proxies import dante_address
from socks5d.client import aio, sync
from socks5d.errors import AuthFailed
from socks5d.proto import Address

from .dante import DANTE_LEVEL_BYTES, LEVELS, DanteGssapi, GssapiDanteServer
from .realm import KerberosRealm

#: Seconds for one handshake with sockd (our client's `timeout`).
CLIENT_TIMEOUT = 10.0
#: Seconds for a whole exchange: the payload both ways, a BIND or UDP round trip.
TRANSFER_TIMEOUT = 20.0
#: Seconds to wait for each echoed datagram (loopback: milliseconds when all is well).
UDP_TIMEOUT = 10.0
#: What goes through a CONNECT tunnel and comes back: incompressible, 1.5 MB.
PAYLOAD = random.Random(1961).randbytes(1_500_000)
#: Sizes of the application's writes, in turn: odd sizes, from one byte to more than a
#: token's worth, so that writes, tokens and reads never line up.
WRITE_SIZES = (1, 3, 4093, 7, 65_537, 2, 16_381, 131_071, 509, 99_991, 12_289)
#: What a BIND peer and our client say to each other (several tokens' worth each way).
FROM_PEER = random.Random(1).randbytes(150_001)
TO_PEER = random.Random(2).randbytes(90_017)
#: UDP payloads: one byte, a few, and one over 8 KB (one token each way at levels 1 and 2).
DATAGRAMS = (b"d", b"second datagram", bytes(range(256)) * 32 + b"tail")
#: The SOCKS UDP request header for an IPv4 destination (RFC 1928 §7).
UDP_HEADER = 10

ALICE = "alice@SOCKS5D.TEST"
FACES = ("aio", "sync")


def odd_writes(data: bytes) -> Iterator[bytes]:
    """`data` cut into consecutive slices of `WRITE_SIZES`, cycled."""
    offset = 0
    index = 0
    while offset < len(data):
        size = WRITE_SIZES[index % len(WRITE_SIZES)]
        yield data[offset : offset + size]
        offset += size
        index += 1


def proxy_url(server: GssapiDanteServer, level: str) -> str:
    return f"socks5h://127.0.0.1:{server.port}?gssapi={level}"


# --------------------------------------------------------------------------- fixtures


class LargeUdpEchoServer(UdpEchoServer):
    """socketserver reads 8192 bytes of a datagram by default: this one reads them all."""

    max_packet_size = 65_535


@pytest.fixture
def echo() -> Iterator[Endpoint]:
    """A TCP echo server on 127.0.0.1: echoes until the client half-closes, then closes."""
    with EchoServer(("127.0.0.1", 0), _EchoHandler) as server, serving(server):
        yield Endpoint("127.0.0.1", server.server_address[1])


@pytest.fixture
def udp_echo() -> Iterator[Endpoint]:
    """A UDP echo server on 127.0.0.1."""
    with LargeUdpEchoServer(("127.0.0.1", 0), _UdpEchoHandler) as server, serving(server):
        yield Endpoint("127.0.0.1", server.server_address[1])


StartSockd = Callable[[str], GssapiDanteServer]


@pytest.fixture
def sockd(
    krb5_realm: KerberosRealm, dante_gssapi: DanteGssapi, tmp_path: Path
) -> Iterator[StartSockd]:
    """Factory: `sockd(level)` starts Dante's sockd allowing only `level`; stopped (by PID)
    after the test.
    """
    started: list[GssapiDanteServer] = []

    def start(level: str) -> GssapiDanteServer:
        directory = tmp_path / f"sockd{len(started)}"
        directory.mkdir()
        server = GssapiDanteServer(dante_gssapi, krb5_realm, directory, levels=(level,))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


# --------------------------------------------------------------------------- sockd's record


@dataclass(frozen=True)
class DanteSession:
    """sockd's closing log line of one session: the GSSAPI level and principal it names, the
    bytes on the client's side (the wire) and on the far side (plain payload).
    """

    level: str
    user: str
    #: bytes sockd wrote to / read from our client
    to_client: int
    from_client: int
    #: bytes sockd wrote to / read from the destination (or the BIND peer)
    up: int
    down: int


_CLIENT = r"gssapi/(?P<level>[a-z]+)%(?P<user>\S+)@127\.0\.0\.1\.\d+"


def connect_session(server: GssapiDanteServer, destination: Endpoint) -> DanteSession:
    """The end of a CONNECT session to `destination`; waits for sockd to log it."""
    match = server.wait_log(
        rf"pass\(\d+\): tcp/connect \]: (?P<to_client>\d+) -> {_CLIENT} \S+ "
        rf"-> (?P<from_client>\d+), (?P<up>\d+) -> \S+ "
        rf"{re.escape(dante_address(destination))} -> (?P<down>\d+)"
    )
    return _session(match)


def bind_session(server: GssapiDanteServer, peer: Endpoint) -> DanteSession:
    """The end of a BIND session that accepted `peer`."""
    match = server.wait_log(
        rf"pass\(\d+\): tcp/bindreply \]: (?P<up>\d+) -> {re.escape(dante_address(peer))} "
        rf"\S+ -> (?P<down>\d+), (?P<to_client>\d+) -> \S+ {_CLIENT} -> (?P<from_client>\d+)"
    )
    return _session(match)


def udp_session(server: GssapiDanteServer, destination: Endpoint) -> DanteSession:
    """The end of a UDP association that relayed to `destination` (n datagrams each way)."""
    count = len(DATAGRAMS)
    match = server.wait_log(
        rf"pass\(\d+\): udp/udpassociate \]: (?P<to_client>\d+)/{count} -> {_CLIENT} \S+ "
        rf"-> (?P<from_client>\d+)/{count}, (?P<up>\d+)/{count} -> \S+ "
        rf"{re.escape(dante_address(destination))} -> (?P<down>\d+)/{count}"
    )
    return _session(match)


def _session(match: re.Match[str]) -> DanteSession:
    return DanteSession(
        match["level"],
        match["user"],
        int(match["to_client"]),
        int(match["from_client"]),
        int(match["up"]),
        int(match["down"]),
    )


def assert_session(
    session: DanteSession, level: str, up: int, down: int, *, udp: bool = False
) -> None:
    """sockd's session was GSSAPI at `level` for alice and carried `up` bytes to the far side,
    `down` back; on the client's side the same bytes (UDP: plus each datagram's SOCKS
    header) at level clear, more (token headers and checksums) at integrity and
    confidentiality.

    Over TCP only what sockd wrote to us is compared: sockd 1.4.2 sometimes undercounts
    what it read from a GSSAPI client (seen: 1,453,248 bytes logged for 1.5 MB in tokens,
    while the destination got every byte of the payload).
    """
    assert (session.level, session.user) == (level, ALICE), session
    assert (session.up, session.down) == (up, down), session
    overhead = UDP_HEADER * len(DATAGRAMS) if udp else 0
    plain = (down + overhead, up + overhead)
    wire = (session.to_client, session.from_client)
    if level == "clear":
        assert wire == plain, session
    elif udp:
        assert wire[0] > plain[0] and wire[1] > plain[1], session
    else:
        assert wire[0] > plain[0] and wire[1] > 0, session


# --------------------------------------------------------------------------- CONNECT


async def aio_echo(proxy: str, destination: Endpoint) -> tuple[int, str]:
    """Send PAYLOAD in odd writes through `proxy` then half-close, reading to EOF meanwhile;
    (bytes received, their sha256).
    """
    reader, writer = await aio.open_connection(
        destination.host, destination.port, proxy=proxy, timeout=CLIENT_TIMEOUT
    )

    async def send() -> None:
        for chunk in odd_writes(PAYLOAD):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    digest = hashlib.sha256()
    received = 0
    try:
        async with asyncio.timeout(TRANSFER_TIMEOUT), asyncio.TaskGroup() as group:
            group.create_task(send())
            while chunk := await reader.read(65_536):
                digest.update(chunk)
                received += len(chunk)
    finally:
        writer.close()
        await writer.wait_closed()
    return received, digest.hexdigest()


def sync_echo(proxy: str, destination: Endpoint) -> tuple[int, str]:
    """The same with the blocking client: a thread sends while this one receives."""
    sock = sync.create_connection((destination.host, destination.port), CLIENT_TIMEOUT, proxy=proxy)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            for chunk in odd_writes(PAYLOAD):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # reported by the receiving thread
            errors.append(exc)

    digest = hashlib.sha256()
    received = 0
    with sock:
        sock.settimeout(TRANSFER_TIMEOUT)
        sender = threading.Thread(target=send, name="sender")
        sender.start()
        try:
            while chunk := sock.recv(65_536):
                digest.update(chunk)
                received += len(chunk)
        finally:
            sender.join(TRANSFER_TIMEOUT)
    assert not sender.is_alive(), "the sender is stuck"
    assert not errors, errors
    return received, digest.hexdigest()


EXPECTED = (len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())


@pytest.mark.parametrize("level", LEVELS)
async def test_aio_connect_through_sockd_carries_a_large_payload(
    level: str, sockd: StartSockd, echo: Endpoint
) -> None:
    server = sockd(level)

    assert await aio_echo(proxy_url(server, level), echo) == EXPECTED

    assert_session(connect_session(server, echo), level, len(PAYLOAD), len(PAYLOAD))
    assert server.gssapi_session() == (level, ALICE)


@pytest.mark.parametrize("level", LEVELS)
def test_sync_connect_through_sockd_carries_a_large_payload(
    level: str, sockd: StartSockd, echo: Endpoint
) -> None:
    server = sockd(level)

    assert sync_echo(proxy_url(server, level), echo) == EXPECTED

    assert_session(connect_session(server, echo), level, len(PAYLOAD), len(PAYLOAD))
    assert server.gssapi_session() == (level, ALICE)


# --------------------------------------------------------------------------- BIND


@pytest.mark.parametrize("level", LEVELS)
async def test_aio_bind_through_sockd_accepts_the_peer_and_relays_both_ways(
    level: str, sockd: StartSockd
) -> None:
    server = sockd(level)
    binding = await aio.open_bind(
        "127.0.0.1", 0, proxy=proxy_url(server, level), timeout=CLIENT_TIMEOUT
    )
    try:
        assert str(binding.address.host) == "127.0.0.1" and binding.address.port != 0
        peer_reader, peer_writer = await asyncio.open_connection(
            str(binding.address.host), binding.address.port
        )
    except BaseException:
        binding.close()
        raise
    try:
        reader, writer = await binding.accept(CLIENT_TIMEOUT)
        try:
            peer_host, peer_port = peer_writer.get_extra_info("sockname")[:2]
            assert binding.peer == Address.from_host(peer_host, peer_port)
            peer_writer.write(FROM_PEER)
            writer.write(TO_PEER)
            async with asyncio.timeout(TRANSFER_TIMEOUT):
                _, _, from_peer, to_peer = await asyncio.gather(
                    peer_writer.drain(),
                    writer.drain(),
                    reader.readexactly(len(FROM_PEER)),
                    peer_reader.readexactly(len(TO_PEER)),
                )
            assert (from_peer, to_peer) == (FROM_PEER, TO_PEER)
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        peer_writer.close()
        await peer_writer.wait_closed()

    session = bind_session(server, Endpoint(peer_host, peer_port))
    assert_session(session, level, len(TO_PEER), len(FROM_PEER))


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    received = bytearray()
    while len(received) < size and (chunk := sock.recv(size - len(received))):
        received += chunk
    return bytes(received)


@pytest.mark.parametrize("level", LEVELS)
def test_sync_bind_through_sockd_accepts_the_peer_and_relays_both_ways(
    level: str, sockd: StartSockd
) -> None:
    server = sockd(level)
    binding = sync.open_bind("127.0.0.1", 0, proxy=proxy_url(server, level), timeout=CLIENT_TIMEOUT)
    try:
        assert str(binding.address.host) == "127.0.0.1" and binding.address.port != 0
        peer = socket.create_connection(
            (str(binding.address.host), binding.address.port), timeout=TRANSFER_TIMEOUT
        )
    except BaseException:
        binding.close()
        raise
    with peer, binding.accept(CLIENT_TIMEOUT) as connection:
        connection.settimeout(TRANSFER_TIMEOUT)
        peer_host, peer_port = peer.getsockname()[:2]
        assert binding.peer == Address.from_host(peer_host, peer_port)
        # The peer's side from a thread: both directions are in flight at once.
        sender = threading.Thread(target=peer.sendall, args=(FROM_PEER,), name="peer")
        sender.start()
        try:
            connection.sendall(TO_PEER)
            assert receive_exactly(connection, len(FROM_PEER)) == FROM_PEER
            assert receive_exactly(peer, len(TO_PEER)) == TO_PEER
        finally:
            sender.join(TRANSFER_TIMEOUT)
        assert not sender.is_alive()

    session = bind_session(server, Endpoint(peer_host, peer_port))
    assert_session(session, level, len(TO_PEER), len(FROM_PEER))


# --------------------------------------------------------------------------- UDP ASSOCIATE


async def aio_udp_round_trips(proxy: str, destination: Endpoint) -> list[tuple[bytes, tuple]]:
    """Each of DATAGRAMS to `destination` and what came back (waiting for each answer)."""
    answers = []
    async with await aio.open_udp(proxy=proxy, timeout=CLIENT_TIMEOUT) as udp:
        for datagram in DATAGRAMS:
            await udp.sendto(datagram, (destination.host, destination.port))
            answers.append(await udp.recvfrom(UDP_TIMEOUT))
        assert udp.dropped == 0
    return answers


def sync_udp_round_trips(proxy: str, destination: Endpoint) -> list[tuple[bytes, tuple]]:
    """The same with the blocking client."""
    answers = []
    with sync.open_udp(proxy=proxy, timeout=CLIENT_TIMEOUT) as udp:
        for datagram in DATAGRAMS:
            udp.sendto(datagram, (destination.host, destination.port))
            answers.append(udp.recvfrom(UDP_TIMEOUT))
        assert udp.dropped == 0
    return answers


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("face", FACES)
async def test_udp_through_sockd_round_trips_datagrams(
    face: str, level: str, sockd: StartSockd, udp_echo: Endpoint
) -> None:
    server = sockd(level)
    proxy = proxy_url(server, level)

    if face == "aio":
        answers = await aio_udp_round_trips(proxy, udp_echo)
    else:
        answers = await asyncio.to_thread(sync_udp_round_trips, proxy, udp_echo)

    source = (udp_echo.host, udp_echo.port)
    assert answers == [(datagram, source) for datagram in DATAGRAMS]
    total = sum(map(len, DATAGRAMS))
    session = udp_session(server, udp_echo)
    assert_session(session, level, total, total, udp=True)


# --------------------------------------------------------------------------- refusal


@pytest.mark.parametrize(
    ("allowed", "asked"),
    [("integrity", "confidentiality"), ("confidentiality", "clear"), ("clear", "integrity")],
)
@pytest.mark.parametrize("face", FACES)
async def test_level_sockd_does_not_allow_raises_auth_failed(
    face: str, allowed: str, asked: str, sockd: StartSockd, echo: Endpoint
) -> None:
    server = sockd(allowed)
    proxy = proxy_url(server, asked)

    # Dante closes the connection instead of answering: AuthFailed, well within the timeout
    # (a client that waited for an answer would raise ProxyTimeout after CLIENT_TIMEOUT).
    with pytest.raises(AuthFailed, match="closed the connection during GSS-API"):
        if face == "aio":
            sock = await aio.connect(echo.host, echo.port, proxy=proxy, timeout=CLIENT_TIMEOUT)
        else:
            sock = await asyncio.to_thread(
                sync.connect, echo.host, echo.port, proxy=proxy, timeout=CLIENT_TIMEOUT
            )
        sock.close()

    # sockd read the level we asked for, as the byte Dante's own client would send.
    byte = DANTE_LEVEL_BYTES[asked]
    server.wait_log(
        rf"block\(\d+\): tcp/accept \]: .*the client requests different authentication "
        rf"from what we offer\.  Client requests {asked} \({byte:#x}\)"
    )
