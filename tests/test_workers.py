"""`socks5d serve --workers N`: a supervisor forks N workers that listen on the same addresses
(SO_REUSEPORT), forwards SIGHUP and SIGTERM to them, and replaces a worker that dies, unless it
died while starting. Also `--workers auto` and the single-process `--loop` / `--relay` choices.

Everything runs as real processes: `python -m socks5d serve ... --log-format json`, its JSON log
lines read from stderr against a deadline. Workers are found as the supervisor's children in
/proc, and what a worker serves as the sockets it holds (/proc/PID/fd). Waits poll a condition
with a deadline; the one wait on the clock (a worker older than `STARTUP_SECONDS`) polls the
worker's start time as the kernel recorded it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sockets import recv_exactly
from socks5d.client import sync
from socks5d.errors import NotAllowed
from socks5d.server.runtime import STARTUP_SECONDS
from stderr_lines import StderrLines

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs /proc and SO_REUSEPORT (Linux)"
)

#: seconds a process gets to start, to log something, or to exit after a signal
PROCESS_TIMEOUT = 10.0
#: seconds any single blocking socket call of a test may take
IO_TIMEOUT = 5.0
#: seconds a condition polled from /proc may take to become true
SETTLE_TIMEOUT = 10.0
#: tunnels held open at once to see that every worker serves
TUNNELS = 40
#: on top of STARTUP_SECONDS: the supervisor notes a worker's start just after the fork
STARTUP_MARGIN = 0.5

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- /proc ---------------------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/PID/stat (state, ppid, ...); None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (field 22)."""
    stat = proc_stat(pid)
    return None if stat is None else int(stat[19])


def is_running(pid: int, ticks: int) -> bool:
    """True while the process `pid` that started at `ticks` exists and is no zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z" and int(stat[19]) == ticks


def children(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is `pid`."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and int(stat[1]) == pid and stat[0] != "Z":
                found.add(int(entry))
    return found


def age(pid: int) -> float:
    """Seconds since the process started."""
    ticks = start_ticks(pid)
    assert ticks is not None, f"process {pid} is gone"
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / CLOCK_TICKS


def sockets(pid: int) -> int:
    """Socket descriptors the process holds."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                count += 1
    return count


def pipes(pid: int) -> int:
    """Pipe descriptors the process holds."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("pipe:"):
                count += 1
    return count


def signal_disposition(pid: int, signum: int) -> set[str]:
    """Which of pending / blocked / ignored / caught `signum` is for the process."""
    bit = 1 << (signum - 1)
    fields = {"SigPnd": "pending", "ShdPnd": "pending", "SigBlk": "blocked"}
    fields |= {"SigIgn": "ignored", "SigCgt": "caught"}
    found = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in fields and int(value, 16) & bit:
                found.add(fields[name])
    return found


def wait_until(condition: Callable[[], bool], what: Callable[[], str]) -> None:
    """Poll `condition` until it holds; fail with `what()` after SETTLE_TIMEOUT."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {what()}")
        time.sleep(0.02)


# --- the server process --------------------------------------------------------------------------


