"""The client against our server, once per face (asyncio and blocking, `faces.py`): BIND and
UDP ASSOCIATE over loopback; the server's access record is the proof of what went over the
wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from socks5d.errors import ProxyTimeout, TTLExpired
from socks5d.proto import AuthMethod, CommandRequest, MethodSelected
from vectors import REPLY_SUCCEEDED, REPLY_SUCCEEDED_PEER

from .conftest import (
    IO_TIMEOUT,
    FakeProxy,
    ProxySide,
    SpyResolver,
    records_of,
)
from .faces import Face, FaceBinding

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
        assert binding.peer == (peer_host, peer_port)
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
    ("proxy", "hop"),
    [
        pytest.param(lambda server: server.url("socks4"), 1, id="socks4"),
        pytest.param(lambda server: [server.url(), server.url("socks4a")], 2, id="chain-socks4a"),
        pytest.param(lambda server: [server.url(), "http://127.0.0.1:9"], 2, id="chain-http"),
    ],
)
async def test_udp_needs_socks5_at_every_hop_and_names_the_one_that_is_not(
    face: Face, proxy: Callable[[Any], Any], hop: int, socks_server
) -> None:
    with pytest.raises(ValueError, match=f"SOCKS5 at every hop: hop {hop}, "):
        await face.open_udp(proxy=proxy(socks_server))


async def test_udp_through_a_chain_of_two_goes_through_both_associations(
    face: Face, start_server, udp_echo
) -> None:
    """Each hop holds an association; the datagram leaves the last one, and the answer comes
    back through both, unwrapped to the echo server's own address."""
    first, second = start_server(), start_server()
    host, port = udp_echo()
    async with await face.open_udp(proxy=[first.url(), second.url()]) as udp:
        await udp.sendto(b"through two", (host, port))
        data, sender = await udp.recvfrom(timeout=5)
    assert (data, sender) == (b"through two", (host, port))
    # the first: its own association, and the CONNECT carrying the second's control
    assert sorted(r["command"] for r in first.wait_records(2)) == ["connect", "udp_associate"]
    last = second.wait_records(1)[0]
    assert (last["command"], last["bytes_up"], last["bytes_down"]) == ("udp_associate", 11, 11)


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
