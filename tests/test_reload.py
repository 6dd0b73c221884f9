"""SIGHUP: `socks5d serve` reads its configuration and users file again, as a real process.

New rules and users apply to new sessions at once, established tunnels go on untouched, and a
file with an error is not applied (the old rules stay, the log says why). The server runs as
`python -m socks5d serve --config FILE --listen 127.0.0.1:0 --log-format json`; its JSON log
lines are read from stderr against a deadline, never after a sleep. Each SIGHUP is sent only
once the server has answered a request, so its handler is surely installed.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sockets import read_until_eof, recv_exactly
from socks5d.client import sync
from socks5d.errors import AuthFailed, NotAllowed
from socks5d.proto import Reply
from socks5d.users import set_password
from stderr_lines import StderrLines

#: seconds a server process gets to start, to log a reload, or to exit after a signal
PROCESS_TIMEOUT = 10.0
#: seconds any single blocking socket call of a test may take
IO_TIMEOUT = 5.0


class ServeProcess:
    """The server process, with its stderr read as JSON log entries."""

    def __init__(
        self, config: Path, *, listen: str | None = "127.0.0.1:0", namespace: str | None = None
    ) -> None:
        command = [sys.executable, "-m", "socks5d", "serve", "--config", str(config)]
        command += ["--listen", listen] if listen is not None else []
        command += ["--log-format", "json"]
        if namespace is not None:
            command = ["ip", "netns", "exec", namespace, *command]
        self.process = subprocess.Popen(
            command,
            cwd=config.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._stderr = StderrLines(self.process, PROCESS_TIMEOUT)
        self.lines: list[str] = []
        listening = self.wait_for(lambda e: e["message"].startswith("listening on"))
        host, _, port = listening["listener"].rpartition(":")
        self.address = (host, int(port))
        self.wait_for(lambda e: " ready: " in e["message"])  # the last line of the start

    def _read_line(self, deadline: float) -> str:
        self.lines.append(self._stderr.read(deadline, lambda: self.lines).decode())
        return self.lines[-1]

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read log entries until one is `wanted`; return it."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while True:
            entry = json.loads(self._read_line(deadline))
            if wanted(entry):
                return entry

    def reload(self) -> dict[str, Any]:
        """SIGHUP; the log entry that says how the reload went."""
        self.process.send_signal(signal.SIGHUP)
        return self.wait_for(lambda e: e["logger"] == "socks5d.cli")

    def url(self, user: str | None = None, password: str = "") -> str:
        credentials = f"{user}:{password}@" if user is not None else ""
        return f"socks5://{credentials}{self.address[0]}:{self.address[1]}"

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=PROCESS_TIMEOUT)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=PROCESS_TIMEOUT)  # reaps and closes the pipe


@pytest.fixture
def serve() -> Iterator[Callable[[Path], ServeProcess]]:
    started: list[ServeProcess] = []

    def start(config: Path, **options: Any) -> ServeProcess:
        process = ServeProcess(config, **options)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def destination() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1: the far end of the tunnels (the test echoes by hand)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(IO_TIMEOUT)
        yield sock


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def open_tunnel(
    server: ServeProcess, destination: socket.socket, **credentials: str
) -> tuple[socket.socket, socket.socket]:
    """A CONNECT tunnel to `destination`: (our end, the far end the destination accepted)."""
    tunnel = sync.connect(
        *destination.getsockname()[:2], proxy=server.url(**credentials), timeout=IO_TIMEOUT
    )
    try:
        tunnel.settimeout(IO_TIMEOUT)
        far_end, _ = destination.accept()
    except BaseException:
        tunnel.close()
        raise
    far_end.settimeout(IO_TIMEOUT)
    return tunnel, far_end


def assert_echoes(tunnel: socket.socket, far_end: socket.socket, data: bytes) -> None:
    """`data` goes through the tunnel, the far end echoes it, it comes back."""
    tunnel.sendall(data)
    far_end.sendall(recv_exactly(far_end, len(data)))
    assert recv_exactly(tunnel, len(data)) == data


def assert_refused(server: ServeProcess, destination: socket.socket) -> None:
    """A new CONNECT to `destination` gets X'02', the access log names socks[0], and no
    connection reached the destination (the first one it accepts is the test's own)."""
    with pytest.raises(NotAllowed) as caught:
        sync.connect(*destination.getsockname()[:2], proxy=server.url(), timeout=IO_TIMEOUT)
    assert caught.value.reply == Reply.CONNECTION_NOT_ALLOWED
    record = server.wait_for(
        lambda e: e["logger"] == "socks5d.access" and e["reply"] != "succeeded"
    )
    assert (record["reply"], record["rule"]) == ("connection_not_allowed", "socks[0]")
    with socket.create_connection(destination.getsockname()[:2], timeout=IO_TIMEOUT) as probe:
        accepted, peer = destination.accept()
        accepted.close()
        assert peer == probe.getsockname()


def test_sighup_applies_new_rules_to_new_requests_keeps_tunnels_and_survives_a_bad_file(
    tmp_path: Path, serve, destination: socket.socket
) -> None:
    port = destination.getsockname()[1]
    config = write(tmp_path / "socks5d.toml", '[rules]\nsocks_default = "pass"\n')
    server = serve(config)
    tunnel, far_end = open_tunnel(server, destination)
    with tunnel, far_end:
        assert_echoes(tunnel, far_end, b"before")

        write(config, f'[[socks]]\naction = "block"\nto = ["127.0.0.1/32"]\nport = ["{port}"]\n')
        reloaded = server.reload()
        assert (reloaded["level"], reloaded["message"]) == ("info", "configuration reloaded")
        assert_refused(server, destination)
        assert_echoes(tunnel, far_end, b"after the reload")  # the old tunnel goes on

        write(config, '[[socks]]\naction = "pass"\nto = ["10.0.0.0/33"]\n')
        failed = server.reload()
        assert failed["level"] == "error"
        assert failed["message"].startswith("reload failed, keeping the previous configuration")
        assert 'socks[0].to[0]: "10.0.0.0/33"' in failed["message"]
        assert_refused(server, destination)  # the previous rules still apply
        assert_echoes(tunnel, far_end, b"after the failed reload")

        # a failed reload does not spoil the next good one
        write(config, '[rules]\nsocks_default = "pass"\n')
        assert server.reload()["message"] == "configuration reloaded"
        second, second_far_end = open_tunnel(server, destination)
        with second, second_far_end:
            assert_echoes(second, second_far_end, b"allowed again")
    assert server.stop() == 0


def test_sighup_reads_the_users_file_again(tmp_path: Path, serve, destination) -> None:
    users = tmp_path / "users"
    set_password(users, "alice", "alice-pw")
    config = write(
        tmp_path / "socks5d.toml",
        """
        users = "users"
        """,
    )
    server = serve(config)
    with pytest.raises(AuthFailed):
        sync.connect(
            *destination.getsockname()[:2],
            proxy=server.url("bob", "bob-pw"),
            timeout=IO_TIMEOUT,
        )
    tunnel, far_end = open_tunnel(server, destination, user="alice", password="alice-pw")
    with tunnel, far_end:
        assert_echoes(tunnel, far_end, b"alice")

        assert set_password(users, "bob", "bob-pw") is True
        assert server.reload()["message"] == "configuration reloaded"

        bobs, bobs_far_end = open_tunnel(server, destination, user="bob", password="bob-pw")
        with bobs, bobs_far_end:
            assert_echoes(bobs, bobs_far_end, b"bob")
        assert_echoes(tunnel, far_end, b"alice still")
    assert server.stop() == 0


def test_sighup_with_a_broken_users_file_keeps_the_old_users(
    tmp_path: Path, serve, destination
) -> None:
    users = tmp_path / "users"
    set_password(users, "alice", "alice-pw")
    config = write(tmp_path / "socks5d.toml", 'users = "users"\n')
    server = serve(config)
    tunnel, far_end = open_tunnel(server, destination, user="alice", password="alice-pw")
    with tunnel, far_end:
        assert_echoes(tunnel, far_end, b"alice")
    users.write_text("alice has no hash\n", encoding="utf-8")
    failed = server.reload()
    assert failed["level"] == "error"
    assert failed["message"].startswith("reload failed, keeping the previous configuration")
    assert "alice-pw" not in failed["message"]
    tunnel, far_end = open_tunnel(server, destination, user="alice", password="alice-pw")
    with tunnel, far_end:
        assert_echoes(tunnel, far_end, b"alice again")
    assert server.stop() == 0


# --- a reload never makes a bound socket an open proxy --------------------------------------------

#: setns(2)'s namespace type for network namespaces
CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=IO_TIMEOUT)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A private network namespace with only `lo` up: 0.0.0.0 in it reaches nothing outside."""
    name = f"socks5d-reload-{secrets.token_hex(4)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _ip("netns", "delete", name)


def connect_inside(namespace: str, address: tuple[str, int]) -> socket.socket:
    """A TCP connection made from inside `namespace` (by a thread that enters it and ends;
    the socket stays in the namespace it was made in)."""
    made: list[socket.socket | BaseException] = []

    def enter_and_connect() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            made.append(socket.create_connection(address, timeout=IO_TIMEOUT))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=enter_and_connect)
    thread.start()
    thread.join(IO_TIMEOUT)
    result = made[0]
    if isinstance(result, BaseException):
        raise result
    return result


def test_sighup_refuses_no_auth_while_a_public_socket_stays_bound(
    tmp_path: Path, serve, namespace: str
) -> None:
    """The attack: start on 0.0.0.0 with passwords, add 127.0.0.1 to the file and drop the
    passwords, SIGHUP. The 0.0.0.0 socket stays bound (unchanged listen addresses keep their
    socket), so the new file would make it an open proxy: the reload is refused whole."""
    set_password(tmp_path / "users", "alice", "alice-pw")
    config = write(tmp_path / "socks5d.toml", 'listen = ["0.0.0.0:0"]\nusers = "users"\n')
    server = serve(config, listen=None, namespace=namespace)
    port = server.address[1]
    assert server.address[0] == "0.0.0.0"

    write(config, 'listen = ["0.0.0.0:0", "127.0.0.1:1080"]\n')
    server.process.send_signal(signal.SIGHUP)
    outcome = server.wait_for(
        lambda e: e["logger"] == "socks5d.cli" and e["level"] in ("info", "error")
    )
    assert outcome["message"] == (
        "reload failed, keeping the previous configuration: listen: "
        "0.0.0.0:0 is not a loopback address and auth allows "
        '"none": that is an open proxy. Require userpass, or set allow_open_proxy = true '
        "(--allow-open-proxy) if that is really intended"
    )
    for greeting, refusal in (
        (bytes([5, 1, 0]), bytes([5, 0xFF])),  # SOCKS5 no-auth: X'FF', no acceptable method
        (bytes([4, 1, 0, 80, 127, 0, 0, 1, 0]), b""),  # SOCKS4: closed without a reply
    ):
        with connect_inside(namespace, ("127.0.0.1", port)) as sock:
            sock.sendall(greeting)
            assert read_until_eof(sock) == refusal
    assert server.stop() == 0
