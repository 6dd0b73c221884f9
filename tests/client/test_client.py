"""The client against our server, once per face (asyncio and blocking, `faces.py`): CONNECT,
BIND and UDP ASSOCIATE over loopback, and the names each face looks up.

The server's access record is the proof of what went over the wire: which protocol, which
destination (a name when the proxy resolved it, an address when we did), which user.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from socks5d.client import Proxy
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
from .faces import FACES, Face, FaceBinding


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest) -> Face:
    """The asyncio client, then the blocking one."""
    return Face(request.param)


# --- CONNECT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_connect_to_ipv4_carries_data_both_ways(
    face: Face, scheme: str, socks_server, tcp_echo
) -> None:
    host, port = tcp_echo()
    conn = await face.open_connection(host, port, proxy=socks_server.url(scheme))
    assert await conn.round_trip(b"hello through socks") == b"hello through socks"
    record = (await records_of(socks_server))[0]
    assert (record["protocol"], record["command"], record["reply"]) == (
        "socks5",
        "connect",
        "succeeded",
    )
    assert record["destination"] == f"127.0.0.1:{port}"
    assert (record["bytes_up"], record["bytes_down"]) == (19, 19)


async def test_connect_to_ipv6_through_a_proxy_on_ipv6(face: Face, start_server, tcp_echo) -> None:
    server = start_server(listen=["[::1]:0"])
    host, port = tcp_echo("::1")
    conn = await face.open_connection(host, port, proxy=server.url("socks5h"))
    assert conn.family == socket.AF_INET6
    assert await conn.round_trip(b"over ipv6") == b"over ipv6"
    record = (await records_of(server))[0]
    assert record["destination"] == f"[::1]:{port}"
    assert record["client"].startswith("[::1]:")


@pytest.mark.parametrize(("scheme", "sent_host", "protocol"), NAME_SCHEMES)
async def test_name_is_sent_or_resolved_here_as_the_scheme_says(
    face: Face, scheme: str, sent_host: str, protocol: str, socks_server, tcp_echo
) -> None:
    _, port = tcp_echo()
    conn = await face.open_connection("localhost", port, proxy=socks_server.url(scheme))
    assert await conn.round_trip(b"by name") == b"by name"
    record = (await records_of(socks_server))[0]
    assert (record["protocol"], record["destination"]) == (protocol, f"{sent_host}:{port}")


async def test_proxy_object_works_like_its_url(face: Face, socks_server, tcp_echo) -> None:
    host, port = tcp_echo()
    proxy = Proxy(socks_server.host, socks_server.port, version=5, remote_dns=False)
    conn = await face.open_connection(host, port, proxy=proxy)
    assert await conn.round_trip(b"keywords") == b"keywords"


async def test_tunnel_gives_the_same_http_response_as_a_direct_fetch(
    face: Face, socks_server, http_origin
) -> None:
    direct = await asyncio.to_thread(fetch, http_origin, HTTP_REQUEST)
    conn = await face.open_connection(*http_origin, proxy=socks_server.url())
    assert await conn.round_trip(HTTP_REQUEST) == direct
    assert direct.endswith(HTTP_BODY)


async def test_banner_of_a_destination_that_speaks_first_is_not_lost(
    face: Face, socks_server, tcp_echo
) -> None:
    host, port = tcp_echo(banner=BANNER)
    conn = await face.open_connection(host, port, proxy=socks_server.url())
    assert await conn.read_exactly(len(BANNER)) == BANNER
    assert await conn.round_trip(b"EHLO") == b"EHLO"


async def test_bytes_arriving_with_the_reply_stay_in_the_socket(
    face: Face, fake_proxy: Callable[..., FakeProxy]
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED + BANNER)  # one write: the reply and the banner together

    proxy = fake_proxy(script)
    conn = await face.open_connection("127.0.0.1", 25, proxy=proxy.url())
    assert await conn.read_to_eof() == BANNER


async def test_socks4_username_is_sent_as_the_userid(face: Face, socks_server, tcp_echo) -> None:
    conn = await face.open_connection(*tcp_echo(), proxy=socks_server.url("socks4", "carol"))
    assert await conn.round_trip(b"4") == b"4"
    assert (await records_of(socks_server))[0]["user"] == "carol"


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_username_and_password_accepted_and_recorded(
    face: Face, scheme: str, start_server, tcp_echo
) -> None:
    server = start_server(users={"alice": "s3cret"})
    conn = await face.open_connection(*tcp_echo(), proxy=server.url(scheme, "alice", "s3cret"))
    assert await conn.round_trip(b"authenticated") == b"authenticated"
    assert (await records_of(server))[0]["user"] == "alice"


async def test_wrong_password_raises_auth_failed(face: Face, start_server, tcp_echo) -> None:
    server = start_server(users={"alice": "s3cret"})
    with pytest.raises(AuthFailed):
        await face.open_connection(*tcp_echo(), proxy=server.url("socks5h", "alice", "wrong"))
    assert (await records_of(server))[0]["user"] == "alice"


async def test_proxy_requiring_a_password_when_none_is_given_raises_auth_failed(
    face: Face, start_server, tcp_echo
) -> None:
    server = start_server(users={"alice": "s3cret"})
    with pytest.raises(AuthFailed, match="none of the methods"):
        await face.open_connection(*tcp_echo(), proxy=server.url("socks5h"))


async def test_chain_of_two_servers_connects_through_both(
    face: Face, start_server, tcp_echo
) -> None:
    first = start_server(users={"alice": "s3cret"})
    second = start_server()
    host, port = tcp_echo()
    chain = [first.url("socks5", "alice", "s3cret"), Proxy.from_url(second.url("socks5h"))]
    conn = await face.open_connection(host, port, proxy=chain)
    assert await conn.round_trip(b"two hops") == b"two hops"
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


async def test_chain_resolves_the_last_name_at_the_last_proxy(
    face: Face, start_server, tcp_echo
) -> None:
    first, second = start_server(), start_server()
    _, port = tcp_echo()
    chain = [Proxy.from_url(first.url("socks5")), second.url("socks5h")]
    conn = await face.open_connection("localhost", port, proxy=chain)
    assert await conn.round_trip(b"named") == b"named"
    assert (await records_of(second))[0]["destination"] == f"localhost:{port}"


# --- names: both faces look up the same way -----------------------------------------------------


class Lookups:
    """Stands in for `socket.getaddrinfo` (which asyncio's `getaddrinfo` calls too): records
    each question as (host, port, family, type, proto) and answers names in `table` itself
    (only with addresses of the family asked for, as the system's resolver does).
    """

    def __init__(self, real: Callable[..., Any], table: dict[str, list[str]]) -> None:
        self.real = real
        self.table = table
        self.asked: list[tuple[Any, ...]] = []

    def __call__(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        self.asked.append((host, port, family, type, proto))
        if host not in self.table:
            return self.real(host, port, family, type, proto, flags)
        answers = [
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))
            for ip in self.table[host]
        ]
        answers = [answer for answer in answers if family in (0, answer[0])]
        if not answers:
            raise socket.gaierror(socket.EAI_NODATA, "No address associated with hostname")
        return answers


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Lookups]:
    """Factory: `lookups(table)` starts watching this process's name lookups."""

    def watch(table: dict[str, list[str]] | None = None) -> Lookups:
        watcher = Lookups(socket.getaddrinfo, table or {})
        monkeypatch.setattr(socket, "getaddrinfo", watcher)
        return watcher

    return watch


async def test_both_faces_ask_the_resolver_the_same_for_the_proxy_and_the_destination(
    face: Face, socks_server, tcp_echo, lookups: Callable[..., Lookups]
) -> None:
    _, port = tcp_echo()
    watcher = lookups()
    proxy = f"socks5://localhost:{socks_server.port}"
    conn = await face.open_connection("localhost", port, proxy=proxy)
    assert await conn.round_trip(b"looked up") == b"looked up"
    tcp = (socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    assert watcher.asked == [("localhost", socks_server.port, *tcp), ("localhost", port, *tcp)]
    record = (await records_of(socks_server))[0]
    assert record["destination"] == f"127.0.0.1:{port}"


async def test_both_faces_send_the_first_address_looked_up(
    face: Face, socks_server, tcp_echo, lookups: Callable[..., Lookups]
) -> None:
    _, port = tcp_echo()
    lookups({"dual.test": ["127.0.0.1", "::1"]})
    conn = await face.open_connection("dual.test", port, proxy=socks_server.url("socks5"))
    assert await conn.round_trip(b"first") == b"first"
    assert (await records_of(socks_server))[0]["destination"] == f"127.0.0.1:{port}"


async def test_socks4_refuses_a_name_without_an_ipv4_address_alike_on_both_faces(
    face: Face, socks_server, lookups: Callable[..., Lookups]
) -> None:
    lookups({"v6only.test": ["::1"]})
    with pytest.raises(socket.gaierror) as caught:
        await face.open_connection("v6only.test", 80, proxy=socks_server.url("socks4"))
    assert caught.value.errno == socket.EAI_NONAME
    assert "no usable address for v6only.test" in str(caught.value)


# --- BIND -------------------------------------------------------------------------------------


async def _connect_peer(binding: FaceBinding) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(str(binding.address.host), binding.address.port)


async def test_bind_accept_gives_a_connection_to_the_peer_that_connected(
    face: Face, socks_server
) -> None:
    binding = await face.open_bind("127.0.0.1", 0, proxy=socks_server.url())
    assert binding.address.port != 0
    peer_reader, peer_writer = await _connect_peer(binding)
    try:
        conn = await binding.accept(timeout=IO_TIMEOUT)
        peer_host, peer_port = peer_writer.get_extra_info("sockname")[:2]
        assert binding.peer == Address.from_host(peer_host, peer_port)
        peer_writer.write(b"from the peer")
        peer_writer.write_eof()
        assert await conn.round_trip(b"to the peer") == b"from the peer"
        assert await asyncio.wait_for(peer_reader.read(), IO_TIMEOUT) == b"to the peer"
    finally:
        peer_writer.close()
        await peer_writer.wait_closed()
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["reply"]) == ("bind", "succeeded")
    assert (record["bytes_up"], record["bytes_down"]) == (11, 13)


async def test_bind_replies_and_peer_data_in_one_segment_are_all_kept(
    face: Face, fake_proxy: Callable[..., FakeProxy]
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED + REPLY_SUCCEEDED_PEER + b"early bytes")

    proxy = fake_proxy(script)
    binding = await face.open_bind("0.0.0.0", 0, proxy=proxy.url())
    conn = await binding.accept(timeout=IO_TIMEOUT)
    early = await conn.read_to_eof()
    assert str(binding.address) == "198.51.100.7:1080"
    assert str(binding.peer) == "192.0.2.1:80"
    assert early == b"early bytes"


@pytest.mark.timeout(10)
async def test_bind_accept_without_a_peer_raises_proxy_timeout_and_closes(
    face: Face, socks_server
) -> None:
    binding = await face.open_bind("127.0.0.1", 0, proxy=socks_server.url())
    with pytest.raises(ProxyTimeout):
        await binding.accept(timeout=0.2)
    record = (await records_of(socks_server))[0]
    assert record["command"] == "bind"


async def test_bind_expired_at_the_proxy_raises_ttl_expired(face: Face, start_server) -> None:
    server = start_server(bind={"timeout": 0.2})
    binding = await face.open_bind("127.0.0.1", 0, proxy=server.url())
    with pytest.raises(TTLExpired):
        await binding.accept()
    assert (await records_of(server))[0]["reply"] == "ttl_expired"


# --- UDP ASSOCIATE ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_udp_round_trip_returns_the_echo_and_its_address(
    face: Face, scheme: str, socks_server, udp_echo
) -> None:
    echo = udp_echo()
    async with await face.open_udp(proxy=socks_server.url(scheme)) as udp:
        await udp.sendto(b"datagram one", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"datagram one", echo)
        await udp.sendto(b"two", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"two", echo)
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["reply"]) == ("udp_associate", "succeeded")
    assert (record["bytes_up"], record["bytes_down"]) == (15, 15)


