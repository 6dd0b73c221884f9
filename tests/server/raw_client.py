"""A SOCKS5 client made of plain blocking sockets, for poking the server byte by byte.

Well-formed messages come from the `proto` codecs (`request_bytes`, `userpass_bytes`);
malformed ones are written out by the tests themselves. Replies are read one octet at a time,
so nothing a destination sends after the reply is swallowed by the handshake.
"""

from __future__ import annotations

import socket
from typing import Any

from socks5d.proto import (
    NEED_DATA,
    SOCKS5_VERSION,
    Address,
    AuthMethod,
    AuthResult,
    ClientConnection,
    Command,
    CommandReply,
    CommandRequest,
    Greeting,
    MethodSelected,
    UserPassAuth,
)
from socks5d.proto.buffer import Cursor, NeedData
from socks5d.proto.constants import USERPASS_VERSION
from socks5d.proto.rfc1928 import decode_reply, encode_request

#: Seconds any single blocking socket call of a test may take before the test fails.
IO_TIMEOUT = 5.0


def connect(server: Any) -> socket.socket:
    """A TCP connection to the SOCKS server of a `RunningServer` (or any `.address`)."""
    sock = socket.create_connection(server.address, timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def greeting_bytes(*methods: int) -> bytes:
    """VER, NMETHODS, METHODS - any count, including the illegal zero."""
    return bytes([SOCKS5_VERSION, len(methods), *methods])


def userpass_bytes(username: str, password: str, version: int = USERPASS_VERSION) -> bytes:
    """RFC 1929 request: VER, ULEN, UNAME, PLEN, PASSWD."""
    name, secret = username.encode(), password.encode()
    return bytes([version, len(name)]) + name + bytes([len(secret)]) + secret


def request_bytes(command: Command, destination: Address) -> bytes:
    """VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT."""
    return encode_request(CommandRequest(command, destination))


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


def read_reply(sock: socket.socket) -> tuple[CommandReply, bytes]:
    """Read one RFC 1928 reply; returns it and its exact bytes."""
    data = b""
    while True:
        try:
            return decode_reply(Cursor(data)), data
        except NeedData:
            data += recv_exactly(sock, 1)


def open_tunnel(
    server: Any,
    destination: Address,
    *,
    username: str | None = None,
    password: str = "",
) -> tuple[socket.socket, CommandReply]:
    """A well-formed handshake with `ClientConnection`; returns the socket and the reply.

    Offers username/password when `username` is given, no authentication otherwise.
    """
    sock = connect(server)
    try:
        client = ClientConnection()
        method = (
            AuthMethod.USERNAME_PASSWORD
            if username is not None
            else AuthMethod.NO_AUTHENTICATION_REQUIRED
        )
        sock.sendall(client.send(Greeting((method,))))
        while True:
            event = client.next_event()
            if isinstance(event, MethodSelected):
                assert event.method == method, f"server selected {event.method:#04x}"
                if username is not None:
                    sock.sendall(client.send(UserPassAuth(username, password)))
                else:
                    sock.sendall(client.send(CommandRequest(Command.CONNECT, destination)))
            elif isinstance(event, AuthResult):
                assert event.success, f"authentication failed with status {event.status}"
                sock.sendall(client.send(CommandRequest(Command.CONNECT, destination)))
            elif isinstance(event, CommandReply):
                return sock, event
            elif event is NEED_DATA:  # one octet at a time: relay data stays in the socket
                client.receive_data(sock.recv(1))
            else:
                raise AssertionError(f"unexpected {event!r} during the handshake")
    except BaseException:
        sock.close()
        raise


def loopback_address(sock: socket.socket) -> Address:
    """The SOCKS address of a listening socket."""
    host, port = sock.getsockname()[:2]
    return Address.from_host(host, port)
