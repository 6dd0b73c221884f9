"""Processes the benchmark starts, and what /proc says about them.

A proxy may be one process (socks5d, microsocks, pproxy) or a tree (Dante's mother and its
children, socks5d with --workers): every figure here covers the process and all its
descendants. Children are stopped by PID only: terminate, wait, kill.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

#: Seconds a stopped child gets between SIGTERM and SIGKILL, and after SIGKILL.
STOP_TIMEOUT = 10.0
#: Open files allowed to the benchmark and everything it starts: 10,000 tunnels need 20,000
#: sockets in the proxy alone.
NOFILE_LIMIT = 65536

_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile_limit(limit: int = NOFILE_LIMIT) -> int:
    """Raise RLIMIT_NOFILE (soft and, as root, hard) for this process and so for every child.

    Returns:
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 and hard < limit:
        hard = limit
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, limit), hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if the benchmark dies without stopping it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _pinned_to(cpus: set[int] | None) -> Callable[[], None]:
    def setup() -> None:
        _die_with_parent()
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    return setup


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]  # field 22, starttime


def descendants(root: int) -> list[int]:
    """`root` and every live process below it (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, ()))
    return tree


def cpu_seconds(root: int) -> float:
    """utime+stime of the tree, including reaped children (cutime+cstime), in seconds."""
    ticks = 0
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(value) for value in fields[11:15])  # fields 14-17
    return ticks / _CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(root: int) -> int:
    """Sum of VmRSS over the tree (pages shared between its processes count once each)."""
    return sum(_status_kib(pid, "VmRSS:") for pid in descendants(root))


def pss_kib(root: int) -> int:
    """Sum of Pss over the tree: shared pages split between the processes sharing them."""
    return sum(_pss_kib(pid) for pid in descendants(root))


def pin_tree(root: int, cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of every process in the tree; threads and
    processes created later inherit it from their creator.
    """
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cpus)


def all_cpus() -> set[int]:
    return set(range(os.cpu_count() or 1))


class Child:
    """A started program, stopped by its PID (and its leftover descendants by theirs).

    Its stderr (and stdout, unless `stdout` is given) goes to `log`, or nowhere.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.command = list(command)
        self.log = log
        log_file = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command,
                stdin=stdin,
                stdout=log_file if stdout is None else stdout,
                stderr=log_file,
                env=env,
                preexec_fn=_pinned_to(cpus),  # the benchmark runs no threads
            )
        finally:
            if not isinstance(log_file, int):
                log_file.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int | None:
        """Terminate, wait, kill; then kill any descendant left behind. Returns the exit
        status (None if it could not be reaped).
        """
        process = self.process
        leftovers: list[tuple[int, str | None]] = []
        if process.poll() is None:
            leftovers = [(pid, _start_time(pid)) for pid in descendants(process.pid)[1:]]
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(STOP_TIMEOUT)
        _kill_leftovers(leftovers)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return process.returncode

    def log_tail(self, lines: int = 5) -> str:
        if self.log is None:
            return ""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


def _kill_leftovers(processes: Iterable[tuple[int, str | None]]) -> None:
    """SIGKILL each (pid, start time) that is still the same process."""
    for pid, started in processes:
        if started is not None and _start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    """Stop `child` when the block ends, however it ends."""
    try:
        yield child
    finally:
        child.stop()
