"""A finished session leaves no reference cycle behind: its objects are freed when it ends, by
reference counting, not later by the cyclic garbage collector, whose full passes walk every
object the open tunnels keep alive (the `held` benchmark scenario: a collector pass per few
hundred connections made the connection rate fall with the tunnels held).

Each test runs sessions of one kind with the collector off, then asks it what it would have
had to free.
"""

from __future__ import annotations

import gc
import socket
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from conftest import RunningServer
from socks5d.client import sync
from socks5d.errors import AuthFailed, ConnectionRefused

pytestmark = pytest.mark.timeout(60)

#: Sessions of each kind; any cycle a session leaves shows this many times over.
SESSIONS = 20


@pytest.fixture
def collector_off() -> Iterator[Callable[[], Counter[str]]]:
    """`garbage()`: the type names of what became cyclic garbage since the fixture began."""
    gc.collect()
    gc.disable()

    def garbage() -> Counter[str]:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found = Counter(type(obj).__qualname__ for obj in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        return found

    yield garbage
    gc.enable()


def _session_garbage(found: Counter[str]) -> dict[str, int]:
    """What of the garbage is a session's: anything of socks5d's per-session types."""
    kinds = (
        "Session",
        "AccessRecord",
        "_SpliceTunnel",
        "RelayResult",
        "Address",
        "TimerHandle",
        "socket",
        "_UdpAssociation",
    )
    return {kind: found[kind] for kind in kinds if found[kind]}


def _echo_server() -> tuple[socket.socket, Callable[[], None]]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve_one() -> None:
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(10)
            peer.sendall(peer.recv(64))

    return listener, serve_one


@pytest.mark.parametrize("relay", ["splice", "portable"])
@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_a_connect_session_leaves_no_cycle(
    start_server: Callable[..., RunningServer],
    collector_off: Callable[[], Counter[str]],
    relay: str,
    event_loop: str,
) -> None:
    server = start_server(event_loop=event_loop, performance={"relay": relay})
    listener, serve_one = _echo_server()
    with listener:
        for _ in range(SESSIONS):
            with sync.connect(*listener.getsockname(), proxy=server.url()) as sock:
                sock.settimeout(10)
                sock.sendall(b"ping")
                serve_one()
                assert sock.recv(64) == b"ping"
    server.wait_records(SESSIONS)
    assert _session_garbage(collector_off()) == {}


def test_failed_and_refused_sessions_leave_no_cycle(
    start_server: Callable[..., RunningServer], collector_off: Callable[[], Counter[str]]
) -> None:
    server = start_server(users={"alice": "secret"})
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    for _ in range(SESSIONS):
        with pytest.raises(ConnectionRefused):  # X'05': nothing listens there
            sync.connect("127.0.0.1", port, proxy=server.url(user="alice", password="secret"))
        with pytest.raises(AuthFailed):  # a wrong password
            sync.connect("127.0.0.1", port, proxy=server.url(user="alice", password="wrong"))
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"\x04garbage")  # SOCKS4 from a userpass-only server: refused
            sock.recv(64)
    server.wait_records(3 * SESSIONS)
    assert _session_garbage(collector_off()) == {}


def test_bind_and_udp_sessions_leave_no_cycle(
    start_server: Callable[..., RunningServer], collector_off: Callable[[], Counter[str]]
) -> None:
    server = start_server()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo:
        echo.bind(("127.0.0.1", 0))
        echo.settimeout(10)
        for _ in range(SESSIONS):
            with sync.open_udp(proxy=server.url()) as udp:
                udp.sendto(b"datagram", echo.getsockname())
                data, source = echo.recvfrom(64)
                echo.sendto(data, source)
                assert udp.recvfrom(timeout=10)[0] == b"datagram"
            binding = sync.open_bind("0.0.0.0", 0, proxy=server.url())
            with (
                socket.create_connection(
                    (str(binding.address.host), binding.address.port), timeout=10
                ),
                binding.accept(timeout=10),
            ):
                pass
    server.wait_records(2 * SESSIONS)
    assert _session_garbage(collector_off()) == {}
