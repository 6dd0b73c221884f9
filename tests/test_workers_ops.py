"""Operations under `socks5d serve --workers 2`: one scrape of `/metrics` sums over the
workers and never goes backwards when one is replaced, `/sessions` lists every worker's
tunnels, SIGTERM drains (`/healthz` 503) and a second SIGTERM stops at once, SIGHUP adds and
removes listeners in every worker, SIGUSR1 reopens the log file, and the service manager
hears the supervisor alone (`NOTIFY_SOCKET`).

Real processes as in tests/test_workers.py (its helpers are shared); the admin endpoint is
read over HTTP and its Prometheus text parsed by prometheus_client's own parser.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import test_workers
from serving import get, scrape
from sockets import recv_exactly
from socks5d.server.notify import parse_message
from socks5d.server.runtime import STARTUP_SECONDS
from test_workers import (
    IO_TIMEOUT,
    PROCESS_TIMEOUT,
    STARTUP_MARGIN,
    Supervised,
    age,
    assert_every_worker_serves,
    children,
    open_echoed_tunnel,
    read_until_closed,
    wait_until,
)

#: the fixtures of tests/test_workers.py: `serve(*args)` starts a server process; the far end
serve = test_workers.serve
destination = test_workers.destination

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="needs /proc and SO_REUSEPORT (Linux)"
    ),
    pytest.mark.timeout(60),
]

#: sessions made to check the sums
SESSIONS = 30
#: tunnels held open at once so that both workers hold some (all on one: 2**-39)
TUNNELS = 40


# --- the admin endpoint --------------------------------------------------------------------------


def admin_port(server: Supervised) -> int:
    """The admin endpoint's port, from the line the admin process logs once it serves."""
    (entry,) = server.wait_for(lambda e: e["message"].startswith("admin endpoint on "))
    return int(entry["message"].rpartition(":")[2])


