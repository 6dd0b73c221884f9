"""What `socks5d serve` (one process) tells its service manager over `NOTIFY_SOCKET`: READY=1
once listening, RELOADING=1 then READY=1 around each SIGHUP (a failed reload too: the old
configuration serves), STATUS= with SESSIONS= as sessions open and close (at most every 5 s),
STOPPING=1 when the drain begins. The socket is a datagram socket this test owns.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import IO_TIMEOUT, Processes, echo_pair, exchange, serve_fixture
from socks5d.client import sync
from socks5d.server.notify import parse_message

#: more than the 5 s between two STATUS= lines
STATUS_TIMEOUT = 10.0


@pytest.fixture
def serve() -> Iterator[Processes]:
    yield from serve_fixture()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(IO_TIMEOUT)
        yield sock


def receive(manager: socket.socket, timeout: float = IO_TIMEOUT) -> dict[str, str]:
    manager.settimeout(timeout)
    return parse_message(manager.recv(4096))


@pytest.mark.timeout(60)
def test_notifications_in_order_ready_status_reloading_ready_stopping(
    serve: Processes, tmp_path: Path, manager: socket.socket
) -> None:
    config = tmp_path / "socks5d.toml"
    config.write_text('listen = ["127.0.0.1:0"]\n')
    server = serve("--config", str(config), env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
    ((host, port),) = server.listeners()
    ready = receive(manager)
    assert ready == {
        "READY": "1",
        "STATUS": f"listening on {host}:{port}, 0 sessions open",
        "SESSIONS": "0",
    }

    with socket.create_server(("127.0.0.1", 0)) as destination:
        destination.settimeout(IO_TIMEOUT)
        client = sync.connect(*destination.getsockname()[:2], proxy=f"socks5://{host}:{port}")
        with client, echo_pair(destination, client) as far:
            exchange(client, far, b"x")
            assert receive(manager) == {"STATUS": "1 sessions open", "SESSIONS": "1"}

            server.signal(signal.SIGHUP)
            reloading = receive(manager)
            assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
            assert receive(manager) == {
                "READY": "1",
                "STATUS": f"listening on {host}:{port}, 1 sessions open",
                "SESSIONS": "1",
            }

            config.write_text("listen = [\n")  # broken: the old configuration goes on
            server.signal(signal.SIGHUP)
            assert receive(manager)["RELOADING"] == "1"
            failed = receive(manager)
            assert failed["READY"] == "1" and failed["SESSIONS"] == "1"
            assert failed["STATUS"].startswith("reload failed, previous configuration serving")
        # the tunnel closed: within the next 5 s the count goes back to 0
        assert receive(manager, STATUS_TIMEOUT) == {"STATUS": "0 sessions open", "SESSIONS": "0"}

    server.signal(signal.SIGTERM)
    assert receive(manager) == {"STOPPING": "1", "STATUS": "stopping, 0 sessions open"}
    assert server.wait_exit() == 0
    manager.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing after STOPPING
        manager.recv(4096)
