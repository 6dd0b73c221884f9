"""The command line: `check-config` and `passwd` in-process via `cli.main`, `serve` as a process.

`serve` runs as `python -m socks5d serve` on loopback port 0; the tests read its JSON log lines
from stderr (with a deadline, never a sleep), then stop it with a signal.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from socks5d import __version__
from socks5d.cli import main
from socks5d.proto import NEED_DATA, AuthMethod, ClientConnection, Greeting, MethodSelected
from socks5d.users import UserDatabase

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "socks5d.toml"
#: seconds a server process gets to start, or to exit after a signal
PROCESS_TIMEOUT = 10.0


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """`stdin("secret\\n")`: what `passwd` reads; a StringIO is not a terminal."""

    def feed(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    return feed


# --- general -------------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"socks5d {__version__}"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_auth_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--auth", "kerberos"])
    assert caught.value.code == 2
    assert "--auth" in capsys.readouterr().err


# --- check-config --------------------------------------------------------------------------------


def test_check_config_of_a_good_file_prints_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write(tmp_path / "socks5d.toml", 'listen = ["127.0.0.1:1081", "[::1]:1081"]\n')
    assert main(["check-config", str(config_file)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{config_file}: OK (listen 127.0.0.1:1081, [::1]:1081)\n"
    assert captured.err == ""


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_loads_the_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stdin: Callable[[str], None]
) -> None:
    stdin("secret\n")
    assert main(["passwd", str(tmp_path / "users"), "alice"]) == 0
    config_file = write(tmp_path / "socks5d.toml", 'users = "users"\n')
    capsys.readouterr()
    assert main(["check-config", str(config_file)]) == 0
    captured = capsys.readouterr()
    assert "OK" in captured.out
    assert captured.err == ""  # a file passwd made is private: no warning


def writable_warning(path: Path, who: str, mode: int) -> str:
    return (
        f"users: {path} is writable by {who} (mode {mode:04o}); "
        "anyone who can write it can add a user: chmod 600 it"
    )


def make_users_file(path: Path, stdin: Callable[[str], None], mode: int = 0o600) -> Path:
    """A users file with alice (password "secret"), made by `socks5d passwd`, then `mode`."""
    stdin("secret\n")
    assert main(["passwd", str(path), "alice"]) == 0
    path.chmod(mode)
    return path


def test_check_config_warns_about_a_users_file_others_can_write_and_still_says_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stdin: Callable[[str], None]
) -> None:
    users = make_users_file(tmp_path / "users", stdin, 0o666)
    config_file = write(tmp_path / "socks5d.toml", 'users = "users"\n')
    capsys.readouterr()
    assert main(["check-config", str(config_file)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{config_file}: OK (listen 127.0.0.1:1080)\n"
    warning = writable_warning(users, "group and others", 0o666)
    assert captured.err == f"socks5d: warning: {warning}\n"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[timeouts]\nidle = -1\n", "timeouts.idle: "),
        ("[timeouts]\nx = 1\n", "timeouts.x: "),
        ("bogus = 1\n", "bogus: "),
        ('listen = ["127.0.0.1"]\n', "listen[0]: "),
        ('listen = ["0.0.0.0:1080"]\n', "listen: "),
        ('auth = ["userpass"]\n', "users: "),
        ('log_format = "xml"\n', "log_format: "),
    ],
)
def test_check_config_of_a_bad_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    config_file = write(tmp_path / "socks5d.toml", text)
    assert main(["check-config", str(config_file)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"socks5d: {key}")
    assert captured.err.count("\n") == 1  # one line, no traceback


def test_check_config_of_invalid_toml_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write(tmp_path / "socks5d.toml", "listen = [\n")
    assert main(["check-config", str(config_file)]) == 2
    assert capsys.readouterr().err.startswith(f"socks5d: {config_file}: ")


def test_check_config_of_a_file_that_is_not_utf8_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "socks5d.toml"
    config_file.write_bytes(b'log_level = "d\xe9bug"\n')
    assert main(["check-config", str(config_file)]) == 2
    assert capsys.readouterr().err.startswith(f"socks5d: {config_file}: ")


def test_check_config_of_a_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "absent.toml"
    assert main(["check-config", str(config_file)]) == 2
    assert capsys.readouterr().err.startswith(f"socks5d: {config_file}: ")


def test_check_config_reports_a_missing_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write(tmp_path / "socks5d.toml", 'users = "absent-users"\n')
    assert main(["check-config", str(config_file)]) == 2
    assert capsys.readouterr().err.startswith(f"socks5d: users: {tmp_path / 'absent-users'}: ")


def test_check_config_reports_a_malformed_users_file_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "users", "# users\nalice:plain-secret\n")
    config_file = write(tmp_path / "socks5d.toml", 'users = "users"\n')
    assert main(["check-config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"socks5d: users: {tmp_path / 'users'}:2: ")
    assert "plain-secret" not in err


# --- passwd --------------------------------------------------------------------------------------


def test_passwd_creates_a_private_users_file_with_a_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stdin: Callable[[str], None]
) -> None:
    path = tmp_path / "users"
    stdin("correct horse\n")
    assert main(["passwd", str(path), "alice"]) == 0
    assert f"added alice in {path}" in capsys.readouterr().err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text(encoding="utf-8")
    (line,) = text.splitlines()
    assert line.startswith("alice:scrypt$")
    assert "correct horse" not in text
    database = UserDatabase.load(path)
    assert database.verify("alice", "correct horse")
    assert not database.verify("alice", "correct horse\n")


def test_passwd_again_changes_the_hash_and_keeps_other_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stdin: Callable[[str], None]
) -> None:
    path = tmp_path / "users"
    stdin("alice-1\n")
    assert main(["passwd", str(path), "alice"]) == 0
    stdin("bob-pw\r\n")
    assert main(["passwd", str(path), "bob"]) == 0
    before = dict(line.split(":", 1) for line in path.read_text(encoding="utf-8").splitlines())

    stdin("alice-2\n")
    assert main(["passwd", str(path), "alice"]) == 0
    assert f"changed alice in {path}" in capsys.readouterr().err
    after = dict(line.split(":", 1) for line in path.read_text(encoding="utf-8").splitlines())
    assert list(after) == ["alice", "bob"]
    assert after["alice"] != before["alice"]
    assert after["bob"] == before["bob"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    database = UserDatabase.load(path)
    assert database.verify("alice", "alice-2")
    assert not database.verify("alice", "alice-1")
    assert database.verify("bob", "bob-pw")


def test_passwd_same_password_again_still_changes_the_hash(
    tmp_path: Path, stdin: Callable[[str], None]
) -> None:
    path = tmp_path / "users"
    stdin("same\n")
    assert main(["passwd", str(path), "alice"]) == 0
    first = path.read_text(encoding="utf-8")
    stdin("same\n")
    assert main(["passwd", str(path), "alice"]) == 0
    assert path.read_text(encoding="utf-8") != first  # a new salt


@pytest.mark.parametrize("password", ["pass:word", "pässwörd"])
def test_passwd_password_with_colon_or_non_ascii(
    tmp_path: Path, stdin: Callable[[str], None], password: str
) -> None:
    path = tmp_path / "users"
    stdin(password + "\n")
    assert main(["passwd", str(path), "alice"]) == 0
    assert password not in path.read_text(encoding="utf-8")
    assert UserDatabase.load(path).verify("alice", password)


@pytest.mark.parametrize("name", ["al:ice", ":", ""])
def test_passwd_refuses_a_name_with_a_colon_or_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stdin: Callable[[str], None], name: str
) -> None:
    path = tmp_path / "users"
    stdin("secret\n")
    assert main(["passwd", str(path), name]) == 2
    assert capsys.readouterr().err.startswith("socks5d: user name")
    assert not path.exists()


@pytest.mark.parametrize("typed", ["", "\n", "\r\n"])
def test_passwd_refuses_an_empty_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stdin: Callable[[str], None], typed: str
) -> None:
    path = tmp_path / "users"
    stdin(typed)
    assert main(["passwd", str(path), "alice"]) == 2
    assert "password" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_passwd_keeps_the_owner_group_and_mode_of_an_existing_file(
    tmp_path: Path, stdin: Callable[[str], None]
) -> None:
    path = make_users_file(tmp_path / "users", stdin, 0o640)
    os.chown(path, 12345, 12345)
    stdin("bob-pw\n")
    assert main(["passwd", str(path), "bob"]) == 0
    after = path.stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (12345, 12345, 0o640)
    database = UserDatabase.load(path)
    assert database.verify("alice", "secret")
    assert database.verify("bob", "bob-pw")
    assert [p.name for p in tmp_path.iterdir()] == ["users"]  # no temporary file left


def test_passwd_warns_when_the_file_it_rewrote_is_writable_by_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stdin: Callable[[str], None]
) -> None:
    path = make_users_file(tmp_path / "users", stdin, 0o646)
    capsys.readouterr()
    stdin("bob-pw\n")
    assert main(["passwd", str(path), "bob"]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o646  # kept, as it was, but said
    assert capsys.readouterr().err == (
        f"added bob in {path}\nsocks5d: warning: {writable_warning(path, 'others', 0o646)}\n"
    )


def test_passwd_refusal_leaves_an_existing_file_alone(
    tmp_path: Path, stdin: Callable[[str], None]
) -> None:
    path = tmp_path / "users"
    stdin("secret\n")
    assert main(["passwd", str(path), "alice"]) == 0
    before = path.read_text(encoding="utf-8")
    stdin("\n")
    assert main(["passwd", str(path), "alice"]) == 2
    assert path.read_text(encoding="utf-8") == before


# --- serve, refused before binding ---------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:1080", "192.0.2.1:1080", "[::]:1080"])
def test_serve_refuses_an_open_proxy(capsys: pytest.CaptureFixture[str], listen: str) -> None:
    assert main(["serve", "--listen", listen]) == 2
    err = capsys.readouterr().err
    assert err.startswith("socks5d: listen: ")
    assert "open proxy" in err
    assert "--allow-open-proxy" in err


def test_serve_refuses_an_open_proxy_from_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write(tmp_path / "socks5d.toml", 'listen = "0.0.0.0:1080"\n')
    assert main(["serve", "--config", str(config_file)]) == 2
    assert "open proxy" in capsys.readouterr().err


def test_serve_with_userpass_needs_a_users_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--listen", "127.0.0.1:0", "--auth", "userpass"]) == 2
    assert capsys.readouterr().err.startswith("socks5d: users: ")


def test_serve_reports_a_missing_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent"
    assert main(["serve", "--listen", "127.0.0.1:0", "--users", str(absent)]) == 2
    assert capsys.readouterr().err.startswith(f"socks5d: users: {absent}: ")


# --- serve, as a process -------------------------------------------------------------------------


class ServeProcess:
    """`python -m socks5d serve ...` with stderr read line by line against a deadline."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "socks5d", "serve", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        self._stderr = self.process.stderr
        self._pending = b""
        self.lines: list[str] = []

    def read_line(self, deadline: float) -> str:
        """The next stderr line; fails if the process ends or the deadline passes first."""
        fd = self._stderr.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not ready:
                raise AssertionError(f"no complete stderr line in time; got {self.lines}")
            chunk = os.read(fd, 4096)
            if not chunk:
                self.process.wait(PROCESS_TIMEOUT)
                raise AssertionError(
                    f"exited {self.process.returncode} early: {self.lines} {self._pending!r}"
                )
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        self.lines.append(line.decode())
        return self.lines[-1]

    def wait_listening(self, count: int) -> list[dict[str, Any]]:
        """Read JSON lines until `count` "listening on" entries; return those entries."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        listening: list[dict[str, Any]] = []
        while len(listening) < count:
            entry = json.loads(self.read_line(deadline))
            if entry["message"].startswith("listening on"):
                listening.append(entry)
        return listening

    def wait_for(self, message: Callable[[str], bool]) -> list[dict[str, Any]]:
        """Read JSON lines until one whose message is wanted; return all of them, it last."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        entries: list[dict[str, Any]] = []
        while not entries or not message(entries[-1]["message"]):
            entries.append(json.loads(self.read_line(deadline)))
        return entries

    def stop(self, signum: int) -> tuple[int, list[dict[str, Any]]]:
        """Send `signum`; return the exit status and the JSON lines written after it."""
        self.process.send_signal(signum)
        _, rest = self.process.communicate(timeout=PROCESS_TIMEOUT)
        text = (self._pending + rest).decode()
        self._pending = b""
        return self.process.returncode, [json.loads(line) for line in text.splitlines()]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=PROCESS_TIMEOUT)  # reaps and closes the pipe


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        process = ServeProcess(list(args), tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def _listener_port(entry: dict[str, Any]) -> tuple[str, int]:
    host, _, port = entry["listener"].rpartition(":")
    return host.strip("[]"), int(port)


def _greet(address: tuple[str, int]) -> MethodSelected:
    client = ClientConnection()
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROCESS_TIMEOUT)
        sock.connect(address)
        sock.sendall(client.send(Greeting((AuthMethod.NO_AUTHENTICATION_REQUIRED,))))
        while (event := client.next_event()) is NEED_DATA:
            client.receive_data(sock.recv(4096))
    assert isinstance(event, MethodSelected)
    return event


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_logs_listening_in_json_and_exits_0_on_signal(
    serve: Callable[..., ServeProcess], signum: int
) -> None:
    process = serve("--listen", "127.0.0.1:0", "--log-format", "json")
    (entry,) = process.wait_listening(1)
    assert entry["level"] == "info"
    host, port = _listener_port(entry)
    assert host == "127.0.0.1"
    assert port != 0
    assert entry["message"] == f"listening on 127.0.0.1:{port}"

    status, after = process.stop(signum)
    assert status == 0
    assert any(line["message"] == "shutting down" for line in after)
    assert all(line["level"] != "error" for line in after)


