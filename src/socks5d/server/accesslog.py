"""Log output: one access-log line per session, and text or JSON formatting for every line.

Structured fields ride on a record as `extra={"fields": {...}}`; the formatters print them after
the message (`key=value`) or merge them into the JSON object. Either way everything a client
chose is escaped: a field with spaces, quotes or unprintable characters is written as a JSON
string, unprintable characters of a message as JSON escapes, and JSON lines are all JSON. The
access record of a session goes to the `socks5d.access` logger with the fields of
`ACCESS_FIELDS`, in that order.
Nothing here ever sees a password.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from socks5d.server.logwriter import BatchedHandler

ACCESS_LOGGER = "socks5d.access"
_ACCESS_LOG = logging.getLogger(ACCESS_LOGGER)

#: The fields of an access record, in the order the text format prints them.
ACCESS_FIELDS = (
    "client",
    "listener",
    "protocol",
    "user",
    "command",
    "destination",
    "reply",
    "bytes_up",
    "bytes_down",
    "duration",
    "outcome",
    "dropped",
    "rule",
    "auth",
    "raw_destination",
    "via",
    "unique_id",
    "route",
    "upstream",
)


#: Printable ASCII but space and double quote: written as they are.
_PLAIN = re.compile(r"[!#-~]+")


class AccessRecord:
    """The fields of one session's access-log line, filled in as the session goes on. Read
    and written like a dict (`record["reply"] = ...`); slotted, because an open tunnel keeps
    its record for as long as it lasts.
    """

    __slots__ = ACCESS_FIELDS

    def __init__(self, **fields: Any) -> None:
        for name in ACCESS_FIELDS:
            setattr(self, name, fields.get(name))

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def update(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        """The fields in `ACCESS_FIELDS` order."""
        return {name: getattr(self, name) for name in ACCESS_FIELDS}


def _text_value(value: Any) -> str:
    if type(value) is int:
        return str(value)
    text = "-" if value is None or value == "" else str(value)
    if _PLAIN.fullmatch(text):
        return text
    # Quote (and so escape) anything a client chose that could break the line or a terminal:
    # spaces, quotes, control characters.
    if '"' in text or not text.isprintable() or any(c.isspace() for c in text):
        return json.dumps(text)
    return text


def _escaped(text: str) -> str:
    """`text` with every character that is not printable (line breaks, ESC, CR, zero-width
    characters) written as its JSON escape (`\\n`, `\\u001b`): a client's bytes that reach a
    message (a UDP destination name, say) cannot start a line or drive a terminal.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


class TextFormatter(logging.Formatter):
    """`2026-11-25T12:00:00.123Z INFO socks5d.access session client=... reply=succeeded ...`."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime a second, not one a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line = f"{self._stamp}.{int(record.msecs):03d}Z {record.levelname} {record.name} "
        line += _escaped(record.getMessage())
        fields = getattr(record, "fields", None)
        if fields:
            line += "".join(f" {key}={_text_value(value)}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the access fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


#: Where `configure_logging` sends the lines when that is a file: its path and handler.
_log_file: tuple[Path, BatchedHandler] | None = None


def _open_log_file(path: Path) -> TextIO:
    """`path` opened for appending, line-buffered (a line is in the file once logged), created
    readable by owner and group only.

    Raises:
        OSError: it cannot be opened; the message names the path.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        error = OSError(f"log_file: cannot open {path}: {exc.strerror}")
        error.errno = exc.errno
        raise error from exc
    return open(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace")


def configure_logging(log_format: str, level: str = "info", log_file: Path | None = None) -> None:
    """Send every socks5d log line to stderr, or to `log_file` (appended to), in `log_format`
    ("text" or "json"). This is the `socks5d serve` process's setup: it also changes
    process-wide `logging` settings.

    Raises:
        OSError: `log_file` cannot be opened (the message names it).
    """
    global _log_file
    # Neither format prints thread or process names: do not collect them for every line.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    stream = _open_log_file(log_file) if log_file is not None else sys.stderr
    handler = BatchedHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("socks5d")
    for old in root.handlers:  # configured again: what the old handlers kept goes out first
        old.flush()
    if _log_file is not None:  # the file opened before is done with
        _log_file[1].close()
        _log_file[1].stream.close()
    _log_file = (log_file, handler) if log_file is not None else None
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def reopen_log_file() -> bool:
    """Open the log file again by its path, so that lines go to the file now there (logrotate
    renamed the old one, `postrotate kill -USR1`); the old one is closed. False when the lines
    go to stderr (no log file configured).

    Raises:
        OSError: the file cannot be opened; the lines still go to the old one.
    """
    if _log_file is None:
        return False
    path, handler = _log_file
    old = handler.setStream(_open_log_file(path))  # flushes the old stream first
    if old is not None:
        old.close()
    return True


def write_access_record(record: AccessRecord) -> None:
    """The access-log line of one session, at info level on `ACCESS_LOGGER`."""
    if _ACCESS_LOG.isEnabledFor(logging.INFO):  # handled directly: no caller lookup
        _ACCESS_LOG.handle(
            _ACCESS_LOG.makeRecord(
                ACCESS_LOGGER,
                logging.INFO,
                __file__,
                0,
                "session",
                (),
                None,
                extra={"fields": record.as_dict()},
            )
        )
