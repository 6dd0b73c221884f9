"""What only the blocking client has: `create_connection()` and a blocking socket without
the handshake's timeout. What both faces do is tested once per face in
test_client_connect.py and test_client_bind_udp.py.
"""

from __future__ import annotations

import http.client
import socket

from socks5d.client import sync

from .conftest import HTTP_BODY, IO_TIMEOUT, read_until_eof


def echo_round_trip(sock: socket.socket, data: bytes) -> bytes:
    """Send `data`, half-close, read until EOF; closes the socket."""
    with sock:
        sock.settimeout(IO_TIMEOUT)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_until_eof(sock)


def test_create_connection_takes_an_address_tuple_like_the_socket_module(
    socks_server, tcp_echo
) -> None:
    sock = sync.create_connection(tcp_echo(), IO_TIMEOUT, proxy=socks_server.url())
    assert echo_round_trip(sock, b"tuple") == b"tuple"


def test_connect_returns_a_blocking_socket_another_library_can_use(
    socks_server, http_origin
) -> None:
    sock = sync.connect(*http_origin, proxy=socks_server.url())
    assert sock.gettimeout() is None  # the handshake's timeout is not left on the socket
    connection = http.client.HTTPConnection(*http_origin)
    connection.sock = sock
    try:
        connection.request("GET", "/via/socks")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, HTTP_BODY)
    finally:
        connection.close()
