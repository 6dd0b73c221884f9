"""Running out of file descriptors (EMFILE): `socks5d serve` as a process with RLIMIT_NOFILE
lowered to 64.

The accept loop must back off and retry, never stop: established tunnels keep relaying while
the server cannot accept, and once descriptors are free again new clients are served.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from socks5d.proto import Reply

from .raw_client import IO_TIMEOUT, loopback_address, open_tunnel, recv_exactly

#: The server's descriptor limit: a few for Python and the loop, the rest for sessions.
SERVER_DESCRIPTORS = 64
#: More connections than the server can hold descriptors for.
FLOOD = 2 * SERVER_DESCRIPTORS
PROCESS_TIMEOUT = 10.0


def _limit_descriptors() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_DESCRIPTORS, SERVER_DESCRIPTORS))


class ServeProcess:
    """`python -m socks5d serve --log-format json` with a low descriptor limit; its stderr
    is read as JSON lines with select() against a deadline.
    """

    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "socks5d",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_limit_descriptors,
        )
        assert self.process.stderr is not None
        self._stderr = self.process.stderr
        self._pending = b""
        self.entries: list[dict[str, Any]] = []
        self.address: tuple[str, int] = ("", 0)

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Read log lines until one is `wanted`; fail if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        fd = self._stderr.fileno()
        while True:
            while b"\n" in self._pending:
                line, _, self._pending = self._pending.partition(b"\n")
                entry = json.loads(line)
                self.entries.append(entry)
                if wanted(entry):
                    return entry
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not ready:
                raise AssertionError(f"no such log line in {timeout} s; got {self.entries}")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.process.wait(PROCESS_TIMEOUT)
                raise AssertionError(f"exited {self.process.returncode}: {self.entries}")
            self._pending += chunk

    def start(self) -> ServeProcess:
        entry = self.wait_for(lambda e: e["message"].startswith("listening on"), PROCESS_TIMEOUT)
        host, _, port = entry["listener"].rpartition(":")
        self.address = (host, int(port))
        return self

    def stop(self) -> tuple[int, list[dict[str, Any]]]:
        """SIGTERM; the exit status and the log lines written after it."""
        self.process.send_signal(signal.SIGTERM)
        _, rest = self.process.communicate(timeout=PROCESS_TIMEOUT)
        lines = (self._pending + rest).decode().splitlines()
        self._pending = b""
        return self.process.returncode, [json.loads(line) for line in lines]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=PROCESS_TIMEOUT)  # reaps and closes the pipe


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(tmp_path)
    try:
        yield process.start()
    finally:
        process.kill()


def _out_of_descriptors(entry: dict[str, Any]) -> bool:
    message = entry["message"]
    return (
        entry["level"] == "warning"
        and message.startswith("accept on ")
        and "Too many open files" in message
        and "retrying" in message
    )


def _retry_delay(entry: dict[str, Any]) -> float:
    match = re.search(r"retrying in ([0-9.]+)s", entry["message"])
    assert match is not None, entry
    return float(match.group(1))


def echo_through(client: socket.socket, destination: socket.socket, data: bytes) -> None:
    """`data` up the tunnel and back down (the test plays the echo server)."""
    client.sendall(data)
    received = recv_exactly(destination, len(data))
    destination.sendall(received)
    assert recv_exactly(client, len(data)) == data


@pytest.mark.timeout(60)
def test_the_server_keeps_tunnels_and_accepts_again_after_running_out_of_descriptors(
    serve: ServeProcess, listener: socket.socket
) -> None:
    echo = loopback_address(listener)
    with ExitStack() as tunnel:
        client, reply = open_tunnel(serve, echo)
        tunnel.enter_context(client)
        assert reply.reply == Reply.SUCCEEDED
        destination = tunnel.enter_context(listener.accept()[0])
        echo_through(client, destination, b"before")

        with ExitStack() as flood:
            # The kernel completes connections into the backlog whether or not the server
            # accepts them; the server takes them until accept() fails with EMFILE.
            for _ in range(FLOOD):
                flood.enter_context(socket.create_connection(serve.address, timeout=IO_TIMEOUT))
            first = serve.wait_for(_out_of_descriptors, PROCESS_TIMEOUT)
            # Still out of descriptors: it tries again, backing off further each time.
            second = serve.wait_for(_out_of_descriptors, PROCESS_TIMEOUT)
            assert _retry_delay(second) > _retry_delay(first)

            # While it cannot accept, the established tunnel relays both ways.
            echo_through(client, destination, b"during the shortage")
            assert serve.process.poll() is None
        # The flood is closed: its sessions end, their descriptors come back.

        # A new client is served again (the accept loop retried after at most 1 s).
        second, reply = open_tunnel(serve, echo)
        with second:
            assert reply.reply == Reply.SUCCEEDED
            with listener.accept()[0] as second_destination:
                echo_through(second, second_destination, b"after")
        echo_through(client, destination, b"still there")

    status, after = serve.stop()
    assert status == 0
    assert any(entry["message"] == "shutting down" for entry in after)
    assert all(entry["level"] != "error" for entry in serve.entries + after)
