"""Log lines written in batches: one write per event-loop iteration, not one per line.

Under load many sessions end in one iteration of the event loop, and each ends with an
access-log line. `BatchedHandler` keeps the records logged while the loop runs and formats and
writes them together when the iteration's callbacks are done (`loop.call_soon`), so a busy
server makes one `write` per iteration. Nothing waits longer than that iteration: a line is in
the file as soon as the loop is idle again. Warnings and errors, and lines logged where no loop
runs (start-up, another thread), are written at once, after whatever was kept, so the order of
the lines is the order they were logged in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TextIO

#: The most records kept before they are written anyway.
MAX_BATCH = 512


class BatchedHandler(logging.StreamHandler[TextIO]):
    """A `StreamHandler` that writes the records of one event-loop iteration together."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._kept: list[logging.LogRecord] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        if record.levelno < logging.WARNING:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                self._kept.append(record)
                if len(self._kept) >= MAX_BATCH:
                    self._write_kept()
                elif not self._scheduled:
                    self._scheduled = True
                    loop.call_soon(self._end_of_iteration)
                return
        self._kept.append(record)
        self._write_kept()

    def _end_of_iteration(self) -> None:
        self.acquire()
        try:
            self._scheduled = False
            self._write_kept()
        finally:
            self.release()

    def _write_kept(self) -> None:
        records, self._kept = self._kept, []
        lines = []
        for record in records:
            try:
                lines.append(self.format(record) + self.terminator)
            except Exception:
                self.handleError(record)
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:
            self.handleError(records[-1])

    def flush(self) -> None:
        """Write what is kept, then flush the stream (logging's shutdown, a reopen, exit)."""
        self.acquire()
        try:
            if self._kept:
                self._write_kept()
        finally:
            self.release()
        super().flush()


def flush_logging() -> None:
    """Write every kept line of socks5d's handlers now: before a process ends with `os._exit`,
    which skips logging's own shutdown."""
    for handler in logging.getLogger("socks5d").handlers:
        handler.flush()
