"""`--log-file`: every line goes to the file (appended), SIGUSR1 reopens it by its name (what
logrotate's `postrotate kill -USR1` needs), SIGUSR1 without a log file is logged and
ignored, and a log file that cannot be opened stops the start with its path named.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import (
    Processes,
    ServeProcess,
    echo_pair,
    exchange,
    file_entries,
)
from socks5d.client import sync
from socks5d.server import accesslog


def one_session(server: ServeProcess, destination: socket.socket, tag: bytes) -> None:
    """A CONNECT through the server, bytes both ways, closed."""
    host, port = server.listeners()[0]
    client = sync.connect(*destination.getsockname()[:2], proxy=f"socks5://{host}:{port}")
    with client, echo_pair(destination, client) as far:
        exchange(client, far, tag)


def test_sigusr1_reopens_the_log_file_after_a_rename(
    serve: Processes, tmp_path: Path, destination: socket.socket
) -> None:
    log_file = tmp_path / "socks5d.log"
    server = serve("--listen", "127.0.0.1:0", "--log-file", str(log_file), log_file=log_file)
    one_session(server, destination, b"one")
    first = server.access_record()
    rotated = tmp_path / "socks5d.log.1"
    log_file.rename(rotated)  # logrotate's rename; the server still writes the renamed file
    server.signal(signal.SIGUSR1)
    server.follow(log_file)
    assert server.wait_message("log file reopened")["level"] == "info"
    size = rotated.stat().st_size
    one_session(server, destination, b"two")
    second = server.access_record()
    assert second["client"] != first["client"]
    server.signal(signal.SIGTERM)
    server.wait_message("stopped")
    assert server.wait_exit() == 0
    assert rotated.stat().st_size == size  # the old file stopped growing
    assert first in file_entries(rotated) and second not in file_entries(rotated)
    assert file_entries(log_file)[0]["message"] == "log file reopened"
    assert server.rest == ""  # nothing went to stderr


def test_sigusr1_without_a_log_file_is_logged_and_not_fatal(
    serve: Processes, destination: socket.socket
) -> None:
    server = serve("--listen", "127.0.0.1:0")
    server.signal(signal.SIGUSR1)
    ignored = server.wait_message("SIGUSR1 ignored")
    assert ignored["message"] == "SIGUSR1 ignored: no log file to reopen (logging to stderr)"
    one_session(server, destination, b"still serving")
    assert server.access_record()["outcome"] == "closed"
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_a_log_file_that_cannot_be_opened_stops_the_start_naming_it(
    serve: Processes, tmp_path: Path
) -> None:
    missing = tmp_path / "no such directory" / "socks5d.log"
    server = serve("--listen", "127.0.0.1:0", "--log-file", str(missing), ready=False)
    assert server.wait_exit() == 1
    assert server.rest == (f"socks5d: log_file: cannot open {missing}: No such file or directory\n")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger("socks5d")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    if accesslog._log_file is not None:  # the file the test had opened
        accesslog._log_file[1].close()
        accesslog._log_file[1].stream.close()
        accesslog._log_file = None
    root.handlers[:], root.level, root.propagate = saved


def test_configure_logging_writes_the_file_at_the_level_and_reopens_it(
    tmp_path: Path, restore_logging: None
) -> None:
    log_file = tmp_path / "a.log"
    accesslog.configure_logging("text", "warning", log_file)
    logger = logging.getLogger("socks5d.test")
    logger.info("not written: below the level")
    logger.warning("first")
    assert log_file.read_text().endswith("WARNING socks5d.test first\n")  # line-buffered
    assert log_file.stat().st_mode & 0o777 == 0o640
    log_file.rename(tmp_path / "a.log.1")
    assert accesslog.reopen_log_file() is True
    logger.error("second")
    assert "second" in log_file.read_text() and "first" not in log_file.read_text()
    assert "not written" not in (tmp_path / "a.log.1").read_text()


def test_reopen_log_file_is_false_without_a_log_file(restore_logging: None) -> None:
    accesslog.configure_logging("json", "debug")
    assert logging.getLogger("socks5d").isEnabledFor(logging.DEBUG)
    assert accesslog.reopen_log_file() is False