@pytest.mark.parametrize(("scheme", "resolved_by_proxy"), [("socks5h", True), ("socks5", False)])
async def test_udp_to_a_name_is_resolved_where_the_scheme_says(
    face: Face, scheme: str, resolved_by_proxy: bool, start_server_with_resolver, udp_echo
) -> None:
    resolver = SpyResolver()
    server = start_server_with_resolver(resolver)
    echo_host, echo_port = udp_echo()
    async with await face.open_udp(proxy=server.url(scheme)) as udp:
        await udp.sendto(b"by name", ("localhost", echo_port))
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"by name", (echo_host, echo_port))
    assert resolver.asked == ([("localhost", echo_port)] if resolved_by_proxy else [])


async def test_closing_the_endpoint_closes_the_control_connection(face: Face, socks_server) -> None:
    udp = await face.open_udp(proxy=socks_server.url())
    await udp.close()
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["outcome"]) == ("udp_associate", "closed")


async def test_recvfrom_raises_connection_error_when_the_server_ends_the_association(
    face: Face, start_server, udp_echo
) -> None:
    server = start_server(udp={"idle_timeout": 0.5})
    echo = udp_echo()
    async with await face.open_udp(proxy=server.url()) as udp:
        await udp.sendto(b"once", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"once", echo)
        with pytest.raises(ConnectionError):
            await udp.recvfrom(timeout=IO_TIMEOUT)
        if face.name == "aio":  # the blocking sendto does not watch the control connection
            with pytest.raises(ConnectionError):
                await udp.sendto(b"too late", echo)
    assert (await records_of(server))[0]["outcome"] == "idle timeout"


async def test_recvfrom_with_nothing_to_receive_raises_proxy_timeout(
    face: Face, socks_server
) -> None:
    async with await face.open_udp(proxy=socks_server.url()) as udp:
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
    face: Face, proxy: Callable[[Any], Any], socks_server
) -> None:
    with pytest.raises(ValueError, match="exactly one SOCKS5 proxy"):
        await face.open_udp(proxy=proxy(socks_server))


async def test_udp_request_names_all_zeros_as_its_own_address(
    face: Face, fake_proxy: Callable[..., FakeProxy]
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED)
        side.wait_for_close()

    proxy = fake_proxy(script)
    udp = await face.open_udp(proxy=proxy.url())
    await udp.close()
    request = proxy.received[1]
    assert isinstance(request, CommandRequest)
    # RFC 1928 §6: "the client MUST use a port number and address of all zeros"
    assert str(request.destination) == "0.0.0.0:0"
