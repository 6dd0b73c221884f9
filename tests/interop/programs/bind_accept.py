"""A plain TCP server for running under socksify: bind(), listen(), accept() one connection,
read until EOF, answer with the same bytes upper-cased, close.

    socksify python bind_accept.py

Prints two lines: `HOST PORT` from getsockname() once listening, and `HOST PORT` of the peer
once accepted. Under socksify, bind() becomes a SOCKS BIND, getsockname() returns the
proxy's listening address, and accept() waits for the proxy's second reply.

Python's socket.accept() calls accept4(), which socksify does not intercept (it fails with
EINVAL), so accept() is libc's, through ctypes, with a real address buffer (socksify
crashes on a NULL one).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys

#: Seconds to wait for the peer's bytes once connected.
TIMEOUT = 10.0
#: sizeof(struct sockaddr_storage)
SOCKADDR_STORAGE_SIZE = 128


def libc_accept(listener: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
    """accept(2) from libc: the connection and the peer's IPv4 address."""
    libc = ctypes.CDLL(None, use_errno=True)
    address = ctypes.create_string_buffer(SOCKADDR_STORAGE_SIZE)
    length = ctypes.c_uint32(SOCKADDR_STORAGE_SIZE)
    while True:
        fd = libc.accept(listener.fileno(), address, ctypes.byref(length))
        if fd >= 0:
            break
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))
    raw = address.raw
    family = int.from_bytes(raw[0:2], sys.byteorder)
    if family != socket.AF_INET:
        raise OSError(errno.EAFNOSUPPORT, f"peer address family {family}")
    peer = (socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big"))
    return socket.socket(fileno=fd), peer


def main() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        host, port = listener.getsockname()
        print(host, port, flush=True)
        connection, (peer_host, peer_port) = libc_accept(listener)
        with connection:
            print(peer_host, peer_port, flush=True)
            connection.settimeout(TIMEOUT)
            received = b""
            while chunk := connection.recv(4096):
                received += chunk
            connection.sendall(received.upper())
    return 0


if __name__ == "__main__":
    sys.exit(main())
