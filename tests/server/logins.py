"""RFC 1929 logins over plain sockets from chosen loopback addresses, and servers whose users
have a real scrypt cost (the password checks take as long as they do in production).

A second client IP on the same machine is any other 127.x.y.z: the socket is bound to it
before connecting. Replies are read octet by octet, so nothing the server sends later is
swallowed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conftest import RunningServer
from socks5d.config import build_config
from socks5d.constants import USERPASS_VERSION
from socks5d.proto import SOCKS5_VERSION, AuthMethod
from socks5d.server import Server
from socks5d.users import DEFAULT_COST, UserDatabase, hash_password

from .raw_client import IO_TIMEOUT, greeting_bytes, read_until_eof, recv_exactly, userpass_bytes

CLIENT = "127.0.0.1"
USERPASS = AuthMethod.USERNAME_PASSWORD
#: RFC 1929 STATUS X'00': success; anything else is a failure.
LOGIN_SUCCESS = 0
#: RFC 1929 STATUS of our failures (any value but X'00' is one).
LOGIN_FAILURE = 1
#: The method selection a pipelined login is answered with first.
USERPASS_SELECTED = bytes([SOCKS5_VERSION, USERPASS])


def connect_from(server: Any, source: str = CLIENT, timeout: float = IO_TIMEOUT) -> socket.socket:
    """A TCP connection to the server from the loopback address `source`."""
    sock = socket.create_connection(server.address, timeout=timeout, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def greet(sock: socket.socket, method: int) -> None:
    """Send a one-method greeting; the server must select that method."""
    sock.sendall(greeting_bytes(method))
    assert recv_exactly(sock, 2) == bytes([SOCKS5_VERSION, method])


def start_login(server: Any, source: str = CLIENT) -> socket.socket:
    """A connection that offered username/password and had it selected."""
    sock = connect_from(server, source)
    try:
        greet(sock, USERPASS)
    except BaseException:
        sock.close()
        raise
    return sock


def send_login(sock: socket.socket, username: str, password: str) -> int:
    """Send RFC 1929 credentials; returns STATUS (after a failure, the server closes)."""
    sock.sendall(userpass_bytes(username, password))
    version, status = recv_exactly(sock, 2)
    assert version == USERPASS_VERSION
    if status != LOGIN_SUCCESS:
        assert read_until_eof(sock) == b""
    return status


def log_in(server: Any, username: str, password: str, source: str = CLIENT) -> int:
    """One login on a connection of its own; returns STATUS."""
    with start_login(server, source) as sock:
        return send_login(sock, username, password)


def pipelined_login(
    server: Any, username: str, password: str, source: str = CLIENT
) -> socket.socket:
    """Greeting and credentials in one write, nothing read: the login is under way once the
    server has the bytes."""
    sock = connect_from(server, source)
    try:
        sock.sendall(greeting_bytes(USERPASS) + userpass_bytes(username, password))
    except BaseException:
        sock.close()
        raise
    return sock


def pipelined_answer(sock: socket.socket) -> int | None:
    """What a pipelined login got: None when the connection was closed before the greeting,
    else the RFC 1929 STATUS (after a failure the server must have closed)."""
    first = sock.recv(1)
    if not first:
        return None
    selected = first + recv_exactly(sock, 1)
    assert selected == USERPASS_SELECTED
    version, status = recv_exactly(sock, 2)
    assert version == USERPASS_VERSION
    if status != LOGIN_SUCCESS:
        assert read_until_eof(sock) == b""
    return status


def _server_side_unread(peers: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """From /proc/net/tcp: the bytes the server has not read yet on its end of each IPv4
    connection whose remote end is one of `peers`."""
    unread: dict[tuple[str, int], int] = {}
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            address, port = fields[2].split(":")
            remote = (socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16))
            if remote in peers:
                unread[remote] = int(fields[4].split(":")[1], 16)
    return unread


def wait_until_read_by_server(sockets: list[socket.socket], timeout: float = IO_TIMEOUT) -> None:
    """Poll until the server has read everything sent on `sockets` (their server ends have
    nothing queued). What it read is then handled before anything that arrives later: a
    read wakes its session before the next round of readiness."""
    peers = {sock.getsockname()[:2] for sock in sockets}
    deadline = time.monotonic() + timeout
    while True:
        unread = _server_side_unread(peers)
        if len(unread) == len(peers) and not any(unread.values()):
            return
        assert time.monotonic() < deadline, f"the server left unread: {unread}"
        time.sleep(0.005)  # polling the kernel's queues, under the deadline


def flood_sources(count: int) -> list[str]:
    """`count` distinct loopback addresses other than 127.0.0.1: 127.0.1.1, 127.0.1.2, ..."""
    return [f"127.0.{1 + index // 250}.{1 + index % 250}" for index in range(count)]


@contextmanager
def slow_hash_server(
    users: dict[str, str],
    *,
    cost: tuple[int, int, int] = DEFAULT_COST,
    event_loop: str = "asyncio",
    **settings: Any,
) -> Iterator[RunningServer]:
    """A username/password server on 127.0.0.1 whose users' hashes have scrypt cost `cost`
    (the production default unless told), on `event_loop`; stopped (and checked for
    leftover tasks) on exit."""
    database = UserDatabase({name: hash_password(pw, cost) for name, pw in users.items()})
    config = build_config(settings, listen=["127.0.0.1:0"], users="users")
    running = RunningServer(Server(config, users=database), event_loop).start()
    try:
        yield running
    finally:
        running.stop()