def test_serve_answers_a_greeting_before_it_is_stopped(serve: Callable[..., ServeProcess]) -> None:
    process = serve("--listen", "127.0.0.1:0", "--log-format", "json")
    (entry,) = process.wait_listening(1)
    assert _greet(_listener_port(entry)).method == AuthMethod.NO_AUTHENTICATION_REQUIRED
    status, _ = process.stop(signal.SIGTERM)
    assert status == 0


def test_serve_listens_on_ipv4_and_ipv6_loopback(serve: Callable[..., ServeProcess]) -> None:
    process = serve("--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--log-format", "json")
    entries = process.wait_listening(2)
    hosts = sorted(_listener_port(entry)[0] for entry in entries)
    assert hosts == ["127.0.0.1", "::1"]
    assert all(_listener_port(entry)[1] != 0 for entry in entries)
    ipv6 = next(entry for entry in entries if entry["listener"].startswith("["))
    assert ipv6["message"] == f"listening on {ipv6['listener']}"
    for entry in entries:
        _greet(_listener_port(entry))
    status, _ = process.stop(signal.SIGTERM)
    assert status == 0


def test_serve_with_a_config_file_uses_its_settings(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    write(tmp_path / "socks5d.toml", 'listen = ["127.0.0.1:0"]\nlog_format = "json"\n')
    process = serve("--config", "socks5d.toml")
    (entry,) = process.wait_listening(1)
    assert _listener_port(entry)[0] == "127.0.0.1"
    status, _ = process.stop(signal.SIGTERM)
    assert status == 0


def _socks4_answer(address: tuple[str, int]) -> bytes:
    """What the server sends back to a SOCKS4 CONNECT to a closed port: a reply, or nothing."""
    with socket.create_connection(address, timeout=PROCESS_TIMEOUT) as sock:
        sock.sendall(bytes([4, 1, 0, 9, 127, 0, 0, 1]) + b"\x00")
        answer = bytearray()
        while chunk := sock.recv(16):
            answer += chunk
        return bytes(answer)


def test_serve_no_socks4_turns_socks4_off(serve: Callable[..., ServeProcess]) -> None:
    with_socks4 = serve("--listen", "127.0.0.1:0", "--log-format", "json")
    (entry,) = with_socks4.wait_listening(1)
    assert _socks4_answer(_listener_port(entry))[:2] == bytes([0, 91])  # rejected: refused
    assert with_socks4.stop(signal.SIGTERM)[0] == 0

    without = serve("--listen", "127.0.0.1:0", "--log-format", "json", "--no-socks4")
    (entry,) = without.wait_listening(1)
    assert _socks4_answer(_listener_port(entry)) == b""  # closed, no reply
    assert without.stop(signal.SIGTERM)[0] == 0


def test_serve_warns_at_start_about_a_users_file_others_can_write(
    tmp_path: Path, serve: Callable[..., ServeProcess], stdin: Callable[[str], None]
) -> None:
    users = make_users_file(tmp_path / "users", stdin, 0o660)
    process = serve("--listen", "127.0.0.1:0", "--users", str(users), "--log-format", "json")
    started = process.wait_for(lambda message: " ready: " in message)
    warnings = [entry for entry in started if entry["level"] == "warning"]
    assert [(entry["logger"], entry["message"]) for entry in warnings] == [
        ("socks5d.cli", writable_warning(users, "group", 0o660))
    ]
    assert process.stop(signal.SIGTERM)[0] == 0


def test_serve_warns_on_reload_about_a_users_file_others_can_write(
    tmp_path: Path, serve: Callable[..., ServeProcess], stdin: Callable[[str], None]
) -> None:
    users = make_users_file(tmp_path / "users", stdin)
    process = serve("--listen", "127.0.0.1:0", "--users", str(users), "--log-format", "json")
    started = process.wait_for(lambda message: " ready: " in message)
    assert all(entry["level"] == "info" for entry in started)  # private file: no warning
    users.chmod(0o622)
    process.process.send_signal(signal.SIGHUP)
    reloaded = process.wait_for(lambda message: message == "configuration reloaded")
    assert [(entry["level"], entry["message"]) for entry in reloaded[:-1]] == [
        ("warning", writable_warning(users, "group and others", 0o622))
    ]
    assert process.stop(signal.SIGTERM)[0] == 0


def test_serve_help_names_the_checkout_install_not_a_package_index(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "pip install '.[fast]' in a socks5d checkout" in " ".join(text.split())
    assert "socks5d[" not in text
    for flag in ("--admin-listen", "--log-file", "--log-level", "--user", "--group"):
        assert flag in text
