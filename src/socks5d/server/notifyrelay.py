"""What the `--workers` supervisor tells the service manager, from what its workers tell it.

Each worker notifies its supervisor over a datagram socket pair (`Notifier(sock, pid=...)`,
`READY=1`, `RELOADING=1`, `STOPPING=1`, `SESSIONS=<n>`); the service manager must hear one
process, the supervisor (`MAINPID`), say it once: `READY=1` when every worker is ready after
the start, `RELOADING=1` then `READY=1` around a reload (once every worker reloaded),
`STOPPING=1` at the drain, and `STATUS=<sum> sessions open, N workers`. `NotifyRelay` is that
bookkeeping; it does no I/O but through its `Notifier`.
"""

from __future__ import annotations

import enum
import logging

from socks5d.server.notify import Notifier

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RELOADING = "reloading"
    STOPPING = "stopping"


class NotifyRelay:
    """The notifications of a supervisor of worker processes numbered 1 to `count`.

    Args:
        notifier: the service manager's (`Notifier.from_environment()`), or None when not
            run by one: the bookkeeping is kept all the same (`phase`, `sessions`).
        count: how many workers run.
    """

    def __init__(self, notifier: Notifier | None, count: int) -> None:
        self.notifier = notifier
        self.count = count
        self.phase = Phase.STARTING
        #: the worker numbers whose READY=1 the current phase still waits for
        self.waiting: set[int] = set(range(1, count + 1))
        #: open sessions by worker number, from their SESSIONS= fields
        self.sessions: dict[int, int] = {}
        self._status: str | None = None

    def status_text(self) -> str:
        return f"{sum(self.sessions.values())} sessions open, {self.count} workers"

    def worker_message(self, number: int, fields: dict[str, str]) -> None:
        """A datagram from worker `number`, parsed (`notify.parse_message`)."""
        if "SESSIONS" in fields:
            try:
                self.sessions[number] = max(0, int(fields["SESSIONS"]))
            except ValueError:
                log.debug("worker %d: bad SESSIONS=%r", number, fields["SESSIONS"])
        if fields.get("READY") == "1" and number in self.waiting:
            self.waiting.discard(number)
            if not self.waiting and self.phase in {Phase.STARTING, Phase.RELOADING}:
                self.phase = Phase.READY
                self._send_ready()
                return
        self._send_status()

    def worker_gone(self, number: int) -> None:
        """Worker `number` exited; its sessions are gone with it. A replacement, if any,
        reports READY=1 under the same number."""
        self.sessions.pop(number, None)
        self._send_status()

    def reloading(self) -> None:
        """A reload begins: READY=1 again once every worker reported READY after it."""
        if self.phase in {Phase.STOPPING, Phase.STARTING}:
            return  # while starting, the first READY=1 waits for every worker all the same
        self.phase = Phase.RELOADING
        self.waiting = set(range(1, self.count + 1))
        if self.notifier is not None:
            self.notifier.reloading()

    def reload_refused(self) -> None:
        """The supervisor refused the reload: the workers keep serving as before."""
        if self.phase is Phase.RELOADING:
            self.phase = Phase.READY
            self.waiting = set()
            self._send_ready()

    def stopping(self) -> None:
        """The drain (or the stop) begins."""
        if self.phase is Phase.STOPPING:
            return
        self.phase = Phase.STOPPING
        self.waiting = set()
        if self.notifier is not None:
            self.notifier.stopping(self.status_text())

    def _send_ready(self) -> None:
        self._status = self.status_text()
        if self.notifier is not None:
            self.notifier.ready(self._status)

    def _send_status(self) -> None:
        text = self.status_text()
        if text != self._status:
            self._status = text
            if self.notifier is not None:
                self.notifier.status(text)
