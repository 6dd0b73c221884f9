"""A real `socks5d serve` process for the lifecycle tests (drain, listener reload, log file,
privileges, notify): started as `python -m socks5d serve --log-format json ...`, its JSON log
lines read from stderr, or from its log file, each against a deadline and never after a sleep.
A log file is followed with inotify on its directory, so a rename and the file made anew are
both seen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sockets import recv_exactly
from stderr_lines import StderrLines

#: seconds a server process gets to start, to log a line, or to exit after a signal
PROCESS_TIMEOUT = 10.0
#: seconds any single blocking socket call of a test may take
IO_TIMEOUT = 5.0

T = TypeVar("T")
Entry = dict[str, Any]

_IN_MODIFY, _IN_CREATE, _IN_MOVED_TO = 0x2, 0x100, 0x80
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class DirectoryWatch:
    """Wakes up when a file in `directory` is written, made or renamed (inotify)."""

    def __init__(self, directory: Path) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO
        if _libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")

    def until(self, check: Callable[[], T | None], deadline: float, what: str) -> T:
        """`check()`'s first result that is not None; fails the test at `deadline`."""
        while (result := check()) is None:
            ready, _, _ = select.select([self.fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise AssertionError(f"not in time: {what}")
            os.read(self.fd, 65536)
        return result

    def close(self) -> None:
        os.close(self.fd)


def file_entries(path: Path) -> list[Entry]:
    """The complete JSON lines of `path` (none when it does not exist)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


class ServeProcess:
    """`socks5d serve` with `args`; waits for its "ready" line unless `ready` is False.

    Args:
        log_file: the `--log-file` the process writes (given in `args` too): lines are read
            from there instead of stderr.
        env: added to (or, with a None value, removed from) the environment.
    """

    def __init__(
        self,
        *args: str,
        log_file: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: Path | None = None,
        ready: bool = True,
    ) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        command = [sys.executable, "-m", "socks5d", "serve", "--log-format", "json", *args]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid = self.process.pid
        self.log_file = log_file
        self._stderr = StderrLines(self.process, PROCESS_TIMEOUT)
        self._watch = DirectoryWatch(log_file.parent) if log_file is not None else None
        #: every entry read so far, in order
        self.entries: list[Entry] = []
        self._file_seen = 0
        if ready:
            self.wait_for(lambda e: " ready: " in e["message"])

    def _next_entry(self, deadline: float) -> Entry:
        if self._watch is None:
            line = self._stderr.read(deadline, lambda: self.entries)
            self.entries.append(json.loads(line))
            return self.entries[-1]
        assert self.log_file is not None
        path = self.log_file

        def fresh() -> Entry | None:
            entries = file_entries(path)
            if len(entries) <= self._file_seen:
                if self.process.poll() is not None:
                    raise AssertionError(f"exited {self.process.returncode}: {self.entries}")
                return None
            self._file_seen += 1
            return entries[self._file_seen - 1]

        self.entries.append(self._watch.until(fresh, deadline, f"a line in {path}"))
        return self.entries[-1]

    def follow(self, path: Path) -> None:
        """Read the lines of `path` from its start from now on (a log file made anew)."""
        self.log_file = path
        self._file_seen = 0

    def wait_for(self, wanted: Callable[[Entry], bool], timeout: float = PROCESS_TIMEOUT) -> Entry:
        """Read log entries until one is `wanted`; return it."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self._next_entry(deadline)
            if wanted(entry):
                return entry

    def wait_message(self, start: str, timeout: float = PROCESS_TIMEOUT) -> Entry:
        return self.wait_for(lambda e: e["message"].startswith(start), timeout)

    def access_record(self, timeout: float = PROCESS_TIMEOUT) -> Entry:
        """The next access-log record."""
        return self.wait_for(lambda e: e["logger"] == "socks5d.access", timeout)

    def listeners(self) -> list[tuple[str, int]]:
        """The addresses of the "listening on" lines read so far, in order."""
        found = []
        for entry in self.entries:
            if entry["message"].startswith("listening on"):
                host, _, port = entry["listener"].rpartition(":")
                found.append((host, int(port)))
        return found

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = PROCESS_TIMEOUT) -> int:
        """The exit status; what stderr had left is read into `rest`."""
        _, rest = self.process.communicate(timeout=timeout)
        self.rest = rest.decode()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=PROCESS_TIMEOUT)  # reaps and closes the pipe
        if self._watch is not None:
            self._watch.close()
            self._watch = None


class Processes:
    """The fixture's list of started processes, killed at the end of the test."""

    def __init__(self) -> None:
        self.started: list[ServeProcess] = []

    def __call__(self, *args: str, **options: Any) -> ServeProcess:
        process = ServeProcess(*args, **options)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            process.kill()


def serve_fixture() -> Iterator[Processes]:
    processes = Processes()
    yield processes
    processes.close()


def echo_pair(listener: socket.socket, client: socket.socket) -> socket.socket:
    """The destination's end of a tunnel just opened through the proxy to `listener`."""
    far, _ = listener.accept()
    far.settimeout(IO_TIMEOUT)
    client.settimeout(IO_TIMEOUT)
    return far


def exchange(client: socket.socket, far: socket.socket, tag: bytes) -> None:
    """Bytes both ways through a tunnel: client -> destination, destination -> client."""
    client.sendall(b"up " + tag)
    assert recv_exactly(far, 3 + len(tag)) == b"up " + tag
    far.sendall(b"down " + tag)
    assert recv_exactly(client, 5 + len(tag)) == b"down " + tag


def get(port: int, path: str) -> tuple[int, bytes]:
    """GET http://127.0.0.1:`port``path`: the status and the body."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one `/metrics` scrape, read with prometheus-client's own parser:
    (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = get(port, "/metrics")
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
