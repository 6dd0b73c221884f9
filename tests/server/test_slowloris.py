"""Slowloris: a thousand connections that send half a greeting and stall.

With limits that let them all in, the handshake deadline drops every one of them on time while
normal clients are served; with the default per-client limits, one IP's flood is capped at
once and other IPs are served. Either way nothing is left behind: no session, no descriptor.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from conftest import RunningServer
from socks5d.config import Limits
from socks5d.proto import SOCKS5_VERSION, Command, Reply

from .raw_client import IO_TIMEOUT, connect, loopback_address, open_request, recv_exactly

pytestmark = pytest.mark.timeout(120)

STALLED = 1000
#: VER alone: the greeting's NMETHODS never comes.
HALF_GREETING = bytes([SOCKS5_VERSION])
HANDSHAKE_TIMEOUT = 1.0
#: How much later than its deadline a stalled connection may be dropped (the server is busy
#: accepting the rest of the flood meanwhile). A failure bound, not a measurement.
DROP_MARGIN = 5.0
#: A normal client every this many stalled connections.
NORMAL_EVERY = 200
OTHER_CLIENT = "127.0.0.2"
#: The test's sockets, the server's, and some to spare.
DESCRIPTORS_NEEDED = 3 * STALLED + 256


def _open_descriptors(running: RunningServer) -> int:
    """This process's descriptors, less the empty pipes the relay engine keeps for reuse."""
    pooled = getattr(running.server.relay_engine, "pooled_pipes", 0)
    return len(os.listdir("/proc/self/fd")) - 2 * pooled


@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to the hard limit when the flood needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= DESCRIPTORS_NEEDED, (
        f"RLIMIT_NOFILE hard limit {hard} < {DESCRIPTORS_NEEDED}: raise it to run this test"
    )
    if soft != resource.RLIM_INFINITY and soft < DESCRIPTORS_NEEDED:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def round_trip(server, listener: socket.socket, source: str | None = None) -> None:
    """A full CONNECT through the server to `listener`, and bytes both ways."""
    client, reply = open_request(server, Command.CONNECT, loopback_address(listener), source=source)
    with client:
        assert reply.reply == Reply.SUCCEEDED
        destination, _ = listener.accept()
        with destination:
            client.sendall(b"served")
            assert recv_exactly(destination, 6) == b"served"
            destination.sendall(b"yes")
            assert recv_exactly(client, 3) == b"yes"


def test_a_thousand_stalled_handshakes_are_dropped_on_time_while_normal_clients_are_served(
    start_server, listener: socket.socket, settled_active_sessions
) -> None:
    server = start_server(
        timeouts={"handshake": HANDSHAKE_TIMEOUT},
        limits={"max_handshakes_per_client": STALLED + 100, "max_sessions_per_client": 1100},
    )
    descriptors_before = _open_descriptors(server)
    stalled: list[tuple[socket.socket, float]] = []
    normal = 0
    try:
        for index in range(1, STALLED + 1):
            sock = connect(server)
            stalled.append((sock, time.monotonic()))
            sock.sendall(HALF_GREETING)
            if index % NORMAL_EVERY == 0:
                round_trip(server, listener)
                normal += 1

        for index, (sock, opened) in enumerate(stalled):
            # EOF within its deadline plus the margin; the socket timeout is the failure bound.
            sock.settimeout(max(opened + HANDSHAKE_TIMEOUT + DROP_MARGIN - time.monotonic(), 0.01))
            try:
                data = sock.recv(1)
            except TimeoutError:
                pytest.fail(f"stalled connection {index} still open long after its deadline")
            assert data == b"", f"stalled connection {index} was answered {data!r}"
    finally:
        for sock, _ in stalled:
            sock.close()

    records = server.wait_records(STALLED + normal)
    outcomes = [record["outcome"] for record in records]
    assert outcomes.count("handshake timeout") == STALLED
    assert sum(record["reply"] == "succeeded" for record in records) == normal
    assert not server.server.refused
    assert settled_active_sessions(server) == 0
    assert _open_descriptors(server) == descriptors_before


def test_a_flood_from_one_ip_is_capped_by_the_default_limits_while_another_ip_is_served(
    start_server, listener: socket.socket, settled_active_sessions
) -> None:
    server = start_server()  # default limits and handshake timeout
    cap = Limits().max_handshakes_per_client
    assert cap < STALLED
    descriptors_before = _open_descriptors(server)
    flood: list[socket.socket] = []
    try:
        with selectors.DefaultSelector() as selector:  # epoll: descriptors beyond FD_SETSIZE
            for _ in range(STALLED):
                sock = connect(server)
                flood.append(sock)
                sock.sendall(HALF_GREETING)
                selector.register(sock, selectors.EVENT_READ)

            # Accepts are first come, first served: once 127.0.0.2 is through, the whole
            # flood was judged.
            round_trip(server, listener, source=OTHER_CLIENT)
            assert server.server.refused == {
                f"handshakes in progress: limit of {cap} per client reached": STALLED - cap
            }

            # The refused ones are closed at once (FIN, or RST for the unread octet); the
            # ones let in wait for their greeting.
            closed: set[socket.socket] = set()
            deadline = time.monotonic() + IO_TIMEOUT
            while len(closed) < STALLED - cap and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(remaining):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    selector.unregister(sock)
                    closed.add(sock)
            assert len(closed) == STALLED - cap
            for sock in closed:
                with contextlib.suppress(ConnectionResetError):  # RST: our octet was unread
                    assert sock.recv(1) == b""
            for sock in flood:
                if sock not in closed:  # still in its handshake: nothing to read yet
                    sock.setblocking(False)
                    with pytest.raises(BlockingIOError):
                        sock.recv(1)
    finally:
        for sock in flood:
            sock.close()

    records = server.wait_records(cap + 1)
    assert len(records) == cap + 1
    outcomes = [record["outcome"] for record in records]
    assert outcomes.count("client closed during handshake") == cap
    assert settled_active_sessions(server) == 0
    assert _open_descriptors(server) == descriptors_before
