"""What only the asyncio client has: `connect()`'s non-blocking socket and BIND's
`accept_socket()`. What both faces do is tested once per face in
test_client_connect.py and test_client_bind_udp.py.
"""

from __future__ import annotations

import asyncio
import http.client

from socks5d.client import connect, open_bind

from .conftest import HTTP_BODY, IO_TIMEOUT


async def test_connect_returns_a_nonblocking_socket_another_library_can_use(
    socks_server, http_origin
) -> None:
    sock = await connect(*http_origin, proxy=socks_server.url())
    assert sock.getblocking() is False
    sock.setblocking(True)
    sock.settimeout(IO_TIMEOUT)

    def get_with_http_client() -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(*http_origin)
        connection.sock = sock  # http.client uses the socket as it is
        try:
            connection.request("GET", "/via/socks")
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    assert await asyncio.to_thread(get_with_http_client) == (200, HTTP_BODY)
    assert sock.fileno() == -1


async def test_bind_accept_socket_gives_a_socket_connected_to_the_peer(socks_server) -> None:
    binding = await open_bind("0.0.0.0", 0, proxy=socks_server.url())
    _, peer_writer = await asyncio.open_connection(str(binding.address.host), binding.address.port)
    loop = asyncio.get_running_loop()
    try:
        sock = await binding.accept_socket(timeout=IO_TIMEOUT)
        with sock:
            peer_writer.write(b"ping")
            await peer_writer.drain()
            assert await asyncio.wait_for(loop.sock_recv(sock, 4), IO_TIMEOUT) == b"ping"
        assert binding.peer is not None
        assert binding.peer.port == peer_writer.get_extra_info("sockname")[1]
    finally:
        peer_writer.close()
        await peer_writer.wait_closed()
