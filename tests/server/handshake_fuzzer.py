"""Random handshakes for fuzzing a running server: valid ones built with the `proto` codecs,
then mutated (truncated, bit-flipped, bytes inserted, deleted or overwritten, length octets
replaced, glued to another handshake), and an asyncio driver that sends them over many
concurrent connections.

Everything is drawn from one seeded `random.Random`, so a run can be replayed byte for byte.
Destinations that can pass the fuzz server's rules are the test's own sinks on loopback; every
other address or name is for the rules to refuse.

Run as a script (by test_fuzz_server.py, so that the clients have a CPU of their own), it
serves the sinks it is handed as inherited descriptors (accept, close), sends the handshakes
and prints its `FuzzStats` as JSON:

    python handshake_fuzzer.py --server 127.0.0.1:PORT --count 1000 --seed 1 \
        --sink 127.0.0.1:PORT --sink-fd 5 ...
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import socket
import struct
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from socks5d.proto import (
    Address,
    AuthMethod,
    Command,
    CommandRequest,
    DomainName,
    Greeting,
    Socks4Request,
    UserPassAuth,
)
from socks5d.proto.rfc1928 import encode_greeting, encode_request
from socks5d.proto.rfc1929 import encode_userpass
from socks5d.proto.socks4 import encode_socks4_request

#: Methods a client may offer: the two the server knows, GSSAPI, and private/unassigned ones.
_METHODS = [
    AuthMethod.NO_AUTHENTICATION_REQUIRED,
    AuthMethod.USERNAME_PASSWORD,
    AuthMethod.GSSAPI,
    0x03,
    0x80,
    0xFE,
    0xFF,
]
_NAMES = ["localhost", "example.com", "a", "x" * 255, "sink.invalid", "127.0.0.1", "::1"]


@dataclass(frozen=True)
class Credentials:
    """The one good login of the fuzz server."""

    username: str
    password: str


def _random_text(rng: random.Random, low: int = 0, high: int = 255) -> str:
    raw = rng.randbytes(rng.randint(low, high))
    return raw.decode("utf-8", "surrogateescape")


def _destination(rng: random.Random, sinks: Sequence[Address], *, ipv4_only: bool) -> Address:
    choice = rng.random()
    if choice < 0.45:  # a sink the rules let through
        if ipv4_only:
            sinks = [s for s in sinks if isinstance(s.host, ipaddress.IPv4Address)]
        return rng.choice(sinks)
    port = rng.choice([sinks[0].port, 0, 80, rng.randrange(0x10000)])
    if choice < 0.6:
        return Address(ipaddress.IPv4Address(rng.getrandbits(32)), port)
    if choice < 0.7 and not ipv4_only:
        return Address(ipaddress.IPv6Address(rng.getrandbits(128)), port)
    if choice < 0.8:  # loopback, but (mostly) not a sink: refused by the rules
        return Address(ipaddress.IPv4Address(f"127.0.0.{rng.randrange(256)}"), port)
    if rng.random() < 0.5:
        return Address(DomainName(rng.choice(_NAMES)), port)
    name = rng.randbytes(rng.randint(1, 255)).replace(b"\x00", b"a")
    return Address(DomainName(name.decode("utf-8", "surrogateescape")), port)


def _socks4_handshake(rng: random.Random, sinks: Sequence[Address]) -> bytes:
    command = rng.choice([Command.CONNECT, Command.BIND])
    destination = _destination(rng, sinks, ipv4_only=True)
    host = destination.host
    if isinstance(host, ipaddress.IPv4Address) and host.packed[:3] == b"\x00\x00\x00":
        destination = Address(ipaddress.IPv4Address("127.0.0.1"), destination.port)
    user_id = rng.randbytes(rng.choice([0, 1, 8, 255])).replace(b"\x00", b"u")
    return encode_socks4_request(Socks4Request(command, destination, user_id))


def _socks5_handshake(
    rng: random.Random, sinks: Sequence[Address], credentials: Credentials
) -> bytes:
    style = rng.random()
    if style < 0.45:
        methods: list[int] = [AuthMethod.NO_AUTHENTICATION_REQUIRED]
    elif style < 0.75:
        methods = [AuthMethod.USERNAME_PASSWORD]
    elif style < 0.9:
        methods = rng.sample(_METHODS, rng.randint(1, len(_METHODS)))
    else:
        methods = [rng.randrange(0x100) for _ in range(rng.randint(1, 255))]
    wire = encode_greeting(Greeting(tuple(methods)))
    if AuthMethod.NO_AUTHENTICATION_REQUIRED not in methods and (
        AuthMethod.USERNAME_PASSWORD in methods
    ):
        if rng.random() < 0.6:
            login = UserPassAuth(credentials.username, credentials.password)
        else:
            login = UserPassAuth(_random_text(rng), _random_text(rng))
        wire += encode_userpass(login)
    command = rng.choice(list(Command))
    destination = _destination(rng, sinks, ipv4_only=False)
    if command == Command.UDP_ASSOCIATE and rng.random() < 0.5:
        destination = Address.unspecified()
    return wire + encode_request(CommandRequest(command, destination))


def valid_handshake(
    rng: random.Random, sinks: Sequence[Address], credentials: Credentials
) -> bytes:
    """A well-formed SOCKS4/4a request, or a SOCKS5 greeting [+ RFC 1929 login] + request."""
    if rng.random() < 0.15:
        return _socks4_handshake(rng, sinks)
    return _socks5_handshake(rng, sinks, credentials)


# --- mutations ----------------------------------------------------------------------------------


def _truncate(rng: random.Random, data: bytearray) -> None:
    del data[rng.randrange(len(data) + 1) :]


def _flip_bits(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 3)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _insert(rng: random.Random, data: bytearray) -> None:
    position = rng.randrange(len(data) + 1)
    data[position:position] = rng.randbytes(rng.choice([1, 2, 4, rng.randint(1, 300)]))


def _delete(rng: random.Random, data: bytearray) -> None:
    if data:
        start = rng.randrange(len(data))
        del data[start : start + rng.randint(1, 8)]


def _random_length(rng: random.Random, data: bytearray) -> None:
    # NMETHODS, ULEN, PLEN and the domain length all sit in the first few dozen octets.
    if data:
        index = rng.randrange(min(len(data), 64))
        data[index] = rng.choice([0, 1, 0x7F, 0xFF, rng.randrange(0x100)])


def _duplicate(rng: random.Random, data: bytearray) -> None:
    if data:
        start = rng.randrange(len(data))
        data[start:start] = data[start : start + rng.randint(1, 32)]


MUTATIONS: list[Callable[[random.Random, bytearray], None]] = [
    _truncate,
    _flip_bits,
    _insert,
    _delete,
    _random_length,
    _duplicate,
]


def handshake(rng: random.Random, sinks: Sequence[Address], credentials: Credentials) -> bytes:
    """One fuzz input: a valid handshake (1 in 5), a mutated one, two glued, or noise."""
    kind = rng.random()
    if kind < 0.05:
        return rng.randbytes(rng.randint(0, 600))
    data = bytearray(valid_handshake(rng, sinks, credentials))
    if kind < 0.25:
        return bytes(data)
    if kind < 0.3:
        data += valid_handshake(rng, sinks, credentials)
    for _ in range(rng.randint(1, 3)):
        rng.choice(MUTATIONS)(rng, data)
    return bytes(data)


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` in one write (mostly) or cut into up to four."""
    if len(data) < 2 or rng.random() < 0.7:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 3))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class FuzzStats:
    """What happened to the connections, from the client's side."""

    sent: int = 0
    #: how each connection ended: "eof", "reset", "timeout" (we gave up and reset it), ...
    endings: Counter[str] = field(default_factory=Counter)
    #: connections on which the server answered anything at all
    answered: int = 0


