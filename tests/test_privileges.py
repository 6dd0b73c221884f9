"""Privileges: started as root with `user`, `socks5d serve` binds, opens its log file, then
serves as that user for good; as root without `user` it refuses a users file everyone can
read; `user` naming someone else while not root is a startup error. These tests run as root
(the suite does) and start the real process.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import IO_TIMEOUT, Processes, echo_pair, exchange, serve_fixture
from socks5d.client import sync
from socks5d.errors import ConfigError
from socks5d.server.privileges import Account, account, drop_privileges
from socks5d.users import set_password

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def serve() -> Iterator[Processes]:
    yield from serve_fixture()


def status_ids(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid and Groups lines of /proc/PID/status."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            found[key] = [int(number) for number in value.split()]
    return found


def test_serve_as_nobody_drops_root_after_binding_and_still_writes_its_log_file(
    serve: Processes, tmp_path: Path
) -> None:
    log_file = tmp_path / "socks5d.log"  # in a root-owned directory nobody cannot write
    server = serve(
        "--listen", "127.0.0.1:0", "--user", "nobody", "--log-file", str(log_file),
        log_file=log_file,
    )  # fmt: skip
    dropped = next(e for e in server.entries if e["message"].startswith("serving as user"))
    assert dropped["message"] == (
        f"serving as user nobody (uid {NOBODY.pw_uid}), group gid {NOBODY.pw_gid}"
    )
    ids = status_ids(server.pid)
    assert ids["Uid"] == [NOBODY.pw_uid] * 4  # real, effective, saved, filesystem
    assert ids["Gid"] == [NOBODY.pw_gid] * 4
    assert 0 not in ids["Groups"]
    host, port = server.listeners()[0]
    with socket.create_server(("127.0.0.1", 0)) as destination:
        destination.settimeout(IO_TIMEOUT)
        client = sync.connect(*destination.getsockname()[:2], proxy=f"socks5://{host}:{port}")
        with client, echo_pair(destination, client) as far:
            exchange(client, far, b"as nobody")
    assert server.access_record()["outcome"] == "closed"  # written after the drop
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert log_file.stat().st_uid == 0  # opened as root, before the drop


def test_root_without_user_refuses_a_users_file_everyone_can_read(
    serve: Processes, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    set_password(users, "alice", "alice-pw")
    users.chmod(0o644)
    server = serve("--listen", "127.0.0.1:0", "--users", str(users), ready=False)
    assert server.wait_exit() == 2
    assert server.rest == (
        f"socks5d: users_file: {users} is readable by every user (mode 0644) and the server "
        'would run as root: chmod 600 (or 640) it, or serve as another user (user = "socks5d")\n'
    )
    # the same file is fine once the server gives up root
    server = serve("--listen", "127.0.0.1:0", "--users", str(users), "--user", "nobody")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_account_resolves_names_numbers_and_the_users_group() -> None:
    assert account("nobody") == Account("nobody", NOBODY.pw_uid, NOBODY.pw_gid, True)
    assert account(str(NOBODY.pw_uid), "0") == Account("nobody", NOBODY.pw_uid, 0, True)
    assert account("4242") == Account("4242", 4242, 4242, False)
    with pytest.raises(ConfigError, match="no such group 'no-such-group'"):
        account("nobody", "no-such-group")


def _in_child_as_nobody(user: str) -> str:
    """drop_privileges(user) in a forked child already serving as nobody: what it did."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        outcome = "crash"
        try:
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            try:
                drop_privileges(user)
                outcome = "ok"
            except ConfigError as exc:
                outcome = str(exc)
        finally:
            os.write(write, outcome.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return outcome


def test_not_root_user_may_only_name_the_current_user() -> None:
    assert _in_child_as_nobody("nobody") == "ok"
    assert _in_child_as_nobody("root") == (
        f"user: serving as 'root' needs to be started as root; running as uid "
        f"{NOBODY.pw_uid} gid {NOBODY.pw_gid}"
    )
