"""The zero-copy relay, `SpliceEngine`: what only it can get wrong.

The promises every engine keeps (both directions, half-close, counts, idle timeout,
backpressure) are tested on both engines in test_relay.py. Here: pipes are lent to a direction
only while bytes are in flight, so idle tunnels hold none and the pool stays bounded; bytes the
client sent before the reply go first, once; a reset or a failed pipe ends the tunnel with an
`error:` outcome and leaks no descriptor; a slow destination gets every byte, in order, through
the wait-for-writable path.

The server runs in this process (`start_server`), so /proc/self/fd shows its descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from server.raw_client import (
    IO_TIMEOUT,
    Background,
    connect,
    greeting_bytes,
    loopback_address,
    open_tunnel,
    read_reply,
    read_until_eof,
    recv_exactly,
    request_bytes,
)
from socks5d.proto import SOCKS5_VERSION, AuthMethod, Command, Reply
from socks5d.relay import splice, splice_available
from socks5d.relay.splice import PIPE_POOL_SIZE, SpliceEngine

pytestmark = pytest.mark.skipif(not splice_available(), reason="splice(2) is Linux-only")

#: Tunnels held open at once by the pipe-count tests.
IDLE_TUNNELS = 200
#: "A few KB" pushed each way through each idle tunnel.
BURST_SIZE = 3 * 1024
#: Tunnels stalled at once: more than the pool keeps.
STALLED_TUNNELS = PIPE_POOL_SIZE + 16
#: What the destination of a stalled tunnel pushes at a client that does not read.
STALL_SIZE = 256 * 1024
#: A small-window receiver: its receive buffer and maximum segment size, set before it
#: connects (or listens). The small MSS also keeps the server's send buffer towards it small,
#: so a few hundred KB fill the path and a splice must wait for the socket to be writable.
SMALL_BUFFER = 4096
SMALL_MSS = 1400
#: Bytes through a tunnel whose far end reads slowly.
SLOW_TRANSFER = 3 * 1024 * 1024 + 5
#: Seconds a condition polled from /proc may take to become true.
SETTLE_TIMEOUT = 10.0


@pytest.fixture(params=["asyncio", "uvloop"])
def splice_server(start_server: Callable[..., Any], request: pytest.FixtureRequest) -> Any:
    """An in-process server relaying with splice(2), on each event loop."""
    server = start_server(event_loop=request.param, performance={"relay": "splice"})
    assert isinstance(server.server.relay_engine, SpliceEngine)
    return server


def engine_of(server: Any) -> SpliceEngine:
    engine = server.server.relay_engine
    assert isinstance(engine, SpliceEngine)
    return engine


def descriptors(kind: str = "") -> int:
    """This process's open descriptors whose /proc link starts with `kind` ("pipe:", ...)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(kind):
                count += 1
        except FileNotFoundError:  # the descriptor listdir itself used, now closed
            continue
    return count


def wait_until(condition: Callable[[], bool], what: Callable[[], str]) -> None:
    """Poll `condition` until it holds; fail with `what()` after SETTLE_TIMEOUT."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {what()}")
        time.sleep(0.01)


def payload(size: int, seed: bytes) -> bytes:
    blocks = (hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def on_server_loop(server: Any, function: Callable[[], Any]) -> Any:
    """`function()` run on the server's event loop thread, between two of its callbacks."""

    async def call() -> Any:
        return function()

    return asyncio.run_coroutine_threadsafe(call(), server._loop).result(IO_TIMEOUT)


def pooled_pipe_contents(engine: SpliceEngine) -> list[int]:
    """Bytes left inside each pipe the pool keeps (all must be empty)."""
    counts = []
    for read_end, _ in engine._pool.free:
        buffer = bytearray(4)
        fcntl.ioctl(read_end, termios.FIONREAD, buffer)
        counts.append(int.from_bytes(buffer, sys.byteorder))
    return counts