def admin_pid(server: Supervised) -> int:
    (entry,) = server.wait_for(lambda e: e["message"].startswith("admin endpoint: process "))
    return int(entry["message"].rpartition(" ")[2])


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def monotonic_samples(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The counters and histogram series: what must never go backwards."""
    return {
        key: value
        for key, value in samples.items()
        if key[0].endswith(("_total", "_bucket", "_count", "_sum"))
    }


def sessions(port: int, limit: int = 1000) -> list[dict[str, Any]]:
    status, body = get(port, f"/sessions?limit={limit}")
    assert status == 200, body
    listed = json.loads(body)
    assert isinstance(listed, list)
    return listed


def make_sessions(port: int, destination: socket.socket, count: int) -> None:
    """`count` CONNECT sessions through the proxy, each closed after one echo."""
    for number in range(count):
        with contextlib.ExitStack() as stack:
            open_echoed_tunnel(stack, port, destination, b"session %d" % number)


def access_records(server: Supervised, count: int) -> None:
    server.wait_for(lambda e: e["logger"] == "socks5d.access", count)


@pytest.fixture
def pytest_needs_prometheus() -> None:
    pytest.importorskip("prometheus_client")


def admin_serve(
    serve: Callable[..., Supervised], tmp_path: Path, drain: float = 20.0
) -> tuple[Supervised, int, int]:
    """`serve --workers 2` with the admin endpoint on a port of its own; the server, the
    SOCKS port and the admin port."""
    config = tmp_path / "ops.toml"
    config.write_text(f"[timeouts]\ndrain = {drain}\n", encoding="utf-8")
    server = serve(
        "--config",
        str(config),
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    )
    port = server.wait_listening(2)
    return server, port, admin_port(server)


def worker_pids(server: Supervised) -> set[int]:
    """The two workers: the supervisor's children but the admin process."""
    found = server.workers(3) - {admin_pid(server)}
    assert len(found) == 2
    return found


# --- metrics and sessions ------------------------------------------------------------------------


@pytest.mark.usefixtures("pytest_needs_prometheus")
def test_one_scrape_sums_over_both_workers_and_sessions_lists_both(
    serve: Callable[..., Supervised], destination: socket.socket, tmp_path: Path
) -> None:
    server, port, admin = admin_serve(serve, tmp_path)
    workers = worker_pids(server)
    make_sessions(port, destination, SESSIONS)
    access_records(server, SESSIONS)
    wait_until(
        lambda: total(scrape(admin), "socks5d_sessions_total") == SESSIONS,
        lambda: (
            f"{SESSIONS} sessions in one scrape: {total(scrape(admin), 'socks5d_sessions_total')}"
        ),
    )
    assert get(admin, "/healthz") == (200, b"ok\n")

    with contextlib.ExitStack() as stack:
        for number in range(TUNNELS):
            open_echoed_tunnel(stack, port, destination, b"tunnel %d" % number)
        wait_until(
            lambda: len(sessions(admin)) == TUNNELS,
            lambda: f"{TUNNELS} open sessions listed: {len(sessions(admin))}",
        )
        listed = sessions(admin)
        assert {item["pid"] for item in listed} == workers
        assert all(item["command"] == "connect" for item in listed)
        ages = [item["age"] for item in listed]
        assert ages == sorted(ages, reverse=True)  # oldest first
        assert len(sessions(admin, limit=7)) == 7
        active = total(scrape(admin), "socks5d_sessions_active")
        assert active == TUNNELS
    assert server.finish() == 0


@pytest.mark.usefixtures("pytest_needs_prometheus")
def test_a_replaced_worker_leaves_its_counts_in_the_sum(
    serve: Callable[..., Supervised], destination: socket.socket, tmp_path: Path
) -> None:
    server, port, admin = admin_serve(serve, tmp_path)
    workers = worker_pids(server)
    # both workers serve some: TUNNELS at once, then closed
    assert_every_worker_serves(workers, port, destination, count=TUNNELS)
    access_records(server, TUNNELS)
    wait_until(
        lambda: total(scrape(admin), "socks5d_sessions_total") == TUNNELS,
        lambda: f"{TUNNELS} sessions counted",
    )
    before = monotonic_samples(scrape(admin))

    victim = min(workers)
    wait_until(
        lambda: age(victim) > STARTUP_SECONDS + STARTUP_MARGIN,
        lambda: f"worker {victim} older than {STARTUP_SECONDS} s",
    )
    os.kill(victim, signal.SIGKILL)
    # gone, maybe not replaced yet: its last snapshot still counts
    assert total(scrape(admin), "socks5d_sessions_total") == TUNNELS
    server.wait_for(lambda e: f"(pid {victim}) exited" in e["message"])
    server.wait_listening(3)
    replaced = server.workers(3) - {admin_pid(server)}
    assert victim not in replaced and len(replaced) == 2

    after = monotonic_samples(scrape(admin))
    went_back = {key: (value, after.get(key)) for key, value in before.items()}
    went_back = {key: pair for key, pair in went_back.items() if (pair[1] or 0.0) < pair[0]}
    assert went_back == {}
    assert total(after, "socks5d_sessions_total") == TUNNELS
    make_sessions(port, destination, 5)
    access_records(server, TUNNELS + 5)
    wait_until(
        lambda: total(scrape(admin), "socks5d_sessions_total") == TUNNELS + 5,
        lambda: "the replacement's sessions added",
    )
    assert server.finish() == 0


def test_an_admin_address_in_use_stops_the_start_naming_it(
    serve: Callable[..., Supervised],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        server = serve("--workers", "2", "--listen", "127.0.0.1:0", "--admin-listen", address)
        assert server.finish(None) == 1
    (error,) = [e for e in server.entries if e["level"] == "error"]
    assert error["message"].startswith(f"cannot start: cannot listen on {address} (admin.listen)")
    assert "Address already in use" in error["message"]
    assert not any(m.startswith(("supervisor", "listening on")) for m in server.messages())


@pytest.mark.usefixtures("pytest_needs_prometheus")
def test_an_admin_process_that_dies_is_replaced(
    serve: Callable[..., Supervised], tmp_path: Path
) -> None:
    server, _, admin = admin_serve(serve, tmp_path)
    victim = admin_pid(server)
    workers = worker_pids(server)
    wait_until(
        lambda: age(victim) > STARTUP_SECONDS + STARTUP_MARGIN,
        lambda: f"admin process {victim} older than {STARTUP_SECONDS} s",
    )
    os.kill(victim, signal.SIGKILL)
    (entry,) = server.wait_for(lambda e: f"admin endpoint (pid {victim}) exited" in e["message"])
    assert entry["message"].endswith("exited (-9); starting another")
    server.wait_for(lambda e: e["message"].startswith("admin endpoint on "), count=2)
    assert get(admin, "/healthz") == (200, b"ok\n")  # the same socket, served again
    (replacement,) = server.workers(3) - workers
    assert replacement != victim
    assert server.finish() == 0


# --- drain ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_admin", [False, True], ids=["alone", "with-admin"])
def test_sigterm_drains_every_worker_keeping_an_open_tunnel_then_exits_0(
    serve: Callable[..., Supervised],
    destination: socket.socket,
    tmp_path: Path,
    with_admin: bool,
) -> None:
    if with_admin:
        pytest.importorskip("prometheus_client")
        server, port, admin = admin_serve(serve, tmp_path)
        worker_pids(server)
    else:
        config = tmp_path / "drain.toml"
        config.write_text("[timeouts]\ndrain = 20\n", encoding="utf-8")
        server = serve("--config", str(config), "--workers", "2", "--listen", "127.0.0.1:0")
        port = server.wait_listening(2)
        server.workers(2)
    with contextlib.ExitStack() as stack:
        tunnel, far_end = open_echoed_tunnel(stack, port, destination, b"before the drain")
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_message("draining 2 workers for up to 20 s")
        if with_admin:
            wait_until(
                lambda: get(admin, "/healthz") == (503, b"draining\n"),
                lambda: f"/healthz draining: {get(admin, '/healthz')}",
            )
            assert total(scrape(admin), "socks5d_draining") == 1
        # no new connection: the listeners are closed (the reservation does not listen)
        wait_until(
            lambda: connection_refused(port),
            lambda: f"port {port} refuses connections while draining",
        )
        # the open tunnel goes on, both ways
        data = os.urandom(64 * 1024)
        tunnel.sendall(data)
        far_end.sendall(recv_exactly(far_end, len(data)))
        assert recv_exactly(tunnel, len(data)) == data
        assert server.process.poll() is None
        tunnel.shutdown(socket.SHUT_WR)
        assert read_until_closed(far_end) == b""
        far_end.shutdown(socket.SHUT_WR)
        assert read_until_closed(tunnel) == b""
    assert server.finish(None) == 0
    messages = server.messages()
    assert f"supervisor {server.pid} exits (status 0)" in messages
    assert not any(m.startswith("stopping ") for m in messages)
    # (a probe of the port may have been accepted just before the listeners closed)
    (record,) = [e for e in server.entries if e.get("command") == "connect"]
    assert record["outcome"] == "closed"


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT):
            return False
    except ConnectionRefusedError:
        return True


def test_a_second_sigterm_stops_at_once(
    serve: Callable[..., Supervised], destination: socket.socket, tmp_path: Path
) -> None:
    config = tmp_path / "long-drain.toml"
    config.write_text("[timeouts]\ndrain = 120\n", encoding="utf-8")
    server = serve("--config", str(config), "--workers", "2", "--listen", "127.0.0.1:0")
    port = server.wait_listening(2)
    server.workers(2)
    with contextlib.ExitStack() as stack:
        tunnel, far_end = open_echoed_tunnel(stack, port, destination, b"open")
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(lambda e: e["message"].startswith("draining 2 workers for up to 120 s"))
        started = time.monotonic()
        # PROCESS_TIMEOUT is well below the 120 s drain: only the stop at once can end it
        assert server.finish(signal.SIGTERM) == 0
        assert time.monotonic() - started < PROCESS_TIMEOUT
        assert read_until_closed(tunnel) == b""
        assert read_until_closed(far_end) == b""
    # the worker without the tunnel may have drained and exited before the second SIGTERM
    assert any(re.fullmatch(r"stopping [12] workers", m) for m in server.messages())
    assert server.left_behind() == []


# --- reload and log files ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_listen(config: Path, *addresses: str) -> None:
    listed = ", ".join(f'"{address}"' for address in addresses)
    config.write_text(f"listen = [{listed}]\n", encoding="utf-8")


def test_sighup_adds_and_removes_a_listener_in_every_worker(
    serve: Callable[..., Supervised], destination: socket.socket, tmp_path: Path
) -> None:
    config = tmp_path / "listen.toml"
    first, second = free_port(), free_port()
    write_listen(config, f"127.0.0.1:{first}")
    server = serve("--config", str(config), "--workers", "2")
    assert server.wait_listening(2) == first
    workers = server.workers(2)

    write_listen(config, f"127.0.0.1:{second}")
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_message(f"listening on 127.0.0.1:{second}", count=2)
    server.wait_for_message("configuration reloaded", count=2)
    assert server.workers(2) == workers  # in place, not restarted
    assert_every_worker_serves(workers, second, destination)
    access_records(server, TUNNELS)  # logged once their sockets are closed: counts settle
    wait_until(lambda: connection_refused(first), lambda: f"port {first} closed")

    # a new port 0 cannot be one port of every worker: the supervisor refuses the reload
    write_listen(config, f"127.0.0.1:{second}", "127.0.0.1:0")
    os.kill(server.pid, signal.SIGHUP)
    (refusal,) = server.wait_for(lambda e: e["message"].startswith("reload refused"))
    assert refusal["level"] == "error"
    assert "127.0.0.1:0 (port 0) cannot be added" in refusal["message"]
    assert_every_worker_serves(workers, second, destination)
    access_records(server, 2 * TUNNELS)
    assert server.messages().count("configuration reloaded") == 2

    # a worker started after the reload serves the current listen addresses
    victim = min(workers)
    wait_until(
        lambda: age(victim) > STARTUP_SECONDS + STARTUP_MARGIN,
        lambda: f"worker {victim} older than {STARTUP_SECONDS} s",
    )
    mark = len(server.entries)
    os.kill(victim, signal.SIGKILL)
    server.wait_for_message(f"listening on 127.0.0.1:{second}", count=3)
    replaced = server.workers(2)
    assert victim not in replaced
    assert_every_worker_serves(replaced, second, destination)
    assert not any(e["message"].startswith("listening on") for e in server.entries[mark:-1])
    assert server.finish() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_with_user_set_a_reload_may_remove_a_listener_but_not_add_one(
    serve: Callable[..., Supervised], destination: socket.socket, request: pytest.FixtureRequest
) -> None:
    # the workers read the file again as nobody: out of the test's private directory
    readable = Path(tempfile.mkdtemp(prefix="socks5d-test-"))
    readable.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(readable))
    config = readable / "listen.toml"
    first, second = free_port(), free_port()
    write_listen(config, f"127.0.0.1:{first}", f"127.0.0.1:{second}")
    config.chmod(0o644)
    server = serve("--config", str(config), "--workers", "2", "--user", "nobody")
    server.wait_for_message(f"listening on 127.0.0.1:{second}", count=2)
    workers = server.workers(2)
    nobody = pwd.getpwnam("nobody").pw_uid
    wait_until(
        lambda: all(os.stat(f"/proc/{pid}").st_uid == nobody for pid in workers),
        lambda: "every worker serves as nobody",
    )
    assert os.stat(f"/proc/{server.pid}").st_uid == 0  # the supervisor may start another

    write_listen(config, f"127.0.0.1:{second}")
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_message("configuration reloaded", count=2)
    wait_until(lambda: connection_refused(first), lambda: f"port {first} closed")
    assert_every_worker_serves(workers, second, destination)

    write_listen(config, f"127.0.0.1:{second}", f"127.0.0.1:{first}")
    os.kill(server.pid, signal.SIGHUP)
    (refusal,) = server.wait_for(lambda e: e["message"].startswith("reload refused"))
    assert f"127.0.0.1:{first} cannot be added by a reload" in refusal["message"]
    assert "user = 'nobody'" in refusal["message"]
    assert connection_refused(first)
    assert server.finish() == 0