async def _one(
    server: tuple[str, int], pieces: list[bytes], read_timeout: float, stats: FuzzStats
) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, server)
        stats.sent += 1
        try:
            async with asyncio.timeout(read_timeout):
                for piece in pieces:
                    await loop.sock_sendall(sock, piece)
                answered = False
                while await loop.sock_recv(sock, 65536):
                    answered = True
            stats.answered += answered
            stats.endings["eof"] += 1
        except TimeoutError:
            stats.endings["timeout"] += 1
            # RST: no TIME_WAIT left behind on our side for a connection we abandon
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except ConnectionResetError:
            stats.endings["reset"] += 1
        except BrokenPipeError:
            stats.endings["broken pipe"] += 1
    finally:
        sock.close()


async def drive(
    server: tuple[str, int],
    inputs: Iterator[list[bytes]],
    *,
    concurrency: int,
    read_timeout: float,
) -> FuzzStats:
    """Send every input (a list of writes) on its own connection, `concurrency` at a time;
    each connection reads until EOF or `read_timeout`.
    """
    stats = FuzzStats()

    async def worker() -> None:
        for pieces in inputs:  # one shared iterator: workers take the next input in turn
            await _one(server, pieces, read_timeout, stats)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return stats


# --- as a script --------------------------------------------------------------------------------


def _serve_sink(sink: socket.socket) -> None:
    """Accept and close at once, until the listening socket is shut down."""
    while True:
        try:
            connection, _ = sink.accept()
        except OSError:
            return
        connection.close()


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", type=_endpoint, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--read-timeout", type=float, default=3.0)
    parser.add_argument("--sink", type=_endpoint, action="append", default=[])
    parser.add_argument("--sink-fd", type=int, action="append", default=[])
    parser.add_argument("--username", default="alice")
    parser.add_argument("--password", default="secret")
    args = parser.parse_args(argv)

    sinks = [Address.from_host(host, port) for host, port in args.sink]
    credentials = Credentials(args.username, args.password)
    rng = random.Random(args.seed)

    def inputs() -> Iterator[list[bytes]]:
        for _ in range(args.count):
            yield chunks(rng, handshake(rng, sinks, credentials))

    listening = [socket.socket(fileno=fd) for fd in args.sink_fd]
    for sock in listening:
        sock.setblocking(True)
    threads = [threading.Thread(target=_serve_sink, args=(sock,)) for sock in listening]
    for thread in threads:
        thread.start()
    try:
        stats = asyncio.run(
            drive(
                args.server,
                inputs(),
                concurrency=args.concurrency,
                read_timeout=args.read_timeout,
            )
        )
    finally:
        for sock in listening:
            sock.shutdown(socket.SHUT_RDWR)  # wakes accept() with an error
        for thread in threads:
            thread.join()
        for sock in listening:
            sock.close()
    print(json.dumps({"sent": stats.sent, "endings": stats.endings, "answered": stats.answered}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