@pytest.fixture
def live_tunnels(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every `_SpliceTunnel` the engine creates during the test, to look at its state."""
    created: list[Any] = []

    class Recorded(splice._SpliceTunnel):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            created.append(self)

    monkeypatch.setattr(splice, "_SpliceTunnel", Recorded)
    return created


def linger_zero(sock: socket.socket) -> None:
    """close() will send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def small_proxy_send_buffer(monkeypatch: pytest.MonkeyPatch, towards: str) -> None:
    """Give the proxy's socket towards the slow reader ("client" or "destination") a small
    send buffer, so the kernel cannot queue a pipe's worth of bytes there: the splice must
    wait, whatever the kernel's buffer autotuning would have allowed.
    """
    begin = splice._SpliceTunnel.begin

    def shrunk(tunnel: Any, early_data: bytes) -> None:
        target = tunnel.sockets[0] if towards == "client" else tunnel.sockets[1]
        target.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        begin(tunnel, early_data)

    monkeypatch.setattr(splice._SpliceTunnel, "begin", shrunk)


def small_window(sock: socket.socket) -> None:
    """Make `sock` a small-window receiver; only effective before connect() or listen()."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SMALL_MSS)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)


def open_small_window_tunnel(server: Any, listener: socket.socket) -> socket.socket:
    """A CONNECT tunnel from a small-window client socket; the caller accepts the far end."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        small_window(sock)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(server.address)
        sock.sendall(greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        assert recv_exactly(sock, 2) == bytes(
            [SOCKS5_VERSION, AuthMethod.NO_AUTHENTICATION_REQUIRED]
        )
        sock.sendall(request_bytes(Command.CONNECT, loopback_address(listener)))
        reply, _ = read_reply(sock)
        assert reply.reply == Reply.SUCCEEDED
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def tunnels(
    server: Any, listener: socket.socket, count: int, *, small_window_clients: bool = False
) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """`count` open tunnels through `server`: (client end, destination end) each."""
    with contextlib.ExitStack() as stack:
        pairs = []
        for _ in range(count):
            if small_window_clients:
                client = stack.enter_context(open_small_window_tunnel(server, listener))
            else:
                client, reply = open_tunnel(server, loopback_address(listener))
                stack.enter_context(client)
                assert reply.reply == Reply.SUCCEEDED
            destination, _ = listener.accept()
            stack.enter_context(destination)
            destination.settimeout(IO_TIMEOUT)
            pairs.append((client, destination))
        yield pairs


@pytest.fixture
def small_window_listener() -> Iterator[socket.socket]:
    """A destination whose accepted connections are small-window receivers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        small_window(sock)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.settimeout(IO_TIMEOUT)
        yield sock


# --- pipes are lent only while bytes are in flight -----------------------------------------------


def test_idle_tunnels_hold_no_pipes(splice_server: Any, listener: socket.socket) -> None:
    engine = engine_of(splice_server)
    baseline = descriptors("pipe:")
    assert engine.pooled_pipes == 0
    with tunnels(splice_server, listener, IDLE_TUNNELS) as pairs:
        for number, (client, destination) in enumerate(pairs):
            up, down = payload(BURST_SIZE, b"up%d" % number), payload(BURST_SIZE, b"dn%d" % number)
            client.sendall(up)
            destination.sendall(down)
            assert recv_exactly(destination, len(up)) == up
            assert recv_exactly(client, len(down)) == down
        # every tunnel is open and idle: only the pool's pipes are left
        wait_until(
            lambda: descriptors("pipe:") == baseline + 2 * engine.pooled_pipes,
            lambda: (
                f"{descriptors('pipe:') - baseline} pipe descriptors for "
                f"{engine.pooled_pipes} pooled pipes and {IDLE_TUNNELS} idle tunnels"
            ),
        )
        assert 1 <= engine.pooled_pipes <= PIPE_POOL_SIZE
    records = splice_server.wait_records(IDLE_TUNNELS)
    assert {(r["bytes_up"], r["bytes_down"]) for r in records} == {(BURST_SIZE, BURST_SIZE)}


def test_pool_keeps_at_most_its_size_after_a_burst_of_stalled_tunnels(
    splice_server: Any, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_proxy_send_buffer(monkeypatch, "client")
    engine = engine_of(splice_server)
    baseline = descriptors("pipe:")
    data = payload(STALL_SIZE, b"stall")
    with tunnels(splice_server, listener, STALLED_TUNNELS, small_window_clients=True) as pairs:
        sent = []
        for _, destination in pairs:
            destination.setblocking(False)
            total = 0
            with contextlib.suppress(BlockingIOError):
                while total < len(data):
                    total += destination.send(data[total:])
            sent.append(total)
        # every client reads nothing: every tunnel has bytes in flight, in a pipe of its own
        wait_until(
            lambda: (
                engine.pooled_pipes == 0 and descriptors("pipe:") == baseline + 2 * STALLED_TUNNELS
            ),
            lambda: (
                f"{descriptors('pipe:') - baseline} pipe descriptors, "
                f"{engine.pooled_pipes} pooled, for {STALLED_TUNNELS} stalled tunnels "
                f"(destinations sent {min(sent)}..{max(sent)} bytes)"
            ),
        )
        for (client, _), count in zip(pairs, sent, strict=True):
            client.settimeout(IO_TIMEOUT)
            assert recv_exactly(client, count) == data[:count]
        # all given back: the pool keeps PIPE_POOL_SIZE, the others are closed
        wait_until(
            lambda: (
                engine.pooled_pipes == PIPE_POOL_SIZE
                and descriptors("pipe:") == baseline + 2 * PIPE_POOL_SIZE
            ),
            lambda: (
                f"{descriptors('pipe:') - baseline} pipe descriptors, "
                f"{engine.pooled_pipes} pooled (at most {PIPE_POOL_SIZE})"
            ),
        )


# --- early data ----------------------------------------------------------------------------------


def test_early_data_arrives_first_and_once_then_the_spliced_stream(
    splice_server: Any, listener: socket.socket
) -> None:
    early = b"EARLY:" + payload(1500, b"early")
    stream = payload(512 * 1024 + 3, b"stream")
    with connect(splice_server) as client:
        # request and first bytes in one segment, before any answer: the bytes ride in the
        # handshake buffer and reach the relay as early data
        client.sendall(
            greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED)
            + request_bytes(Command.CONNECT, loopback_address(listener))
            + early
        )
        assert recv_exactly(client, 2) == bytes(
            [SOCKS5_VERSION, AuthMethod.NO_AUTHENTICATION_REQUIRED]
        )
        reply, _ = read_reply(client)
        assert reply.reply == Reply.SUCCEEDED
        destination, _ = listener.accept()
        with destination:
            destination.settimeout(IO_TIMEOUT)

            def send_stream() -> None:  # at once: it may overtake the early data, if let
                client.sendall(stream)
                client.shutdown(socket.SHUT_WR)

            sender = Background(send_stream)
            assert read_until_eof(destination) == early + stream
            sender.result()
            destination.sendall(b"ok")
            destination.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b"ok"
    record = splice_server.wait_records(1)[0]
    assert (record["bytes_up"], record["bytes_down"]) == (len(early) + len(stream), 2)
    assert record["outcome"] == "closed"


# --- failures end the tunnel cleanly -------------------------------------------------------------


def test_destination_reset_with_bytes_in_flight_is_an_error_and_leaks_nothing(
    splice_server: Any,
    small_window_listener: socket.socket,
    live_tunnels: list[Any],
) -> None:
    engine = engine_of(splice_server)
    baseline = descriptors()
    client, reply = open_tunnel(splice_server, loopback_address(small_window_listener))
    with client:
        assert reply.reply == Reply.SUCCEEDED
        destination, _ = small_window_listener.accept()
        with destination:
            destination.settimeout(IO_TIMEOUT)
            flood = payload(8 * 1024 * 1024, b"flood")

            def send_all() -> None:
                with contextlib.suppress(OSError):  # the tunnel ends under it
                    client.sendall(flood)

            sender = Background(send_all)
            destination.sendall(b"down")
            assert recv_exactly(client, 4) == b"down"
            assert recv_exactly(destination, 64 * 1024) == flood[: 64 * 1024]
            # the destination reads no more: the upward direction ends up waiting to write,
            # its pipe full of bytes (checked on the server's loop, between callbacks)
            (tunnel,) = live_tunnels
            wait_until(
                lambda: on_server_loop(splice_server, lambda: tunnel.pending[0] > 0),
                lambda: f"no bytes in flight upward: {tunnel.pending}",
            )
            linger_zero(destination)
        assert read_until_eof_or_reset(client) == b""
        sender.result()
    record = splice_server.wait_records(1)[0]
    assert record["outcome"].startswith("error: "), record
    assert record["bytes_down"] == 4
    assert 64 * 1024 <= record["bytes_up"] < len(flood)
    # the server's two sockets, and the pipe that held the lost bytes, are closed
    assert descriptors() == baseline + 2 * engine.pooled_pipes
    assert on_server_loop(splice_server, lambda: pooled_pipe_contents(engine)) == [0] * (
        engine.pooled_pipes
    )
    # and the next tunnel gets only its own bytes, both ways at once
    up, down = payload(2 * 1024 * 1024, b"up"), payload(2 * 1024 * 1024, b"down")
    with tunnels(splice_server, small_window_listener, 1) as [(client, destination)]:
        senders = [
            Background(lambda: client.sendall(up)),
            Background(lambda: destination.sendall(down)),
        ]
        assert recv_exactly(destination, len(up)) == up
        assert recv_exactly(client, len(down)) == down
        for background in senders:
            background.result()


def read_until_eof_or_reset(sock: socket.socket) -> bytes:
    """What arrives until the connection ends, by FIN or by RST."""
    data = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return bytes(data)


def test_failing_pipe_creation_ends_the_tunnel_and_the_server_goes_on(
    splice_server: Any, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_of(splice_server)
    assert engine.pooled_pipes == 0  # so the relay must create a pipe
    baseline = descriptors()

    def no_more_descriptors(flags: int) -> tuple[int, int]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(splice.os, "pipe2", no_more_descriptors)
    client, reply = open_tunnel(splice_server, loopback_address(listener))
    with client:
        assert reply.reply == Reply.SUCCEEDED
        destination, _ = listener.accept()
        with destination:
            destination.settimeout(IO_TIMEOUT)
            client.sendall(b"needs a pipe")
            assert read_until_eof(client) == b""
            assert read_until_eof(destination) == b""
    record = splice_server.wait_records(1)[0]
    assert record["outcome"] == f"error: [Errno {errno.EMFILE}] {os.strerror(errno.EMFILE)}"
    assert record["bytes_up"] == 0
    assert descriptors() == baseline
    monkeypatch.undo()

    with tunnels(splice_server, listener, 1) as [(client, destination)]:
        client.sendall(b"ping")
        assert recv_exactly(destination, 4) == b"ping"
        destination.sendall(b"pong")
        assert recv_exactly(client, 4) == b"pong"
    assert splice_server.wait_records(2)[1]["outcome"] == "closed"
    assert engine.pooled_pipes >= 1


# --- backpressure --------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["up", "down"])
def test_slow_reader_gets_every_byte_in_order_through_the_writable_wait(
    splice_server: Any,
    listener: socket.socket,
    small_window_listener: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    direction: str,
) -> None:
    waits_for_writable: list[int] = []
    original = splice._SpliceTunnel._writable

    def counting(tunnel: Any, index: int) -> None:
        waits_for_writable.append(index)
        original(tunnel, index)

    monkeypatch.setattr(splice._SpliceTunnel, "_writable", counting)
    small_proxy_send_buffer(monkeypatch, "destination" if direction == "up" else "client")
    data = payload(SLOW_TRANSFER, direction.encode())
    # the receiver is the small-window end: the destination going up, the client going down
    setup = (
        tunnels(splice_server, small_window_listener, 1)
        if direction == "up"
        else tunnels(splice_server, listener, 1, small_window_clients=True)
    )
    with setup as [(client, destination)]:
        sender, receiver = (client, destination) if direction == "up" else (destination, client)
        receiver.settimeout(IO_TIMEOUT)

        def send_and_close() -> None:
            sender.sendall(data)
            sender.shutdown(socket.SHUT_WR)

        background = Background(send_and_close)
        digest, total = hashlib.sha256(), 0
        while chunk := receiver.recv(SMALL_BUFFER):  # slowly: a small read at a time
            digest.update(chunk)
            total += len(chunk)
        background.result()
        assert total == len(data)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
        receiver.shutdown(socket.SHUT_WR)
        assert read_until_eof(sender) == b""
    record = splice_server.wait_records(1)[0]
    moved = (record["bytes_up"], record["bytes_down"])
    assert moved == ((len(data), 0) if direction == "up" else (0, len(data)))
    assert record["outcome"] == "closed"
    assert waits_for_writable, "the target never filled: the backpressure path did not run"
    assert set(waits_for_writable) == {0 if direction == "up" else 1}
