"""How the server process runs: which event loop, and how many worker processes.

With `workers` above 1, `socks5d serve` becomes a supervisor. It forks the workers, each a
whole server with its own event loop and its own listening sockets, bound with SO_REUSEPORT
to the same addresses so that the kernel spreads new connections over them. The supervisor
serves no client itself. It forwards SIGHUP (reload) and SIGTERM/SIGINT (graceful shutdown)
to every worker, and starts a new worker when one dies, unless that worker died while
starting: then it stops them all, because every new one would fail the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import replace

from socks5d.config import ListenAddress, ServerConfig
from socks5d.errors import ConfigError
from socks5d.extras import install_hint

log = logging.getLogger(__name__)

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: A worker that exits within this many seconds of its start failed to start.
STARTUP_SECONDS = 2.0
#: How long the supervisor waits for its workers after forwarding SIGTERM, then kills them.
SHUTDOWN_GRACE = 30.0

_SUPERVISOR_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
#: The signals a server's event loop handles (`run_server`).
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def unblock_signals(handled: Iterable[signal.Signals]) -> None:
    """Let `handled` through once their handlers are installed (a new worker blocks them)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)


def loop_factory(name: str) -> LoopFactory:
    """The event loop constructor `event_loop` names: "asyncio", "uvloop", or "auto"
    (uvloop when installed).

    Raises:
        ConfigError: "uvloop" asked for and not installed.
    """
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise ConfigError(
                    f"performance.event_loop: uvloop is not installed ({install_hint('fast')})"
                ) from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def worker_count(setting: int) -> int:
    """The `workers` setting as a number: 0 ("auto") is the CPUs this process may use."""
    if setting:
        return setting
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _stream_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def reserve_ports(config: ServerConfig) -> tuple[ServerConfig, list[socket.socket]]:
    """Bind (without listening) one SO_REUSEPORT socket per listen address, so that port 0
    becomes a real port every worker can share and no other program takes a port while a
    worker restarts. Returns the config with real ports and the sockets to keep open.

    Raises:
        OSError: an address cannot be bound (in use, not local).
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("performance.workers: needs SO_REUSEPORT, missing on this system")
    reserved: list[socket.socket] = []
    addresses: list[ListenAddress] = []
    try:
        for address in config.listen:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            # First without SO_REUSEPORT: fails when anyone listens there, even a program
            # with SO_REUSEPORT of its own, whose connections the workers would share.
            with _stream_socket(family) as probe:
                probe.bind(sockaddr)
                port = probe.getsockname()[1]
            sock = _stream_socket(family)
            reserved.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
            addresses.append(ListenAddress(address.host, port))
    except BaseException:
        for sock in reserved:
            sock.close()
        raise
    return replace(config, listen=tuple(addresses)), reserved


class Supervisor:
    """Runs `count` workers (`run_worker(number)` in a forked child, returning its exit
    status) until SIGTERM or SIGINT; see the module docstring.
    """

    def __init__(
        self, count: int, run_worker: Callable[[int], int], keep: list[socket.socket]
    ) -> None:
        self.count = count
        self.run_worker = run_worker
        self.keep = keep
        #: pid -> (worker number, start time)
        self.workers: dict[int, tuple[int, float]] = {}
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        """Start the workers and supervise them; the exit status for the command line."""
        saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        try:
            for number in range(1, self.count + 1):
                self._spawn(number, saved_mask)
            log.info("supervisor %d started %d workers", os.getpid(), self.count)
            deadline: float | None = None
            while self.workers:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                info = (
                    signal.sigwaitinfo(_SUPERVISOR_SIGNALS)
                    if timeout is None
                    else signal.sigtimedwait(_SUPERVISOR_SIGNALS, timeout)
                )
                if info is None:  # the grace period is over
                    self._signal_all(signal.SIGKILL)
                    deadline = None
                elif info.si_signo == signal.SIGCHLD:
                    self._reap(saved_mask)
                elif info.si_signo == signal.SIGHUP:
                    self._signal_all(signal.SIGHUP)
                elif not self.stopping:
                    self._stop()
                if self.stopping and deadline is None and self.workers:
                    deadline = time.monotonic() + SHUTDOWN_GRACE
        finally:
            self._signal_all(signal.SIGKILL)
            signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        return 1 if self.failed else 0

    def _spawn(self, number: int, saved_mask: set[int | signal.Signals]) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            status = 1
            try:
                # SIGHUP, SIGTERM and SIGINT stay blocked (pending, not lost) until the
                # worker's event loop has its handlers (`unblock_signals`).
                signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask | HANDLED_SIGNALS)
                for sock in self.keep:
                    sock.close()
                status = self.run_worker(number)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        self.workers[pid] = (number, time.monotonic())

    def _reap(self, saved_mask: set[int | signal.Signals]) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.workers:
                continue
            number, started = self.workers.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker %d (pid %d) stopped", number, pid)
            elif time.monotonic() - started < STARTUP_SECONDS:
                log.error("worker %d (pid %d) failed to start (exit %d)", number, pid, code)
                self.failed = True
                self._stop()
            else:
                log.warning("worker %d (pid %d) exited (%d); starting another", number, pid, code)
                self._spawn(number, saved_mask)

    def _stop(self) -> None:
        self.stopping = True
        log.info("stopping %d workers", len(self.workers))
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: signal.Signals) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
