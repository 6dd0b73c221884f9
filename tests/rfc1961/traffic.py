"""Traffic for the GSSAPI tests: loopback echo servers (TCP, and UDP for datagrams of any
size), and socks5d's client, asyncio and blocking (`face` "aio" or "sync"), driving CONNECT,
BIND and UDP ASSOCIATE through a proxy. The data and the checks stay with the tests: each
driver returns what came back.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from interop.conftest import (
    EchoServer,
    Endpoint,
    UdpEchoServer,
    _EchoHandler,
    _UdpEchoHandler,
    serving,
)
from server.raw_client import recv_exactly
from socks5d.client import aio, sync

#: Seconds for one handshake with the proxy (our client's `timeout`).
CLIENT_TIMEOUT = 10.0
#: Seconds for a whole exchange: the payload both ways, a BIND or UDP round trip.
TRANSFER_TIMEOUT = 20.0
#: Seconds to wait for each echoed datagram (loopback: milliseconds when all is well).
UDP_TIMEOUT = 10.0
#: Sizes of the application's writes, in turn: odd sizes, from one byte to more than a
#: token's worth, so that writes, tokens and reads never line up.
WRITE_SIZES = (1, 3, 4093, 7, 65_537, 2, 16_381, 131_071, 509, 99_991, 12_289)

ALICE = "alice@SOCKS5D.TEST"
FACES = ("aio", "sync")

#: What goes through a CONNECT tunnel and comes back: incompressible, 1.5 MB.
PAYLOAD = random.Random(1961).randbytes(1_500_000)
EXPECTED = (len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())
#: What a BIND peer and our client say to each other (several tokens' worth each way).
FROM_PEER = random.Random(1).randbytes(150_001)
TO_PEER = random.Random(2).randbytes(90_017)
#: What a UDP round trip returns: each datagram that came back, and where from.
Answers = list[tuple[bytes, tuple[str, int]]]


def odd_writes(data: bytes) -> Iterator[bytes]:
    """`data` cut into consecutive slices of `WRITE_SIZES`, cycled."""
    offset = 0
    index = 0
    while offset < len(data):
        size = WRITE_SIZES[index % len(WRITE_SIZES)]
        yield data[offset : offset + size]
        offset += size
        index += 1


def gssapi_url(port: int, level: str, query: str = "") -> str:
    """The proxy URL of a GSSAPI server on 127.0.0.1:`port`, asking for `level`."""
    return f"socks5h://127.0.0.1:{port}?gssapi={level}{query}"


# --------------------------------------------------------------------------- echo servers


class LargeUdpEchoServer(UdpEchoServer):
    """socketserver reads 8192 bytes of a datagram by default: this one reads them all."""

    max_packet_size = 65_535


@contextmanager
def tcp_echo_server() -> Iterator[Endpoint]:
    """A TCP echo server on 127.0.0.1: echoes until the client half-closes, then closes."""
    with EchoServer(("127.0.0.1", 0), _EchoHandler) as server, serving(server):
        yield Endpoint("127.0.0.1", server.server_address[1])


@contextmanager
def udp_echo_server() -> Iterator[Endpoint]:
    """A UDP echo server on 127.0.0.1, for datagrams of any size."""
    with LargeUdpEchoServer(("127.0.0.1", 0), _UdpEchoHandler) as server, serving(server):
        yield Endpoint("127.0.0.1", server.server_address[1])


# --------------------------------------------------------------------------- CONNECT


async def aio_echo(proxy: Any, destination: Endpoint, payload: bytes) -> tuple[int, str]:
    reader, writer = await aio.open_connection(
        destination.host, destination.port, proxy=proxy, timeout=CLIENT_TIMEOUT
    )

    async def send() -> None:
        for chunk in odd_writes(payload):
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


def sync_echo(proxy: Any, destination: Endpoint, payload: bytes) -> tuple[int, str]:
    """The same with the blocking client: a thread sends while this one receives."""
    sock = sync.create_connection((destination.host, destination.port), CLIENT_TIMEOUT, proxy=proxy)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            for chunk in odd_writes(payload):
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


def echo_payload(face: str, proxy: Any, destination: Endpoint, payload: bytes) -> tuple[int, str]:
    """Send `payload` in odd writes through `proxy` (URL, Proxy or chain) to an echo server
    with the `face` client, half-close, read to EOF meanwhile; (bytes received, their sha256).
    """
    if face == "aio":
        return asyncio.run(aio_echo(proxy, destination, payload))
    return sync_echo(proxy, destination, payload)


# --------------------------------------------------------------------------- BIND


async def aio_bind(proxy: str, from_peer: bytes, to_peer: bytes) -> Endpoint:
    binding = await aio.open_bind("127.0.0.1", 0, proxy=proxy, timeout=CLIENT_TIMEOUT)
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
            assert binding.peer == (peer_host, peer_port)
            peer_writer.write(from_peer)
            writer.write(to_peer)
            async with asyncio.timeout(TRANSFER_TIMEOUT):
                _, _, at_client, at_peer = await asyncio.gather(
                    peer_writer.drain(),
                    writer.drain(),
                    reader.readexactly(len(from_peer)),
                    peer_reader.readexactly(len(to_peer)),
                )
            assert (at_client, at_peer) == (from_peer, to_peer)
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        peer_writer.close()
        await peer_writer.wait_closed()
    return Endpoint(peer_host, peer_port)


def sync_bind(proxy: str, from_peer: bytes, to_peer: bytes) -> Endpoint:
    binding = sync.open_bind("127.0.0.1", 0, proxy=proxy, timeout=CLIENT_TIMEOUT)
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
        assert binding.peer == (peer_host, peer_port)
        # The peer's side from a thread: both directions are in flight at once.
        sender = threading.Thread(target=peer.sendall, args=(from_peer,), name="peer")
        sender.start()
        try:
            connection.sendall(to_peer)
            assert recv_exactly(connection, len(from_peer)) == from_peer
            assert recv_exactly(peer, len(to_peer)) == to_peer
        finally:
            sender.join(TRANSFER_TIMEOUT)
        assert not sender.is_alive()
    return Endpoint(peer_host, peer_port)


def bind_and_relay(face: str, proxy: str, from_peer: bytes, to_peer: bytes) -> Endpoint:
    """BIND through `proxy` with the `face` client; a peer connects to the address bound
    and sends `from_peer` while our client sends `to_peer`; both arrive whole. The peer's
    address (as the proxy saw it).
    """
    if face == "aio":
        return asyncio.run(aio_bind(proxy, from_peer, to_peer))
    return sync_bind(proxy, from_peer, to_peer)


# --------------------------------------------------------------------------- UDP ASSOCIATE


async def aio_udp_round_trips(
    proxy: str, destination: Endpoint, datagrams: Sequence[bytes]
) -> Answers:
    answers = []
    async with await aio.open_udp(proxy=proxy, timeout=CLIENT_TIMEOUT) as udp:
        for datagram in datagrams:
            await udp.sendto(datagram, (destination.host, destination.port))
            answers.append(await udp.recvfrom(UDP_TIMEOUT))
        assert udp.dropped == 0
    return answers


def sync_udp_round_trips(proxy: str, destination: Endpoint, datagrams: Sequence[bytes]) -> Answers:
    answers = []
    with sync.open_udp(proxy=proxy, timeout=CLIENT_TIMEOUT) as udp:
        for datagram in datagrams:
            udp.sendto(datagram, (destination.host, destination.port))
            answers.append(udp.recvfrom(UDP_TIMEOUT))
        assert udp.dropped == 0
    return answers


def udp_round_trips(
    face: str, proxy: str, destination: Endpoint, datagrams: Sequence[bytes]
) -> Answers:
    """Each of `datagrams` to `destination` through a UDP association with the `face`
    client, and what came back (waiting for each answer); nothing dropped.
    """
    if face == "aio":
        return asyncio.run(aio_udp_round_trips(proxy, destination, datagrams))
    return sync_udp_round_trips(proxy, destination, datagrams)