class Supervised:
    """`python -m socks5d serve ARGS --log-format json` (or `launcher`), its stderr read as JSON
    log entries; every worker PID ever seen is remembered, so that nothing outlives the test.
    """

    def __init__(
        self, args: list[str], cwd: Path, launcher: list[str], pass_fds: tuple[int, ...]
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *launcher, "serve", *args, "--log-format", "json"],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
        )
        self._stderr = StderrLines(self.process, PROCESS_TIMEOUT)
        self.entries: list[dict[str, Any]] = []
        #: pid -> start ticks of every worker seen
        self.seen: dict[int, int] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_entry(self, deadline: float) -> dict[str, Any]:
        return self._add(self._stderr.read(deadline, self.messages))

    def _add(self, line: bytes) -> dict[str, Any]:
        try:
            entry = json.loads(line)
        except ValueError:  # a traceback, not a log line
            entry = {"level": "raw", "logger": "-", "message": line.decode(errors="replace")}
        self.entries.append(entry)
        return entry

    def wait_for(
        self, wanted: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> list[dict[str, Any]]:
        """Read entries until the log holds `count` that are `wanted`; return those."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        found = [entry for entry in self.entries if wanted(entry)]
        while len(found) < count:
            entry = self._read_entry(deadline)
            if wanted(entry):
                found.append(entry)
        return found

    def wait_for_message(self, message: str, count: int = 1) -> list[dict[str, Any]]:
        return self.wait_for(lambda entry: entry["message"] == message, count)

    def wait_listening(self, count: int) -> int:
        """Wait until the log holds `count` "listening on" lines; return the (one) port they
        all name."""
        entries = self.wait_for(lambda e: e["message"].startswith("listening on "), count)
        ports = {int(entry["listener"].rpartition(":")[2]) for entry in entries}
        assert len(ports) == 1, f"workers listen on different ports: {entries}"
        (port,) = ports
        assert port != 0
        assert all(entry["message"] == f"listening on 127.0.0.1:{port}" for entry in entries)
        return port

    def messages(self) -> list[str]:
        return [entry["message"] for entry in self.entries]

    def workers(self, count: int) -> set[int]:
        """Wait until the supervisor has exactly `count` live children; return their PIDs."""
        wait_until(
            lambda: len(children(self.pid)) == count,
            lambda: f"{count} workers; children {children(self.pid)}, log {self.messages()}",
        )
        found = children(self.pid)
        for pid in found:
            ticks = start_ticks(pid)
            if ticks is not None:
                self.seen.setdefault(pid, ticks)
        return found

    def finish(self, signum: int | None = signal.SIGTERM) -> int:
        """Send `signum` (if any), read the rest of the log to EOF; the exit status. EOF comes
        only once every process holding the log pipe, every worker too, has exited."""
        if signum is not None:
            self.process.send_signal(signum)
        _, rest = self.process.communicate(timeout=PROCESS_TIMEOUT)
        for line in (self._stderr.pending + rest).splitlines():
            self._add(line)
        self._stderr.pending = b""
        return self.process.returncode

    def left_behind(self) -> list[int]:
        """Workers seen during the test that still run."""
        return [pid for pid, ticks in self.seen.items() if is_running(pid, ticks)]

    def cleanup(self) -> None:
        """Stop the supervisor and every worker it ever had, by PID."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                for pid in children(self.pid):
                    ticks = start_ticks(pid)
                    if ticks is not None:
                        self.seen.setdefault(pid, ticks)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(PROCESS_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for pid in self.left_behind():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.communicate(timeout=PROCESS_TIMEOUT)  # reaps and closes the pipe


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    """`serve(*args, launcher=[...], pass_fds=(...))` starts a server process."""
    started: list[Supervised] = []

    def start(
        *args: str, launcher: list[str] | None = None, pass_fds: tuple[int, ...] = ()
    ) -> Supervised:
        process = Supervised(list(args), tmp_path, launcher or ["-m", "socks5d"], pass_fds)
        started.append(process)
        return process

    yield start
    for process in started:
        process.cleanup()
    for process in started:
        assert not process.left_behind(), f"workers left running: {process.left_behind()}"


@pytest.fixture
def destination() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1: the far end of the tunnels (the test echoes by hand)."""
    with socket.create_server(("127.0.0.1", 0), backlog=TUNNELS) as sock:
        sock.settimeout(IO_TIMEOUT)
        yield sock


# --- tunnels -------------------------------------------------------------------------------------


def read_until_closed(sock: socket.socket) -> bytes:
    """What arrives until the peer closes, by FIN or by RST."""
    data = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return bytes(data)


def open_echoed_tunnel(
    stack: contextlib.ExitStack, port: int, destination: socket.socket, data: bytes
) -> tuple[socket.socket, socket.socket]:
    """A CONNECT tunnel through 127.0.0.1:`port` to `destination`; `data` goes through it and
    the test, as the destination, echoes it back. Both ends stay open in `stack`."""
    tunnel = stack.enter_context(
        sync.connect(
            *destination.getsockname()[:2], proxy=f"socks5://127.0.0.1:{port}", timeout=IO_TIMEOUT
        )
    )
    tunnel.settimeout(IO_TIMEOUT)
    far_end, _ = destination.accept()
    stack.enter_context(far_end)
    far_end.settimeout(IO_TIMEOUT)
    tunnel.sendall(data)
    far_end.sendall(recv_exactly(far_end, len(data)))
    assert recv_exactly(tunnel, len(data)) == data
    return tunnel, far_end


def assert_every_worker_serves(
    workers: set[int], port: int, destination: socket.socket, count: int = TUNNELS
) -> None:
    """Hold `count` tunnels open at once; each worker must hold some of their sockets. The
    kernel hashes each new connection to one worker: all of them on one of two workers has a
    chance of 2**-(count-1)."""
    before = {pid: sockets(pid) for pid in workers}
    with contextlib.ExitStack() as stack:
        for number in range(count):
            open_echoed_tunnel(stack, port, destination, b"tunnel %d" % number)

        def gained() -> dict[int, int]:
            return {pid: sockets(pid) - before[pid] for pid in workers}

        # each tunnel is two sockets in the worker that accepted it: client and destination
        wait_until(
            lambda: sum(gained().values()) == 2 * count,
            lambda: f"{2 * count} new sockets over the workers, got {gained()}",
        )
        assert all(added > 0 for added in gained().values()), gained()


# --- --workers N ---------------------------------------------------------------------------------


def test_two_workers_share_one_port_and_both_serve(
    serve: Callable[..., Supervised], destination: socket.socket
) -> None:
    server = serve("--workers", "2", "--listen", "127.0.0.1:0")
    port = server.wait_listening(2)
    server.wait_for_message(f"supervisor {server.pid} started 2 workers")
    workers = server.workers(2)
    assert server.pid not in workers
    # the supervisor serves nobody: its sockets are the port reservation, its signal wakeup
    # pair and its end of each worker's notification pair, before and after
    assert sockets(server.pid) == 1 + 2 + 2

    assert_every_worker_serves(workers, port, destination)
    assert sockets(server.pid) == 1 + 2 + 2

    assert server.finish() == 0
    stopped = {
        int(match[1])
        for message in server.messages()
        if (match := re.fullmatch(r"worker [12] \(pid (\d+)\) stopped", message))
    }
    assert stopped == workers
    records = [e for e in server.entries if e["logger"] == "socks5d.access"]
    assert len(records) == TUNNELS
    assert all(record["outcome"] == "closed" for record in records)


def test_sighup_reloads_every_worker_without_a_listen_warning(
    tmp_path: Path, serve: Callable[..., Supervised], destination: socket.socket
) -> None:
    config = tmp_path / "socks5d.toml"
    config.write_text("", encoding="utf-8")
    server = serve("--config", str(config), "--workers", "2", "--listen", "127.0.0.1:0")
    port = server.wait_listening(2)
    workers = server.workers(2)
    with contextlib.ExitStack() as stack:
        open_echoed_tunnel(stack, port, destination, b"before")

    config.write_text(
        textwrap.dedent(
            """
            [[socks]]
            action = "block"
            to = ["127.0.0.0/8"]
            """
        ),
        encoding="utf-8",
    )
    os.kill(server.pid, signal.SIGHUP)
    # what each worker says about the reload: a warning or error first, if any, then the outcome
    reloads = server.wait_for(
        lambda e: (
            e["logger"] == "socks5d.cli"
            and e["message"] != "shutting down"
            and " ready: " not in e["message"]
        ),
        count=2,
    )
    assert [e["message"] for e in reloads] == ["configuration reloaded"] * 2
    assert not any("listen addresses" in message for message in server.messages())
    assert server.workers(2) == workers  # reloaded in place, not restarted

    # every worker applies the new rule: 20 connections, spread by the kernel, all refused
    for _ in range(20):
        with pytest.raises(NotAllowed):
            sync.connect(
                *destination.getsockname()[:2],
                proxy=f"socks5://127.0.0.1:{port}",
                timeout=IO_TIMEOUT,
            )
    assert server.finish() == 0


def test_sigint_stops_every_worker_at_once_and_closes_open_tunnels(
    serve: Callable[..., Supervised], destination: socket.socket
) -> None:
    """SIGINT does not drain (SIGTERM does: tests/test_workers_ops.py)."""
    server = serve("--workers", "2", "--listen", "127.0.0.1:0")
    port = server.wait_listening(2)
    workers = server.workers(2)
    with contextlib.ExitStack() as stack:
        tunnel, far_end = open_echoed_tunnel(stack, port, destination, b"still open")
        assert server.finish(signal.SIGINT) == 0
        assert read_until_closed(tunnel) == b""
        assert read_until_closed(far_end) == b""
    assert server.left_behind() == []
    assert not any(is_running(pid, ticks) for pid, ticks in server.seen.items())
    assert set(server.seen) == workers
    messages = server.messages()
    assert "stopping 2 workers" in messages
    for pid in workers:
        assert any(re.fullmatch(rf"worker \d \(pid {pid}\) stopped", m) for m in messages)
    assert not [e for e in server.entries if e["level"] in {"error", "raw"}]


def test_a_worker_killed_after_its_startup_is_replaced_and_service_goes_on(
    serve: Callable[..., Supervised], destination: socket.socket
) -> None:
    server = serve("--workers", "2", "--listen", "127.0.0.1:0")
    port = server.wait_listening(2)
    workers = server.workers(2)
    victim = min(workers)
    # no sleep: poll the kernel's record of the worker's start
    wait_until(
        lambda: age(victim) > STARTUP_SECONDS + STARTUP_MARGIN,
        lambda: f"worker {victim} older than {STARTUP_SECONDS} s: {age(victim):.2f} s",
    )
    os.kill(victim, signal.SIGKILL)
    (entry,) = server.wait_for(
        lambda e: bool(re.fullmatch(rf"worker \d \(pid {victim}\) exited \(.*", e["message"]))
    )
    assert re.fullmatch(
        rf"worker [12] \(pid {victim}\) exited \(-9\); starting another", entry["message"]
    )
    assert entry["level"] == "warning"
    assert server.wait_listening(3) == port  # the new worker, on the same port
    replaced = server.workers(2)
    assert victim not in replaced
    assert workers - {victim} <= replaced
    assert server.process.poll() is None

    assert_every_worker_serves(replaced, port, destination)
    assert server.finish() == 0


def test_a_worker_dying_while_starting_stops_everything_with_status_1(
    serve: Callable[..., Supervised],
) -> None:
    server = serve("--workers", "2", "--listen", "127.0.0.1:0")
    server.wait_listening(2)
    workers = server.workers(2)
    victim = min(workers)
    assert age(victim) < STARTUP_SECONDS - STARTUP_MARGIN, "too slow to kill it while starting"
    os.kill(victim, signal.SIGKILL)
    assert server.finish(None) == 1
    messages = server.messages()
    assert any(
        re.fullmatch(rf"worker \d \(pid {victim}\) failed to start \(exit -9\)", m)
        for m in messages
    )
    assert "stopping 1 workers" in messages
    assert not any("starting another" in message for message in messages)
    assert server.left_behind() == []


def command_lines_naming(text: str) -> list[int]:
    """PIDs of the processes whose command line contains `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                arguments = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if text.encode() in arguments:
                    found.append(int(entry))
    return found


def test_a_listen_address_taken_by_a_plain_listener_stops_the_start_with_status_1(
    serve: Callable[..., Supervised],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        server = serve("--workers", "2", "--listen", address)
        assert server.finish(None) == 1
        errors = [e for e in server.entries if e["level"] == "error"]
        assert len(errors) == 1
        assert errors[0]["message"].startswith("cannot start: ")
        assert "Address already in use" in errors[0]["message"]
        messages = server.messages()
        assert not any(m.startswith(("supervisor", "listening on", "worker")) for m in messages)
        assert command_lines_naming(address) == []


def test_a_listen_address_taken_by_another_reuseport_listener_stops_the_start(
    serve: Callable[..., Supervised],
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        server = serve("--workers", "2", "--listen", address)
        # the workers would join the other program's group and take part of its connections
        first = server.wait_for(
            lambda e: e["level"] == "error" or e["message"].startswith("listening on")
        )[0]
        assert first["message"].startswith("cannot start: "), first
        assert "Address already in use" in first["message"]
        assert server.finish(None) == 1
        assert not any(m.startswith(("supervisor", "listening on")) for m in server.messages())
        assert command_lines_naming(address) == []


def test_in_process_serve_refuses_a_port_another_reuseport_listener_holds(
    serve: Callable[..., Supervised],
) -> None:
    """What `--workers N` must match: one process, no SO_REUSEPORT, refuses the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = serve("--listen", f"127.0.0.1:{taken.getsockname()[1]}")
        assert server.finish(None) == 1
        assert server.messages()[-1].startswith("cannot start: ")


#: Runs `socks5d` with each worker's server start held until the test writes one byte to the
#: pipe whose read end is argv[1]: a worker that takes its time to start, deterministically.
SLOW_START = """
import os, sys
from socks5d import cli

release = int(sys.argv[1])
run_server = cli.run_server

async def run_server_when_released(*args, **kwargs):
    os.read(release, 1)
    await run_server(*args, **kwargs)

cli.run_server = run_server_when_released
sys.exit(cli.main(sys.argv[2:]))
"""


def test_sighup_while_workers_start_is_held_until_they_can_reload(
    serve: Callable[..., Supervised],
) -> None:
    release, hold = os.pipe()
    with open(hold, "wb", buffering=0) as holder:
        try:
            server = serve(
                "--workers",
                "2",
                "--listen",
                "127.0.0.1:0",
                launcher=["-c", SLOW_START, str(release)],
                pass_fds=(release,),
            )
        finally:
            os.close(release)
        server.wait_for_message(f"supervisor {server.pid} started 2 workers")
        workers = server.workers(2)
        os.kill(server.pid, signal.SIGHUP)

        def settled(pid: int) -> bool:
            """The SIGHUP reached the worker, or can do it no harm when it does."""
            ticks = server.seen[pid]
            found = signal_disposition(pid, signal.SIGHUP)
            return (
                not is_running(pid, ticks)
                or bool(found & {"ignored", "caught"})
                or {"blocked", "pending"} <= found
            )

        wait_until(
            lambda: all(settled(pid) for pid in workers),
            lambda: f"SIGHUP forwarded to {workers}",
        )
        holder.write(b"xx")  # let both workers finish starting
        server.wait_listening(2)
        # the SIGHUP was held, not lost: a worker may have started with an old configuration
        server.wait_for_message("configuration reloaded", count=2)
        assert server.workers(2) == workers
        assert not any("failed to start" in message for message in server.messages())
        assert server.finish() == 0


# --- --workers auto ------------------------------------------------------------------------------


#: Runs `python -m socks5d ARGS` restricted to the CPUs listed in argv[1] (as "0,1").
ON_CPUS = """
import os, sys
os.sched_setaffinity(0, {int(cpu) for cpu in sys.argv[1].split(",")})
os.execv(sys.executable, [sys.executable, "-m", "socks5d", *sys.argv[2:]])
"""


@pytest.mark.parametrize("cpus", ["all", "one"])
def test_workers_auto_starts_one_worker_per_usable_cpu(
    serve: Callable[..., Supervised], destination: socket.socket, cpus: str
) -> None:
    usable = sorted(os.sched_getaffinity(0))
    allowed = usable if cpus == "all" else usable[:1]
    launcher = ["-c", ON_CPUS, ",".join(map(str, allowed))]
    server = serve("--workers", "auto", "--listen", "127.0.0.1:0", launcher=launcher)
    expected = len(allowed)
    port = server.wait_listening(expected)
    if expected == 1:  # one CPU: served in-process, no supervisor
        assert children(server.pid) == set()
        assert sockets(server.pid) > 0
        with contextlib.ExitStack() as stack:
            open_echoed_tunnel(stack, port, destination, b"in-process")
        assert server.finish() == 0
        assert not any(e["logger"] == "socks5d.server.supervisor" for e in server.entries)
        return
    server.wait_for_message(f"supervisor {server.pid} started {expected} workers")
    workers = server.workers(expected)
    assert_every_worker_serves(workers, port, destination, count=20 * expected)
    assert server.finish() == 0


# --- --loop and --relay --------------------------------------------------------------------------


def maps_name(pid: int, text: str) -> bool:
    """True when a file mapped into the process (a loaded extension) has `text` in its path."""
    return text in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(("loop", "relay"), [("asyncio", "portable"), ("uvloop", "splice")])
def test_loop_and_relay_choices_serve_a_tunnel_in_process(
    serve: Callable[..., Supervised], destination: socket.socket, loop: str, relay: str
) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    server = serve("--loop", loop, "--relay", relay, "--listen", "127.0.0.1:0")
    port = server.wait_listening(1)
    assert children(server.pid) == set()
    # uvloop is imported only to build its loop
    assert maps_name(server.pid, "uvloop") == (loop == "uvloop")
    pipes_before = pipes(server.pid)
    data = os.urandom(256 * 1024)
    with contextlib.ExitStack() as stack:
        tunnel, far_end = open_echoed_tunnel(stack, port, destination, data)
        tunnel.shutdown(socket.SHUT_WR)
        assert read_until_closed(far_end) == b""
        far_end.shutdown(socket.SHUT_WR)
        assert read_until_closed(tunnel) == b""
    (record,) = server.wait_for(lambda e: e["logger"] == "socks5d.access")
    assert (record["bytes_up"], record["bytes_down"]) == (len(data), len(data))
    assert record["outcome"] == "closed"
    # the splice engine keeps the pipes it moved the bytes through; the portable one has none
    added = pipes(server.pid) - pipes_before
    if relay == "splice":
        assert added >= 2 and added % 2 == 0
    else:
        assert added == 0
    assert server.finish() == 0
