"""REP codes from real kernel routing errors, in a private network namespace.

The test creates a namespace with only `lo` up and three kinds of route trouble:

    ip route add unreachable 10.1.0.0/16     connect() -> EHOSTUNREACH -> X'04' Host unreachable
    ip route add prohibit    10.2.0.0/16     connect() -> EACCES       -> X'02' not allowed
    (no route to 10.3.0.1 at all)            connect() -> ENETUNREACH  -> X'03' Network unreachable

`socks5d serve --log-format json` runs inside it as a subprocess; the clients run inside it
too (`ip netns exec`), so the test needs root and iproute2 (scripts/test.sh installs it).
"""

from __future__ import annotations

import errno
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

from socks5d.proto import SOCKS5_VERSION, Address, AuthMethod, Command, CommandReply, Reply
from socks5d.proto.rfc1928 import encode_reply

from .raw_client import IO_TIMEOUT, greeting_bytes, request_bytes

PROXY_PORT = 1080
ROUTES = [
    ["unreachable", "10.1.0.0/16"],
    ["prohibit", "10.2.0.0/16"],
]
#: destination, the errno connect() gets for it in the namespace, the reply it must become
ROUTE_ERRORS = [
    pytest.param("10.1.0.1", errno.EHOSTUNREACH, Reply.HOST_UNREACHABLE, id="unreachable-route"),
    pytest.param("10.2.0.1", errno.EACCES, Reply.CONNECTION_NOT_ALLOWED, id="prohibit-route"),
    pytest.param("10.3.0.1", errno.ENETUNREACH, Reply.NETWORK_UNREACHABLE, id="no-route"),
]

#: Connects straight to argv[1]:80 and prints the errno name it fails with.
DIRECT_CONNECT = """
import errno, socket, sys
with socket.socket() as sock:
    sock.settimeout(5)
    try:
        sock.connect((sys.argv[1], 80))
        print("connected")
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, repr(exc)))
"""

#: Sends argv[3] (hex) to the proxy at argv[1]:argv[2] and prints, as hex, all it gets back
#: until EOF.
PROXY_EXCHANGE = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as sock:
    sock.sendall(bytes.fromhex(sys.argv[3]))
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    print(received.hex())
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=IO_TIMEOUT)


@dataclass
class NamespacedServer:
    """`socks5d serve` running inside network namespace `name`; its stderr parsed as JSON."""

    name: str
    process: subprocess.Popen[str]
    lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)

    def run_python(self, code: str, *args: str) -> str:
        """Run `code` with this interpreter inside the namespace; return its stdout."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=4 * IO_TIMEOUT,
            check=True,
        )
        return result.stdout.strip()

    def next_line(self, **expected: Any) -> dict[str, Any]:
        """The next JSON log line whose fields include `expected` (skipping others)."""
        seen = []
        while True:
            entry = self.lines.get(timeout=4 * IO_TIMEOUT)
            if expected.items() <= entry.items():
                return entry
            if entry["logger"] == "stderr":
                raise AssertionError(f"server exited before logging {expected}: {seen}")
            seen.append(entry)


def _read_json_lines(stream: IO[str], lines: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        try:
            lines.put(json.loads(line))
        except json.JSONDecodeError:
            lines.put({"message": line.rstrip("\n"), "logger": "not-json"})
    lines.put({"message": "EOF", "logger": "stderr"})


@pytest.fixture(scope="module")
def namespaced_server() -> Iterator[NamespacedServer]:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.fail("network namespace tests need root and iproute2 (see scripts/test.sh)")
    name = f"socks5d-test-{os.getpid()}-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        for route in ROUTES:
            _ip("netns", "exec", name, "ip", "route", "add", *route)
        command = [
            "ip", "netns", "exec", name,
            sys.executable, "-m", "socks5d", "serve",
            "--listen", f"127.0.0.1:{PROXY_PORT}", "--log-format", "json",
        ]  # fmt: skip
        with subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        ) as process:  # fmt: skip
            assert process.stderr is not None
            server = NamespacedServer(name, process)
            reader = threading.Thread(
                target=_read_json_lines, args=(process.stderr, server.lines), daemon=True
            )
            reader.start()
            try:
                started = server.next_line(logger="socks5d.server.listen")
                assert started["message"] == f"listening on 127.0.0.1:{PROXY_PORT}"
                yield server
            finally:
                process.terminate()
                process.wait(IO_TIMEOUT)
                reader.join(IO_TIMEOUT)
    finally:
        _ip("netns", "del", name)


@pytest.mark.parametrize(("host", "error", "reply"), ROUTE_ERRORS)
def test_namespace_route_makes_connect_fail_with_the_expected_errno(
    namespaced_server: NamespacedServer, host: str, error: int, reply: Reply
) -> None:
    assert namespaced_server.run_python(DIRECT_CONNECT, host) == errno.errorcode[error]


@pytest.mark.parametrize(("host", "error", "reply"), ROUTE_ERRORS)
def test_kernel_routing_error_becomes_its_reply_code_then_close(
    namespaced_server: NamespacedServer, host: str, error: int, reply: Reply
) -> None:
    no_auth = AuthMethod.NO_AUTHENTICATION_REQUIRED
    handshake = greeting_bytes(no_auth) + request_bytes(
        Command.CONNECT, Address.from_host(host, 80)
    )
    answer = namespaced_server.run_python(
        PROXY_EXCHANGE, "127.0.0.1", str(PROXY_PORT), handshake.hex()
    )
    expected = bytes([SOCKS5_VERSION, no_auth]) + encode_reply(CommandReply(reply))
    assert bytes.fromhex(answer) == expected  # the reply, then EOF
    record = namespaced_server.next_line(logger="socks5d.access", destination=f"{host}:80")
    assert record["reply"] == reply.name.lower()
    assert record["command"] == "connect"
    assert record["outcome"] == os.strerror(error)
    assert record["level"] == "info"
