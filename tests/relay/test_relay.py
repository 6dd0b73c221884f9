"""The tunnel after a successful CONNECT: bytes both ways, half-close, backpressure, counts, idle.

RFC 1928 §6: "Once the reply has been sent, the SOCKS server starts relaying traffic" - the
relay promises (socks5d.relay) are what these tests hold it to.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator

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

#: What the destination pushes at a client that does not read (RFC-free: just "a lot").
FLOOD_SIZE = 64 * 1024 * 1024
#: The server may hold a few relay buffers, not the flood.
MAX_RSS_GROWTH = 16 * 1024 * 1024
#: No byte accepted for this long means the destination's sender is blocked.
STALL_SECONDS = 1.0


#: Every relay engine, on both event loops: the promises hold for each.
ENGINE_SETUPS = [
    pytest.param(("asyncio", "portable"), id="asyncio-portable"),
    pytest.param(("asyncio", "splice"), id="asyncio-splice"),
    pytest.param(("uvloop", "portable"), id="uvloop-portable"),
    pytest.param(("uvloop", "splice"), id="uvloop-splice"),
]


@pytest.fixture(params=ENGINE_SETUPS)
def start_server(start_server, request):
    """The shared factory, with this test's event loop and relay engine."""
    event_loop, relay = request.param

    def start(**settings):
        settings.setdefault("performance", {"relay": relay})
        return start_server(event_loop=event_loop, **settings)

    return start


@pytest.fixture
def tunnel(socks_server, listener: socket.socket) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, destination): the two ends of a tunnel through `socks_server`."""
    client, reply = open_tunnel(socks_server, loopback_address(listener))
    with client:
        assert reply.reply == Reply.SUCCEEDED
        destination, _ = listener.accept()
        with destination:
            destination.settimeout(IO_TIMEOUT)
            yield client, destination


def _payload(size: int, seed: bytes) -> bytes:
    blocks = (hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def test_data_is_relayed_both_ways_concurrently(socks_server, tunnel) -> None:
    client, destination = tunnel
    up, down = _payload(3_000_001, b"up"), _payload(2_000_003, b"down")
    # Both sides send before reading: the relay must run both directions at once.
    client_sender = Background(lambda: client.sendall(up))
    destination_sender = Background(lambda: destination.sendall(down))
    assert recv_exactly(destination, len(up)) == up
    assert recv_exactly(client, len(down)) == down
    client_sender.result()
    destination_sender.result()
    client.sendall(b"ping")
    assert recv_exactly(destination, 4) == b"ping"
    destination.sendall(b"pong")
    assert recv_exactly(client, 4) == b"pong"


def test_client_half_close_reaches_destination_and_whole_response_comes_back(
    socks_server, tunnel
) -> None:
    client, destination = tunnel
    request, response_seed = _payload(500_000, b"request"), b"response"

    def serve_after_eof() -> bytes:
        received = read_until_eof(destination)  # only the client's half-close ends this
        destination.sendall(_payload(1_000_000, response_seed + received[:16]))
        destination.close()
        return received

    server_side = Background(serve_after_eof)
    client.sendall(request)
    client.shutdown(socket.SHUT_WR)
    response = read_until_eof(client)
    assert server_side.result() == request
    assert response == _payload(1_000_000, response_seed + request[:16])
    record = socks_server.wait_records(1)[0]
    assert record["bytes_up"] == len(request)
    assert record["bytes_down"] == len(response)
    assert record["outcome"] == "closed"


def test_destination_closing_first_reaches_client_as_eof_while_client_can_still_send(
    socks_server, tunnel
) -> None:
    client, destination = tunnel
    destination.sendall(b"goodbye")
    destination.shutdown(socket.SHUT_WR)
    assert read_until_eof(client) == b"goodbye"
    client.sendall(b"but I still have something to say")
    client.shutdown(socket.SHUT_WR)
    assert read_until_eof(destination) == b"but I still have something to say"
    record = socks_server.wait_records(1)[0]
    assert record["bytes_up"] == 33
    assert record["bytes_down"] == 7
    assert record["outcome"] == "closed"


@pytest.mark.parametrize(
    ("up", "down"),
    [(0, 0), (1, 0), (0, 1), (65_536, 65_537), (1_048_573, 7)],
    ids=["nothing", "one-up", "one-down", "around-a-read", "megabyte-up"],
)
def test_record_counts_exactly_the_bytes_relayed_each_way(
    socks_server, tunnel, up: int, down: int
) -> None:
    client, destination = tunnel
    client.sendall(_payload(up, b"u"))
    client.shutdown(socket.SHUT_WR)
    assert read_until_eof(destination) == _payload(up, b"u")
    destination.sendall(_payload(down, b"d"))
    destination.shutdown(socket.SHUT_WR)
    assert read_until_eof(client) == _payload(down, b"d")
    record = socks_server.wait_records(1)[0]
    assert (record["bytes_up"], record["bytes_down"]) == (up, down)
    assert record["outcome"] == "closed"


def test_idle_timeout_closes_a_silent_tunnel(start_server, listener: socket.socket) -> None:
    server = start_server(timeouts={"idle": 0.5})
    client, reply = open_tunnel(server, loopback_address(listener))
    with client:
        assert reply.reply == Reply.SUCCEEDED
        destination, _ = listener.accept()
        with destination:
            client.sendall(b"x")
            assert recv_exactly(destination, 1) == b"x"
            # silence: both ends see the server close within IO_TIMEOUT
            assert read_until_eof(client) == b""
            destination.settimeout(IO_TIMEOUT)
            assert read_until_eof(destination) == b""
    record = server.wait_records(1)[0]
    assert record["outcome"] == "idle timeout"
    assert record["bytes_up"] == 1


def _vm_rss() -> int:
    """Resident set size of this process (the server thread's too), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_slow_reader_gets_everything_while_backpressure_bounds_server_memory(
    socks_server, tunnel
) -> None:
    client, destination = tunnel
    chunk = memoryview(_payload(256 * 1024, b"flood"))
    rss_before = _vm_rss()
    destination.settimeout(STALL_SECONDS)
    sent = 0
    while sent < FLOOD_SIZE:  # the client reads nothing yet
        try:
            sent += destination.send(chunk[: FLOOD_SIZE - sent])
        except TimeoutError:
            break
    growth = _vm_rss() - rss_before
    print(f"stalled after {sent / 2**20:.1f} MiB, RSS growth {growth / 2**20:.1f} MiB")
    assert sent < FLOOD_SIZE, "the destination never blocked: the server buffers unboundedly"
    assert growth < MAX_RSS_GROWTH

    def read_all() -> int:
        buffer = bytearray(1 << 20)
        total = 0
        while count := client.recv_into(buffer):
            total += count
        return total

    reader = Background(read_all)
    destination.settimeout(IO_TIMEOUT)
    while sent < FLOOD_SIZE:
        sent += destination.send(chunk[: FLOOD_SIZE - sent])
    destination.shutdown(socket.SHUT_WR)
    assert reader.result() == FLOOD_SIZE
    assert _vm_rss() - rss_before < MAX_RSS_GROWTH
    client.shutdown(socket.SHUT_WR)
    assert read_until_eof(destination) == b""
    record = socks_server.wait_records(1)[0]
    assert record["bytes_down"] == FLOOD_SIZE