def log_entries(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sigusr1_reopens_the_log_file_in_the_supervisor_and_every_worker(
    serve: Callable[..., Supervised], destination: socket.socket, tmp_path: Path
) -> None:
    log_file = tmp_path / "socks5d.log"
    server = serve("--workers", "2", "--listen", "127.0.0.1:0", "--log-file", str(log_file))
    wait_until(
        lambda: sum(e["message"].startswith("listening on") for e in log_entries(log_file)) == 2,
        lambda: f"two workers listening: {log_entries(log_file)}",
    )
    port = int(
        next(e for e in log_entries(log_file) if e["message"].startswith("listening on"))[
            "listener"
        ].rpartition(":")[2]
    )
    workers = server.workers(2)
    rotated = log_file.with_name("socks5d.log.1")
    log_file.rename(rotated)
    os.kill(server.pid, signal.SIGUSR1)
    wait_until(
        lambda: any(e["message"].startswith("log file reopened") for e in log_entries(log_file)),
        lambda: f"the supervisor's line in the new file: {log_entries(log_file)}",
    )
    # every worker reopened too: each writes its access records to the new file
    assert_every_worker_serves(workers, port, destination)
    wait_until(
        lambda: (
            len([e for e in log_entries(log_file) if e["logger"] == "socks5d.access"]) == TUNNELS
        ),
        lambda: "every access record in the new file",
    )
    assert not [e for e in log_entries(rotated) if e["logger"] == "socks5d.access"]
    server.finish()


def test_sigusr1_without_a_log_file_is_ignored_with_a_line(
    serve: Callable[..., Supervised],
) -> None:
    server = serve("--workers", "2", "--listen", "127.0.0.1:0")
    server.wait_listening(2)
    workers = server.workers(2)
    os.kill(server.pid, signal.SIGUSR1)
    server.wait_for_message("SIGUSR1 ignored: no log file to reopen (logging to stderr)")
    assert server.workers(2) == workers
    assert server.finish() == 0


# --- the service manager -------------------------------------------------------------------------


class Manager:
    """The service manager's notification socket, owned by the test; each datagram comes
    with its sender's pid (SO_PASSCRED)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.received: list[tuple[int, dict[str, str]]] = []

    def wait_for(self, key: str) -> dict[str, str]:
        """Read datagrams until one has `key`; return it."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                raise AssertionError(f"no {key} in time; got {self.received}") from None
            pid = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(value[:4], sys.byteorder)
            fields = parse_message(data)
            self.received.append((pid, fields))
            if key in fields:
                return fields

    def first_keys(self) -> list[str]:
        """The first key of every datagram received."""
        return [next(iter(fields)) for _, fields in self.received]


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Manager]:
    found = Manager(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    with found.sock:
        yield found


def test_the_supervisor_alone_notifies_ready_once_reloading_and_stopping(
    serve: Callable[..., Supervised], manager: Manager, tmp_path: Path
) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("", encoding="utf-8")
    server = serve("--config", str(config), "--workers", "2", "--listen", "127.0.0.1:0")
    ready = manager.wait_for("READY")
    assert ready["STATUS"] == "0 sessions open, 2 workers"
    server.wait_listening(2)
    workers = server.workers(2)
    assert all(line in server.messages() for line in [f"supervisor {server.pid} started 2 workers"])

    os.kill(server.pid, signal.SIGHUP)
    reloading = manager.wait_for("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    manager.wait_for("READY")
    server.wait_for_message("configuration reloaded", count=2)
    assert server.workers(2) == workers

    assert server.finish(signal.SIGTERM) == 0
    stopping = manager.wait_for("STOPPING")
    assert stopping["STATUS"].endswith(" sessions open, 2 workers")
    assert {pid for pid, _ in manager.received} == {server.pid}
    keys = [key for key in manager.first_keys() if key != "STATUS"]
    assert keys == ["READY", "RELOADING", "READY", "STOPPING"]
    # the workers' MAINPID= stays between them and the supervisor
    assert not [fields for _, fields in manager.received if "MAINPID" in fields]


def test_status_counts_the_open_sessions_of_every_worker(
    serve: Callable[..., Supervised], manager: Manager, destination: socket.socket
) -> None:
    server = serve("--workers", "2", "--listen", "127.0.0.1:0")
    manager.wait_for("READY")
    port = server.wait_listening(2)
    with contextlib.ExitStack() as stack:
        for number in range(4):
            open_echoed_tunnel(stack, port, destination, b"counted %d" % number)
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while manager.wait_for("STATUS")["STATUS"] != "4 sessions open, 2 workers":
            assert time.monotonic() < deadline, manager.received
    assert re.fullmatch(r"\d+ sessions open, 2 workers", manager.received[-1][1]["STATUS"])
    assert server.finish() == 0
    assert children(server.pid) == set() or server.process.returncode == 0
