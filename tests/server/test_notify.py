"""The service manager's notification protocol (`socks5d.server.notify`), over sockets the
test owns."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from socks5d.server.notify import Notifier, message, parse_message, socket_address


def test_message_is_key_value_lines_and_newlines_in_values_cannot_add_keys() -> None:
    data = message({"READY": 1, "STATUS": "3 sessions\nREADY=0"})
    assert data == b"READY=1\nSTATUS=3 sessions READY=0\n"
    assert parse_message(data) == {"READY": "1", "STATUS": "3 sessions READY=0"}


def test_socket_address_path_and_abstract() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@sd-notify") == b"\0sd-notify"
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        socket_address("relative/path")


def test_notifications_reach_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        manager.settimeout(5)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
        assert notifier is not None
        assert notifier.ready("0 sessions")
        assert parse_message(manager.recv(4096)) == {"READY": "1", "STATUS": "0 sessions"}
        assert notifier.reloading()
        fields = parse_message(manager.recv(4096))
        assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0
        assert notifier.stopping()
        assert parse_message(manager.recv(4096)) == {"STOPPING": "1"}
        notifier.close()


def test_abstract_socket_and_a_worker_pair_with_its_pid() -> None:
    name = f"socks5d-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(b"\0" + name.encode())
        manager.settimeout(5)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None and notifier.status("busy")
        assert parse_message(manager.recv(4096)) == {"STATUS": "busy"}
        notifier.close()
    supervisor, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with supervisor, worker:
        supervisor.settimeout(5)
        assert Notifier(worker, pid=4242).ready()
        assert parse_message(supervisor.recv(4096)) == {"READY": "1", "MAINPID": "4242"}


def test_unset_or_gone_manager_never_raises(tmp_path: Path) -> None:
    assert Notifier.from_environment({}) is None
    assert Notifier.from_environment({"NOTIFY_SOCKET": "nonsense"}) is None
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert gone.ready() is False
    assert gone.status("x") is False
    gone.close()
