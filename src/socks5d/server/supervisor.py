"""The `--workers` supervisor: it forks the workers, each a whole server with its own event
loop and its own listening sockets, bound with SO_REUSEPORT to the same addresses so that the
kernel spreads new connections over them; it serves no client itself. It waits on signals and
on file descriptors at once (the signals reach it through `signal.set_wakeup_fd`):
- SIGTERM: drain. Forwarded to every worker (each stops accepting and lets its sessions run
  up to `timeouts.drain`); the workers still there after the grace period are killed.
  SIGINT, or a second SIGTERM, is forwarded as SIGINT: stop at once.
- SIGHUP: reload. The supervisor reads the configuration first (`reload`), so that a worker
  started later serves the current one, and forwards the signal only when it took it.
- SIGUSR1: reopen the log file (`reopen_log`), then forwarded.
- SIGCHLD: a worker that died is replaced, unless it died while starting (then every new one
  would fail the same way: all stop) or a drain runs.
Each worker speaks the service manager's notification protocol to the supervisor over a
datagram socket pair; `NotifyRelay` turns that into what the supervisor tells the real
`NOTIFY_SOCKET`. With `admin.listen` set, one more child runs the admin endpoint
(`run_admin`), restarted if it dies, told of a drain by SIGTERM, stopped after the workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from socks5d.errors import ConfigError
from socks5d.server.logwriter import flush_logging
from socks5d.server.notify import Notifier, parse_message
from socks5d.server.notifyrelay import NotifyRelay
from socks5d.server.runtime import HANDLED_SIGNALS, STARTUP_SECONDS

log = logging.getLogger(__name__)

#: How long the supervisor waits for its workers after forwarding SIGTERM, then kills them:
#: the drain's `timeouts.drain` plus this margin.
DRAIN_MARGIN = 5.0
#: How long the supervisor waits for its workers after forwarding SIGINT (stop at once).
STOP_GRACE = 5.0

_SIGNALS = {
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGCHLD,
}


@dataclass
class WorkerEnds:
    """What a worker gets from its supervisor."""

    #: 1 to the worker count; a replacement gets the number of the worker it replaces
    number: int
    #: the worker's end of the notification socket pair (`Notifier(notify, pid=...)`)
    notify: socket.socket
    #: the listening control socket of this number (server/control.py), when the admin
    #: endpoint is on
    control: socket.socket | None


@dataclass
class _Child:
    #: the worker number; 0 for the admin process
    number: int
    started: float = field(default_factory=time.monotonic)
    #: the supervisor's end of the worker's notification pair
    channel: socket.socket | None = None


def _note_signal(signum: int, frame: object) -> None:
    """The signals come through the wakeup descriptor; the handler has nothing to do."""


class Supervisor:
    """Runs `count` workers (`run_worker(ends)` in a forked child, returning its exit status)
    until they stopped after SIGTERM or SIGINT; see the module docstring.

    Args:
        count: how many workers.
        run_worker: a worker's body.
        inherited: the supervisor's own sockets (the port reservations), closed in every
            child.
        drain: `timeouts.drain`; the grace period after SIGTERM adds `DRAIN_MARGIN`.
        notifier: the service manager's, if any.
        control: the control socket of each worker number, when the admin endpoint is on.
        run_admin: the admin process's body, when the admin endpoint is on.
        admin_socket: the admin endpoint's bound socket (kept by the admin process only).
        reload: called on SIGHUP before the workers get it; raising ConfigError, ValueError
            or OSError refuses the reload (logged), and the workers are not told.
        reopen_log: called on SIGUSR1; False when there is no log file (the signal is then
            ignored, with a log line); OSError when the file cannot be opened again.
    """

    def __init__(
        self,
        count: int,
        run_worker: Callable[[WorkerEnds], int],
        inherited: Callable[[], Iterable[socket.socket]] = list,
        *,
        drain: float = 30.0,
        notifier: Notifier | None = None,
        control: dict[int, socket.socket] | None = None,
        run_admin: Callable[[], int] | None = None,
        admin_socket: socket.socket | None = None,
        reload: Callable[[], None] | None = None,
        reopen_log: Callable[[], bool] | None = None,
    ) -> None:
        self.count = count
        self.run_worker = run_worker
        self.inherited = inherited
        self.drain = drain
        self.relay = NotifyRelay(notifier, count)
        self.control = control or {}
        self.run_admin = run_admin
        self.admin_socket = admin_socket
        self.reload = reload
        self.reopen_log = reopen_log
        #: pid -> the worker
        self.workers: dict[int, _Child] = {}
        self.admin: tuple[int, _Child] | None = None
        self._admin_told = False
        #: a drain or a stop began: no worker is started any more
        self.stopping = False
        #: SIGINT was forwarded: stop at once
        self.at_once = False
        self.failed = False
        #: when the workers still there get SIGKILL
        self.deadline: float | None = None
        self._selector = selectors.DefaultSelector()
        self._wakeup = socket.socketpair()
        self._handlers: dict[int, signal.Handlers | Callable[..., object] | int | None] = {}
        self._saved_mask: set[int | signal.Signals] = set()

    def run(self) -> int:
        """Start the workers and supervise them; the exit status for the command line."""
        self._saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        reader, writer = self._wakeup
        for sock in self._wakeup:
            sock.setblocking(False)
        self._handlers = {signum: signal.signal(signum, _note_signal) for signum in _SIGNALS}
        previous_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._selector.register(reader, selectors.EVENT_READ, None)
        try:
            for number in range(1, self.count + 1):
                self._spawn(number)
            log.info("supervisor %d started %d workers", os.getpid(), self.count)
            if self.run_admin is not None:
                self._spawn_admin()
            while self.workers or self.admin is not None:
                if not self.workers and self.stopping:
                    self._stop_admin()
                self._wait()
        finally:
            for pid in [*self.workers, *([self.admin[0]] if self.admin else [])]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in self._handlers.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
            self._selector.close()
            for child in self.workers.values():
                if child.channel is not None:
                    child.channel.close()
            for sock in self._wakeup:
                sock.close()
        status = 1 if self.failed else 0
        log.info("supervisor %d exits (status %d)", os.getpid(), status)
        return status

    def _wait(self) -> None:
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        events = self._selector.select(timeout)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            log.warning("grace period over: killing %d workers", len(self.workers))
            self._signal_workers(signal.SIGKILL)
            if self.admin is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.admin[0], signal.SIGKILL)
            self.deadline = None
        for key, _ in events:
            if key.data is None:
                self._signals(key.fileobj)  # type: ignore[arg-type]
            else:
                self._notifications(key.data)

    # --- signals ---------------------------------------------------------------------------

    def _signals(self, reader: socket.socket) -> None:
        try:
            received = reader.recv(4096)
        except BlockingIOError:
            return
        for signum in received:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGUSR1:
                self._reopen()
            elif signum == signal.SIGTERM and not self.stopping:
                self._drain()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self._stop_at_once()

    def _drain(self) -> None:
        self.stopping = True
        log.info("draining %d workers for up to %g s", len(self.workers), self.drain)
        self.relay.stopping()
        self._signal_workers(signal.SIGTERM)
        if self.admin is not None:  # /healthz answers 503 from now on
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.admin[0], signal.SIGTERM)
        self.deadline = time.monotonic() + self.drain + DRAIN_MARGIN

    def _stop_at_once(self) -> None:
        if self.at_once:
            return
        self.stopping = self.at_once = True
        log.info("stopping %d workers", len(self.workers))
        self.relay.stopping()
        self._signal_workers(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)

    def _reload(self) -> None:
        if self.stopping:
            log.info("SIGHUP ignored: stopping")
            return
        self.relay.reloading()
        if self.reload is not None:
            try:
                self.reload()
            except (ConfigError, ValueError, OSError) as exc:
                log.error("reload refused, every worker keeps its configuration: %s", exc)
                self.relay.reload_refused()
                return
        self._signal_workers(signal.SIGHUP)

    def _reopen(self) -> None:
        try:
            reopened = self.reopen_log is not None and self.reopen_log()
        except OSError as exc:  # each worker tries for itself all the same
            log.error("SIGUSR1: %s; still writing to the log file opened before", exc)
            reopened = True
        if not reopened:
            log.info("SIGUSR1 ignored: no log file to reopen (logging to stderr)")
            return
        log.info("log file reopened")
        self._signal_workers(signal.SIGUSR1)

    def _signal_workers(self, signum: signal.Signals) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # --- children --------------------------------------------------------------------------

    def _fork(self, body: Callable[[], int], keep: set[socket.socket | None]) -> int:
        """Fork a child that runs `body` with the supervisor's signal handling undone and
        every inherited socket but `keep` closed; the child's pid."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # the child: never returns into the supervisor's code
                self._child(body, keep)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return pid

    def _child(self, body: Callable[[], int], keep: set[socket.socket | None]) -> None:
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum, handler in self._handlers.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
            self._selector.close()
            others: list[socket.socket | None] = [*self._wakeup, *self.inherited()]
            others += [child.channel for child in self.workers.values()]
            others += [*self.control.values(), self.admin_socket]
            for sock in others:
                if sock is not None and sock not in keep:
                    sock.close()
            # HANDLED_SIGNALS stay blocked (pending, not lost) until the child's event loop
            # has its handlers (`unblock_signals`).
            signal.pthread_sigmask(signal.SIG_SETMASK, self._saved_mask | HANDLED_SIGNALS)
            status = body()
        except KeyboardInterrupt:  # a SIGINT after the event loop let go of it: stopping
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            flush_logging()  # what the log handlers kept: os._exit skips logging's shutdown
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def _spawn(self, number: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        control = self.control.get(number)
        try:
            ends = WorkerEnds(number, theirs, control)
            pid = self._fork(lambda: self.run_worker(ends), {theirs, control})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        child = _Child(number, channel=ours)
        self.workers[pid] = child
        self._selector.register(ours, selectors.EVENT_READ, child)

    def _spawn_admin(self) -> None:
        assert self.run_admin is not None
        pid = self._fork(self.run_admin, {self.admin_socket})
        self.admin = (pid, _Child(0))
        log.info("admin endpoint: process %d", pid)

    def _stop_admin(self) -> None:
        """After the workers: stop the admin process (once)."""
        if self.admin is not None and not self._admin_told:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.admin[0], signal.SIGINT)
            self._admin_told = True
            deadline = time.monotonic() + STOP_GRACE
            self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)

    def _notifications(self, child: _Child) -> None:
        """Read what a worker said (a bounded number of datagrams per wakeup)."""
        assert child.channel is not None
        for _ in range(64):
            try:
                data = child.channel.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("worker %d notification: %s", child.number, exc)
                return
            self.relay.worker_message(child.number, parse_message(data))

    def _reap(self) -> None:
        while self.workers or self.admin is not None:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if self.admin is not None and pid == self.admin[0]:
                self._admin_exited(pid, code)
            elif pid in self.workers:
                self._worker_exited(pid, code)

    def _admin_exited(self, pid: int, code: int) -> None:
        assert self.admin is not None
        started = self.admin[1].started
        self.admin = None
        if self.stopping:
            log.info("admin endpoint (pid %d) stopped", pid)
        elif time.monotonic() - started < STARTUP_SECONDS:
            log.error("admin endpoint (pid %d) failed to start (exit %d)", pid, code)
        else:
            log.warning("admin endpoint (pid %d) exited (%d); starting another", pid, code)
            self._spawn_admin()

    def _worker_exited(self, pid: int, code: int) -> None:
        child = self.workers.pop(pid)
        number = child.number
        if child.channel is not None:
            self._notifications(child)
            self._selector.unregister(child.channel)
            child.channel.close()
        self.relay.worker_gone(number)
        if self.stopping:
            log.info("worker %d (pid %d) stopped", number, pid)
        elif time.monotonic() - child.started < STARTUP_SECONDS:
            log.error("worker %d (pid %d) failed to start (exit %d)", number, pid, code)
            self.failed = True
            self._stop_at_once()
        else:
            log.warning("worker %d (pid %d) exited (%d); starting another", number, pid, code)
            self._spawn(number)
