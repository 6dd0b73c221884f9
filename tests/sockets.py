"""Blocking-socket helpers every test folder uses: read exactly so many bytes, or all until EOF.

Both fail loudly rather than hang: the caller's socket has a timeout, and an early EOF is an
AssertionError naming what did arrive.
"""

from __future__ import annotations

import socket


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    """Exactly `count` bytes; fails the test on EOF before that."""
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {bytes(data)!r}, expected {count} bytes")
        data += chunk
    return bytes(data)


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes its sending side."""
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)
