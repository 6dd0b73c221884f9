"""The asyncio client against our server: CONNECT, BIND and UDP ASSOCIATE over loopback.

The server's access record is the proof of what went over the wire: which protocol, which
destination (a name when the proxy resolved it, an address when we did), which user.
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Callable
from typing import Any

import pytest

from socks5d.client import Binding, Proxy, connect, open_bind, open_connection, open_udp
from socks5d.errors import AuthFailed, ProxyTimeout, TTLExpired
from socks5d.proto import Address, AuthMethod, CommandRequest, MethodSelected
from vectors import REPLY_SUCCEEDED, REPLY_SUCCEEDED_PEER

from .conftest import (
    BANNER,
    HTTP_BODY,
    HTTP_REQUEST,
    IO_TIMEOUT,
    NAME_SCHEMES,
    FakeProxy,
    ProxySide,
    SpyResolver,
    fetch,
    records_of,
)


async def echo_round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    """Send `data`, half-close, and read the echo until EOF; closes the writer."""
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), IO_TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()


# --- CONNECT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_open_connection_to_ipv4_carries_data_both_ways(
    scheme: str, socks_server, tcp_echo
) -> None:
    host, port = tcp_echo()
    reader, writer = await open_connection(host, port, proxy=socks_server.url(scheme))
    assert await echo_round_trip(reader, writer, b"hello through socks") == b"hello through socks"
    record = (await records_of(socks_server))[0]
    assert (record["protocol"], record["command"], record["reply"]) == (
        "socks5",
        "connect",
        "succeeded",
    )
    assert record["destination"] == f"127.0.0.1:{port}"
    assert (record["bytes_up"], record["bytes_down"]) == (19, 19)


async def test_open_connection_to_ipv6_through_a_proxy_on_ipv6(start_server, tcp_echo) -> None:
    server = start_server(listen=["[::1]:0"])
    host, port = tcp_echo("::1")
    reader, writer = await open_connection(host, port, proxy=server.url("socks5h"))
    assert await echo_round_trip(reader, writer, b"over ipv6") == b"over ipv6"
    record = (await records_of(server))[0]
    assert record["destination"] == f"[::1]:{port}"
    assert record["client"].startswith("[::1]:")


@pytest.mark.parametrize(("scheme", "sent_host", "protocol"), NAME_SCHEMES)
async def test_name_is_sent_or_resolved_here_as_the_scheme_says(
    scheme: str, sent_host: str, protocol: str, socks_server, tcp_echo
) -> None:
    _, port = tcp_echo()
    reader, writer = await open_connection("localhost", port, proxy=socks_server.url(scheme))
    assert await echo_round_trip(reader, writer, b"by name") == b"by name"
    record = (await records_of(socks_server))[0]
    assert (record["protocol"], record["destination"]) == (protocol, f"{sent_host}:{port}")


async def test_proxy_object_works_like_its_url(socks_server, tcp_echo) -> None:
    host, port = tcp_echo()
    proxy = Proxy(socks_server.host, socks_server.port, version=5, remote_dns=False)
    reader, writer = await open_connection(host, port, proxy=proxy)
    assert await echo_round_trip(reader, writer, b"keywords") == b"keywords"


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


async def test_streams_give_the_same_http_response_as_a_direct_fetch(
    socks_server, http_origin
) -> None:
    direct = await asyncio.to_thread(fetch, http_origin, HTTP_REQUEST)
    reader, writer = await open_connection(*http_origin, proxy=socks_server.url())
    assert await echo_round_trip(reader, writer, HTTP_REQUEST) == direct
    assert direct.endswith(HTTP_BODY)


async def test_banner_of_a_destination_that_speaks_first_is_not_lost(
    socks_server, tcp_echo
) -> None:
    host, port = tcp_echo(banner=BANNER)
    reader, writer = await open_connection(host, port, proxy=socks_server.url())
    assert await asyncio.wait_for(reader.readexactly(len(BANNER)), IO_TIMEOUT) == BANNER
    assert await echo_round_trip(reader, writer, b"EHLO") == b"EHLO"


async def test_bytes_arriving_with_the_reply_stay_in_the_socket(
    fake_proxy: Callable[..., FakeProxy],
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED + BANNER)  # one write: the reply and the banner together

    proxy = fake_proxy(script)
    sock = await connect("127.0.0.1", 25, proxy=proxy.url())
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        assert await asyncio.wait_for(reader.read(), IO_TIMEOUT) == BANNER
    finally:
        writer.close()
        await writer.wait_closed()


async def test_username_and_password_accepted_and_recorded(start_server, tcp_echo) -> None:
    server = start_server(users={"alice": "s3cret"})
    host, port = tcp_echo()
    url = server.url("socks5h", "alice", "s3cret")
    reader, writer = await open_connection(host, port, proxy=url)
    assert await echo_round_trip(reader, writer, b"authenticated") == b"authenticated"
    assert (await records_of(server))[0]["user"] == "alice"


async def test_wrong_password_raises_auth_failed(start_server, tcp_echo) -> None:
    server = start_server(users={"alice": "s3cret"})
    with pytest.raises(AuthFailed):
        await connect(*tcp_echo(), proxy=server.url("socks5h", "alice", "wrong"))
    assert (await records_of(server))[0]["user"] == "alice"


async def test_proxy_requiring_a_password_when_none_is_given_raises_auth_failed(
    start_server, tcp_echo
) -> None:
    server = start_server(users={"alice": "s3cret"})
    with pytest.raises(AuthFailed, match="none of the methods"):
        await connect(*tcp_echo(), proxy=server.url("socks5h"))


async def test_chain_of_two_servers_connects_through_both(start_server, tcp_echo) -> None:
    first = start_server(users={"alice": "s3cret"})
    second = start_server()
    host, port = tcp_echo()
    chain = [first.url("socks5", "alice", "s3cret"), second.url("socks5h")]
    reader, writer = await open_connection(host, port, proxy=chain)
    assert await echo_round_trip(reader, writer, b"two hops") == b"two hops"
    outer = (await records_of(first))[0]
    inner = (await records_of(second))[0]
    assert (outer["command"], outer["destination"], outer["user"]) == (
        "connect",
        f"127.0.0.1:{second.port}",
        "alice",
    )
    assert (inner["command"], inner["destination"]) == ("connect", f"127.0.0.1:{port}")
    assert (inner["bytes_up"], inner["bytes_down"]) == (8, 8)
    # the outer tunnel also carried the handshake with the second server
    assert outer["bytes_up"] > 8 and outer["bytes_down"] > 8


async def test_chain_resolves_the_last_name_at_the_last_proxy(start_server, tcp_echo) -> None:
    first, second = start_server(), start_server()
    _, port = tcp_echo()
    chain = [Proxy.from_url(first.url("socks5")), second.url("socks5h")]
    reader, writer = await open_connection("localhost", port, proxy=chain)
    assert await echo_round_trip(reader, writer, b"named") == b"named"
    assert (await records_of(second))[0]["destination"] == f"localhost:{port}"


# --- BIND -------------------------------------------------------------------------------------


async def _connect_peer(binding: Binding) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(str(binding.address.host), binding.address.port)


async def test_bind_accept_gives_streams_to_the_peer_that_connected(socks_server) -> None:
    binding = await open_bind("127.0.0.1", 0, proxy=socks_server.url())
    assert binding.address.port != 0
    peer_reader, peer_writer = await _connect_peer(binding)
    try:
        reader, writer = await binding.accept(timeout=IO_TIMEOUT)
        peer_host, peer_port = peer_writer.get_extra_info("sockname")[:2]
        assert binding.peer == Address.from_host(peer_host, peer_port)
        peer_writer.write(b"from the peer")
        peer_writer.write_eof()
        assert await echo_round_trip(reader, writer, b"to the peer") == b"from the peer"
        assert await asyncio.wait_for(peer_reader.read(), IO_TIMEOUT) == b"to the peer"
    finally:
        peer_writer.close()
        await peer_writer.wait_closed()
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["reply"]) == ("bind", "succeeded")
    assert (record["bytes_up"], record["bytes_down"]) == (11, 13)


async def test_bind_accept_socket_gives_a_socket_connected_to_the_peer(socks_server) -> None:
    binding = await open_bind("0.0.0.0", 0, proxy=socks_server.url())
    _, peer_writer = await _connect_peer(binding)
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


async def test_bind_replies_and_peer_data_in_one_segment_are_all_kept(
    fake_proxy: Callable[..., FakeProxy],
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED + REPLY_SUCCEEDED_PEER + b"early bytes")

    proxy = fake_proxy(script)
    binding = await open_bind("0.0.0.0", 0, proxy=proxy.url())
    reader, writer = await binding.accept(timeout=IO_TIMEOUT)
    try:
        assert str(binding.address) == "198.51.100.7:1080"
        assert str(binding.peer) == "192.0.2.1:80"
        assert await asyncio.wait_for(reader.read(), IO_TIMEOUT) == b"early bytes"
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.timeout(10)
async def test_bind_accept_without_a_peer_raises_proxy_timeout_and_closes(socks_server) -> None:
    binding = await open_bind("127.0.0.1", 0, proxy=socks_server.url())
    with pytest.raises(ProxyTimeout):
        await binding.accept(timeout=0.2)
    record = (await records_of(socks_server))[0]
    assert record["command"] == "bind"


async def test_bind_expired_at_the_proxy_raises_ttl_expired(start_server) -> None:
    server = start_server(bind={"timeout": 0.2})
    binding = await open_bind("127.0.0.1", 0, proxy=server.url())
    with pytest.raises(TTLExpired):
        await binding.accept()
    assert (await records_of(server))[0]["reply"] == "ttl_expired"


# --- UDP ASSOCIATE ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_udp_round_trip_returns_the_echo_and_its_address(
    scheme: str, socks_server, udp_echo
) -> None:
    echo = udp_echo()
    async with await open_udp(proxy=socks_server.url(scheme)) as udp:
        await udp.sendto(b"datagram one", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"datagram one", echo)
        await udp.sendto(b"two", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"two", echo)
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["reply"]) == ("udp_associate", "succeeded")
    assert (record["bytes_up"], record["bytes_down"]) == (15, 15)


@pytest.mark.parametrize(("scheme", "resolved_by_proxy"), [("socks5h", True), ("socks5", False)])
async def test_udp_to_a_name_is_resolved_where_the_scheme_says(
    scheme: str, resolved_by_proxy: bool, start_server_with_resolver, udp_echo
) -> None:
    resolver = SpyResolver()
    server = start_server_with_resolver(resolver)
    echo_host, echo_port = udp_echo()
    async with await open_udp(proxy=server.url(scheme)) as udp:
        await udp.sendto(b"by name", ("localhost", echo_port))
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"by name", (echo_host, echo_port))
    assert resolver.asked == ([("localhost", echo_port)] if resolved_by_proxy else [])


async def test_closing_the_endpoint_closes_the_control_connection(socks_server) -> None:
    udp = await open_udp(proxy=socks_server.url())
    await udp.close()
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["outcome"]) == ("udp_associate", "closed")


async def test_recvfrom_raises_connection_error_when_the_server_ends_the_association(
    start_server, udp_echo
) -> None:
    server = start_server(udp={"idle_timeout": 0.5})
    echo = udp_echo()
    async with await open_udp(proxy=server.url()) as udp:
        await udp.sendto(b"once", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"once", echo)
        with pytest.raises(ConnectionError):
            await udp.recvfrom(timeout=IO_TIMEOUT)
        with pytest.raises(ConnectionError):
            await udp.sendto(b"too late", echo)
    assert (await records_of(server))[0]["outcome"] == "idle timeout"


async def test_recvfrom_with_nothing_to_receive_raises_proxy_timeout(socks_server) -> None:
    async with await open_udp(proxy=socks_server.url()) as udp:
        with pytest.raises(ProxyTimeout):
            await udp.recvfrom(timeout=0.1)


@pytest.mark.parametrize(
    "proxy",
    [
        pytest.param(lambda server: server.url("socks4"), id="socks4"),
        pytest.param(lambda server: [server.url(), server.url()], id="chain"),
    ],
)
async def test_udp_needs_exactly_one_socks5_proxy(
    proxy: Callable[[Any], Any], socks_server
) -> None:
    with pytest.raises(ValueError, match="exactly one SOCKS5 proxy"):
        await open_udp(proxy=proxy(socks_server))


async def test_udp_request_names_all_zeros_as_its_own_address(
    fake_proxy: Callable[..., FakeProxy],
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED)
        side.wait_for_close()

    proxy = fake_proxy(script)
    udp = await open_udp(proxy=proxy.url())
    await udp.close()
    request = proxy.received[1]
    assert isinstance(request, CommandRequest)
    # RFC 1928 §6: "the client MUST use a port number and address of all zeros"
    assert str(request.destination) == "0.0.0.0:0"
