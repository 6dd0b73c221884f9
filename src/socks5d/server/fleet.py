"""The admin endpoint under `--workers`: one process that asks every worker and sums.

The supervisor binds the admin socket before it forks, then forks this admin process
(`run_admin`), which serves `AdminServer` on its own event loop with a `WorkersSource`: every
scrape asks each worker's control socket (server/control.py) at once, with a deadline, and
merges what they answer. Counters never go backwards: the last snapshot of each worker
number is remembered with its pid; when a number answers with a new pid (the worker was
replaced), the old pid's counters and histograms (`monotonic_part`) join a retired total that
every later scrape adds; a worker that does not answer in time counts with its last
snapshot's counters. SIGTERM tells this process that a drain began (`/healthz` answers 503);
SIGINT stops it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any

from socks5d.config import ListenAddress
from socks5d.server.admin import AdminServer
from socks5d.server.control import MAX_SESSIONS, ask
from socks5d.server.runtime import unblock_signals
from socks5d.server.stats import merge_snapshots, monotonic_part

log = logging.getLogger(__name__)

#: Seconds a scrape waits for the workers' answers.
DEADLINE = 1.0


class WorkersSource:
    """An `AdminSource` over the workers' control sockets.

    Args:
        control_paths: the control socket's path of each worker number.
        deadline: seconds every request to the workers may take, all of them at once.
    """

    def __init__(self, control_paths: Mapping[int, str], *, deadline: float = DEADLINE) -> None:
        self.control_paths = dict(control_paths)
        self.deadline = deadline
        #: worker number -> the last snapshot it answered (with its "pid")
        self.last: dict[int, dict[str, Any]] = {}
        #: the counters and histograms of workers that were replaced, summed
        self.retired: dict[str, Any] | None = None
        self._draining = False

    def begin_drain(self) -> None:
        """The supervisor began a drain: `/healthz` says so from now on."""
        if not self._draining:
            log.info("admin: drain began")
        self._draining = True

    def draining(self) -> bool:
        return self._draining

    async def _ask_all(self, request: str) -> dict[int, Any]:
        """Each worker number's answer to `request`; the ones that gave none are left out."""

        async def one(path: str) -> Any:
            async with asyncio.timeout(self.deadline):
                return await ask(path, request)

        numbers = sorted(self.control_paths)
        answers = await asyncio.gather(
            *(one(self.control_paths[number]) for number in numbers), return_exceptions=True
        )
        found: dict[int, Any] = {}
        for number, result in zip(numbers, answers, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, (OSError, ValueError, TimeoutError)):
                    raise result
                log.debug("worker %d did not answer %r: %s", number, request, result)
            else:
                found[number] = result
        return found

    async def metrics(self) -> dict[str, Any]:
        """The sum over the workers, the retired ones included (see the module docstring)."""
        answers = await self._ask_all("metrics")
        for number, snapshot in answers.items():
            if not isinstance(snapshot, dict):
                continue
            previous = self.last.get(number)
            if previous is not None and previous.get("pid") != snapshot.get("pid"):
                retired = [monotonic_part(previous)]
                if self.retired is not None:
                    retired.append(self.retired)
                self.retired = merge_snapshots(retired)
            self.last[number] = snapshot
        parts = [
            snapshot if number in answers else monotonic_part(snapshot)
            for number, snapshot in sorted(self.last.items())
        ]
        if self.retired is not None:
            parts.append(self.retired)
        merged = merge_snapshots(parts)
        if self._draining:  # also once the drained workers are gone and answer no more
            merged["gauges"]["socks5d_draining"] = [[{}, 1]]
        return merged

    async def sessions(self, limit: int) -> list[dict[str, Any]]:
        """The open sessions of every worker (each names its `pid`), oldest first, at most
        `limit`."""
        limit = max(0, min(limit, MAX_SESSIONS))
        answers = await self._ask_all(f"sessions {limit}")
        found = [
            item
            for listed in answers.values()
            if isinstance(listed, list)
            for item in listed
            if isinstance(item, dict)
        ]
        found.sort(key=lambda item: -float(item.get("age") or 0.0))
        return found[:limit]


def run_admin(
    address: ListenAddress,
    sock: socket.socket,
    control_paths: Mapping[int, str],
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> int:
    """The admin process: serve `AdminServer` on `sock` (bound by the supervisor) until
    SIGINT; SIGTERM marks the drain. Returns the exit status."""
    source = WorkersSource(control_paths)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, source.begin_drain)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        unblock_signals([signal.SIGTERM, signal.SIGINT])
        try:
            async with AdminServer(address, source, sock=sock):
                await stop.wait()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGINT)

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(serve())
    return 0
