"""Reading a child process's stderr line by line, each line within a deadline (the `serve`
subprocess tests: reload, workers).
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable


class StderrLines:
    """Complete lines from `process`'s stderr pipe; `pending` holds a partial last line."""

    def __init__(self, process: subprocess.Popen[bytes], exit_timeout: float) -> None:
        assert process.stderr is not None
        self.process = process
        self.pending = b""
        self._fd = process.stderr.fileno()
        self._exit_timeout = exit_timeout

    def read(self, deadline: float, seen: Callable[[], object]) -> bytes:
        """The next line, without its newline. Fails the test, showing `seen()`, when none is
        complete by `deadline` (a `time.monotonic()` value) or the process exits first.
        """
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._fd], [], [], max(remaining, 0))
            if not ready:
                raise AssertionError(f"no complete stderr line in time; got {seen()}")
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self.process.wait(self._exit_timeout)
                raise AssertionError(f"exited {self.process.returncode}: {seen()} {self.pending!r}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line