def test_handshake_data_and_eof_in_one_burst_still_get_the_whole_response(
    socks_server, listener: socket.socket
) -> None:
    """Like `printf ... | nc`: everything, EOF included, arrives before the reply is sent."""
    request = b"QUIT\r\n" * 1000
    burst = (
        greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED)
        + request_bytes(Command.CONNECT, loopback_address(listener))
        + request
    )
    with connect(socks_server) as client:
        client.sendall(burst)
        client.shutdown(socket.SHUT_WR)
        selected = recv_exactly(client, 2)
        assert selected == bytes([SOCKS5_VERSION, AuthMethod.NO_AUTHENTICATION_REQUIRED])
        reply, _ = read_reply(client)
        assert reply.reply == Reply.SUCCEEDED
        destination, _ = listener.accept()
        with destination:
            assert read_until_eof(destination) == request
            destination.sendall(b"221 bye\r\n")
            destination.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b"221 bye\r\n"
    record = socks_server.wait_records(1)[0]
    assert (record["bytes_up"], record["bytes_down"]) == (len(request), 9)
    assert record["outcome"] == "closed"


def test_open_tunnels_need_no_session_task_and_end_when_the_server_closes(
    start_server, listener: socket.socket
) -> None:
    server = start_server()
    tunnels = []
    try:
        for _ in range(20):
            client, reply = open_tunnel(server, loopback_address(listener))
            assert reply.reply == Reply.SUCCEEDED
            destination, _ = listener.accept()
            destination.settimeout(IO_TIMEOUT)
            tunnels.append((client, destination))
        for client, destination in tunnels:  # every tunnel relays before the close
            client.sendall(b"ping")
            assert recv_exactly(destination, 4) == b"ping"
        # The CONNECT sessions handed their sockets to the relay engine and ended.
        assert len(server.server.tunnels) == 20
        assert server.server.active_sessions == 20

        server.stop()  # fails if a task or a session is left

        for client, destination in tunnels:
            assert read_until_eof(client) == b""
            assert read_until_eof(destination) == b""
        records = server.wait_records(20)
        assert [r["outcome"] for r in records] == ["server closing"] * 20
        assert all(r["bytes_up"] == 4 for r in records)
    finally:
        for client, destination in tunnels:
            client.close()
            destination.close()
