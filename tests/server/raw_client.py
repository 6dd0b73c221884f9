"""A SOCKS5 client made of plain blocking sockets, for poking the server byte by byte.

Well-formed messages come from the `proto` codecs (`request_bytes`, `userpass_bytes`);
malformed ones are written out by the tests themselves. Replies are read one octet at a time,
so nothing a destination sends after the reply is swallowed by the handshake.

SOCKS4 requests and UDP request headers (RFC 1928 §7) come from the same codecs; UDP helpers
use blocking sockets with `IO_TIMEOUT`, so a datagram that never comes fails the test.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from sockets import read_until_eof as read_until_eof  # re-exported for the tests here
from sockets import recv_exactly as recv_exactly
from socks5d.constants import USERPASS_VERSION
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
    Socks4Request,
    Socks4Response,
    UdpDatagram,
    UserPassAuth,
    decode_udp,
    encode_udp,
)
from socks5d.proto.buffer import Cursor, NeedData
from socks5d.proto.rfc1928 import decode_reply, encode_request
from socks5d.proto.socks4 import decode_socks4_response, encode_socks4_request

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


#: VN, CD, DSTPORT, DSTIP of a SOCKS4 reply.
SOCKS4_REPLY_SIZE = 8


def open_request(
    server: Any, command: Command, destination: Address, *, source: str | None = None
) -> tuple[socket.socket, CommandReply]:
    """Greet without authentication, send one request; returns the socket and the (first) reply.

    `source` is the local address to connect from (e.g. "127.0.0.2"). Nothing after the reply
    is read: a BIND's second reply, relay data or EOF stay in the socket.
    """
    if source is None:
        sock = connect(server)
    else:
        sock = socket.create_connection(
            server.address, timeout=IO_TIMEOUT, source_address=(source, 0)
        )
    try:
        sock.sendall(greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        selected = recv_exactly(sock, 2)
        assert selected == bytes([SOCKS5_VERSION, AuthMethod.NO_AUTHENTICATION_REQUIRED])
        sock.sendall(request_bytes(command, destination))
        reply, _ = read_reply(sock)
        return sock, reply
    except BaseException:
        sock.close()
        raise


def socks4_request_bytes(command: Command, destination: Address, user_id: bytes = b"") -> bytes:
    """VN, CD, DSTPORT, DSTIP, USERID, NULL (and the SOCKS4a name when `destination` has one)."""
    return encode_socks4_request(Socks4Request(command, destination, user_id))


def read_socks4_reply(sock: socket.socket) -> Socks4Response:
    """Read one SOCKS4 reply (8 octets)."""
    return decode_socks4_response(Cursor(recv_exactly(sock, SOCKS4_REPLY_SIZE)))


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    """A UDP socket bound to `host` on an ephemeral port, with the test's I/O timeout."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        sock.settimeout(IO_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_packet(destination: Address, data: bytes, fragment: int = 0) -> bytes:
    """RSV, FRAG, ATYP, DST.ADDR, DST.PORT, DATA: one datagram for the relay."""
    return encode_udp(UdpDatagram(destination, data, fragment))


def receive_relayed(sock: socket.socket) -> UdpDatagram:
    """The next datagram the relay sends `sock`, its header decoded."""
    data, _ = sock.recvfrom(0x10000)
    return decode_udp(data)


def echo_once(sock: socket.socket) -> tuple[bytes, Address]:
    """Be a UDP echo server for one datagram: receive it, send it back to its sender.

    Returns the data and the address it came from.
    """
    data, sender = sock.recvfrom(0x10000)
    sock.sendto(data, sender)
    return data, Address.from_host(sender[0], sender[1])


class Background(threading.Thread):
    """Runs `target` in a thread; `result()` joins it and returns its value or re-raises."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._call = target
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:
            self._error = exc

    def result(self) -> Any:
        self.join(4 * IO_TIMEOUT)
        assert not self.is_alive(), "background thread did not finish"
        if self._error is not None:
            raise self._error
        return self._value
