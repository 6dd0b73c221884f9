"""`socks5d.client.anyio` against our server, under asyncio and under trio: CONNECT (and TLS
inside the tunnel), BIND, UDP ASSOCIATE, chains, logins and the error messages; the server's
access record is the proof of what went over the wire.

Every test runs once per backend (`[asyncio]`, `[trio]`), by anyio's pytest plugin. The
project runs pytest-asyncio in auto mode, which would claim these coroutines too and run the
trio ones on asyncio: `pytest_pycollect_makeitem` below hands this module's tests back to
anyio's plugin, and `test_each_test_runs_under_the_backend_it_is_named_for` proves it did.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Coroutine, Generator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import sniffio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream
from pytest_asyncio.plugin import PytestAsyncioFunction

from interop.tls_origin import HELLO_BODY, TlsOrigin
from interop.tls_origin import tls_origin as tls_origin  # a fixture, used by name
from socks5d.client import Proxy, aio, anyio_walk, sync
from socks5d.client import anyio as client
from socks5d.errors import AuthFailed, ConnectionRefused, ProxyTimeout, TTLExpired
from socks5d.proto import AuthMethod, MethodSelected
from vectors import REPLY_SUCCEEDED, REPLY_SUCCEEDED_PEER

from .conftest import BANNER, IO_TIMEOUT, FakeProxy, ProxySide, closed_port

# Direct parametrization, not a fixture: this module is also a plugin (below), and a
# plugin's fixtures are seen by every test of the session.
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
    pytest.mark.timeout(60),
]

# This module is a plugin too, for the one hook below.
pytest_plugins = [__name__]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, Any, Any]:
    """Hand this module's anyio tests back from pytest-asyncio (auto mode makes every
    coroutine test its own, run on an asyncio loop) to anyio's plugin: plain test items,
    without the `asyncio` marker auto mode added. Other modules' items are left alone.
    """
    result = yield
    if collector.path != Path(__file__) or not isinstance(result, list):
        return result
    items = []
    for item in result:
        if isinstance(item, PytestAsyncioFunction) and item.get_closest_marker("anyio"):
            plain = pytest.Function.from_parent(
                item.parent,
                name=item.name,
                callspec=getattr(item, "callspec", None),
                callobj=item.obj,
                fixtureinfo=item._fixtureinfo,
                keywords=item.keywords,
                originalname=item.originalname,
            )
            plain.own_markers = [mark for mark in item.own_markers if mark.name != "asyncio"]
            item = plain
        items.append(item)
    return items


async def records_of(server: Any, count: int = 1) -> list[dict[str, Any]]:
    """`server.wait_records(count)` (blocking) on a worker thread."""
    records: list[dict[str, Any]] = await anyio.to_thread.run_sync(server.wait_records, count)
    return records


def in_asyncio(coroutine: Coroutine[Any, Any, Any]) -> Awaitable[Any]:
    """Run `coroutine` (the asyncio client's) on its own loop on a worker thread: the words
    of `socks5d.client.aio`, to compare with, whichever backend runs the test."""
    return anyio.to_thread.run_sync(asyncio.run, coroutine)


async def read_to_eof(stream: ByteStream) -> bytes:
    """Everything until the other side half-closes."""
    chunks = []
    with anyio.fail_after(IO_TIMEOUT):
        while True:
            try:
                chunks.append(await stream.receive())
            except anyio.EndOfStream:
                return b"".join(chunks)


async def round_trip(stream: ByteStream, data: bytes) -> bytes:
    """Send `data`, half-close, read until EOF; closes the stream."""
    async with stream:
        await stream.send(data)
        await stream.send_eof()
        return await read_to_eof(stream)


async def read_exactly(stream: ByteStream, count: int) -> bytes:
    data = b""
    with anyio.fail_after(IO_TIMEOUT):
        while len(data) < count:
            data += await stream.receive(count - len(data))
    return data


async def test_each_test_runs_under_the_backend_it_is_named_for(anyio_backend: str) -> None:
    assert sniffio.current_async_library() == anyio_backend
    if anyio_backend == "trio":
        import trio

        trio.lowlevel.current_trio_token()  # raises outside trio.run


async def test_importing_socks5d_client_does_not_import_anyio(anyio_backend: str) -> None:
    code = "import sys, socks5d.client, socks5d.client.sync; print('anyio' in sys.modules)"
    result = await anyio.run_process(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, check=True
    )
    assert result.stdout.strip() == b"False"


# --- CONNECT ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "asked"), [("socks5h", "localhost"), ("socks5", "127.0.0.1")])
async def test_connect_carries_data_both_ways_and_the_name_goes_where_the_scheme_says(
    anyio_backend: str, scheme: str, asked: str, socks_server, tcp_echo
) -> None:
    _, port = tcp_echo()
    stream = await client.connect("localhost", port, proxy=socks_server.url(scheme))
    assert await round_trip(stream, b"hello through socks") == b"hello through socks"
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["reply"]) == ("connect", "succeeded")
    assert record["destination"] == f"{asked}:{port}"
    assert (record["bytes_up"], record["bytes_down"]) == (19, 19)


async def test_banner_of_a_destination_that_speaks_first_is_not_lost(
    anyio_backend: str, socks_server, tcp_echo
) -> None:
    stream = await client.connect(*tcp_echo(banner=BANNER), proxy=socks_server.url())
    assert await read_exactly(stream, len(BANNER)) == BANNER
    assert await round_trip(stream, b"EHLO") == b"EHLO"


async def test_bytes_arriving_with_the_reply_stay_for_the_stream(
    anyio_backend: str, fake_proxy
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED + BANNER)  # one write: the reply and the banner together

    proxy: FakeProxy = fake_proxy(script)
    stream = await client.connect("127.0.0.1", 25, proxy=proxy.url())
    async with stream:
        assert await read_to_eof(stream) == BANNER


async def test_username_and_password_accepted_and_recorded(
    anyio_backend: str, start_server, tcp_echo
) -> None:
    server = start_server(users={"alice": "s3cret"})
    stream = await client.connect(*tcp_echo(), proxy=server.url("socks5h", "alice", "s3cret"))
    assert await round_trip(stream, b"authenticated") == b"authenticated"
    record = (await records_of(server))[0]
    assert (record["user"], record["auth"], record["reply"]) == ("alice", "userpass", "succeeded")


async def test_wrong_password_raises_auth_failed_in_the_blocking_clients_words(
    anyio_backend: str, start_server, tcp_echo
) -> None:
    server = start_server(users={"alice": "s3cret"})
    host, port = tcp_echo()
    url = server.url("socks5h", "alice", "wrong")
    with pytest.raises(AuthFailed, match=rf"^proxy 127\.0\.0\.1:{server.port}: ") as raised:
        await client.connect(host, port, proxy=url)
    with pytest.raises(AuthFailed) as blocking:
        await anyio.to_thread.run_sync(lambda: sync.connect(host, port, proxy=url))
    assert str(raised.value) == str(blocking.value)
    assert (await records_of(server))[0]["user"] == "alice"


async def test_chain_of_two_servers_connects_through_both(
    anyio_backend: str, start_server, tcp_echo
) -> None:
    first = start_server(users={"alice": "s3cret"})
    second = start_server()
    host, port = tcp_echo()
    chain = [first.url("socks5", "alice", "s3cret"), Proxy.from_url(second.url("socks5h"))]
    stream = await client.connect(host, port, proxy=chain)
    assert await round_trip(stream, b"two hops") == b"two hops"
    outer = (await records_of(first))[0]
    inner = (await records_of(second))[0]
    assert (outer["command"], outer["destination"], outer["user"]) == (
        "connect",
        f"127.0.0.1:{second.port}",
        "alice",
    )
    assert (inner["command"], inner["destination"]) == ("connect", f"127.0.0.1:{port}")
    assert (inner["bytes_up"], inner["bytes_down"]) == (8, 8)


async def test_refused_destination_raises_connection_refused_naming_hop_and_destination(
    anyio_backend: str, start_server
) -> None:
    first, second = start_server(), start_server()
    port = closed_port()
    chain = [first.url(), second.url()]
    with pytest.raises(ConnectionRefused) as raised:
        await client.connect("127.0.0.1", port, proxy=chain)
    assert str(raised.value) == (
        f"proxy 2 of 2 (127.0.0.1:{second.port}) replied X'05' Connection refused "
        f"for 127.0.0.1:{port}"
    )
    with pytest.raises(ConnectionRefused) as blocking:
        await anyio.to_thread.run_sync(lambda: sync.connect("127.0.0.1", port, proxy=chain))
    assert str(raised.value) == str(blocking.value)
    assert (await records_of(second))[0]["reply"] == "connection_refused"


async def test_an_unreachable_first_proxy_is_an_os_error_in_the_asyncio_clients_words(
    anyio_backend: str, socks_server
) -> None:
    port = closed_port()
    chain = [f"socks5h://127.0.0.1:{port}", socks_server.url()]
    with pytest.raises(ConnectionRefusedError) as raised:
        await client.connect("example.org", 443, proxy=chain)
    assert raised.value.errno == errno.ECONNREFUSED
    assert f"could not connect to proxy 1 of 2 (127.0.0.1:{port}): " in str(raised.value)
    assert not isinstance(raised.value, ConnectionRefused)  # no proxy replied
    with pytest.raises(ConnectionRefusedError) as asyncio_client:
        await in_asyncio(aio.connect("example.org", 443, proxy=chain))
    assert str(raised.value) == str(asyncio_client.value)


async def test_the_first_proxys_addresses_are_tried_in_turn_past_a_refused_one(
    anyio_backend: str, socks_server
) -> None:
    """RFC 8305: the next address as soon as one fails; the one that answers wins."""
    targets: list[Any] = [
        (socket.AF_INET6, ("::1", closed_port(), 0, 0)),
        (socket.AF_INET, socks_server.address),
    ]
    with await anyio_walk.connect_first(targets) as sock:
        assert sock.getpeername() == socks_server.address
    record = (await records_of(socks_server))[0]  # the server saw us, and is done with us
    assert record["outcome"] == "client closed during handshake"
    with pytest.raises(ConnectionRefused):
        await anyio_walk.connect_first(targets[:1] * 2)


@pytest.mark.parametrize("version", [1, 2])
async def test_proxy_protocol_header_names_our_end_as_the_client(
    anyio_backend: str, version: int, start_server, tcp_echo
) -> None:
    server = start_server(proxy_protocol={"from": ["127.0.0.1"]})
    proxy = Proxy(server.host, server.port, proxy_protocol=version)
    stream = await client.connect(*tcp_echo(), proxy=proxy)
    assert await round_trip(stream, b"behind a balancer") == b"behind a balancer"
    (record,) = await records_of(server)
    assert record["via"] is not None and record["via"] == record["client"]


async def test_proxy_that_never_answers_raises_proxy_timeout_naming_it(
    anyio_backend: str, silent_proxy: str
) -> None:
    port = silent_proxy.rsplit(":", 1)[1]
    with pytest.raises(ProxyTimeout, match=rf"^no reply from proxy 127\.0\.0\.1:{port} within"):
        await client.connect("127.0.0.1", 80, proxy=silent_proxy, timeout=0.2)


async def _get_hello(stream: ByteStream) -> bytes:
    """GET /hello over `stream`; the response's body."""
    await stream.send(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
    response = b""
    with anyio.fail_after(IO_TIMEOUT):
        while b"\r\n\r\n" not in response:
            response += await stream.receive()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return body + await read_exactly(stream, length - len(body))


async def test_tls_inside_the_tunnel_checks_the_certificate_against_the_name(
    anyio_backend: str, socks_server, tls_origin: TlsOrigin
) -> None:
    stream = await client.connect("localhost", tls_origin.port, proxy=socks_server.url("socks5h"))
    # not standard_compatible: the origin (Python's ssl) hangs up without close_notify
    tls = await TLSStream.wrap(
        stream,
        hostname="localhost",
        ssl_context=tls_origin.client_context(),
        standard_compatible=False,
    )
    async with tls:
        assert await _get_hello(tls) == HELLO_BODY
    assert tls_origin.connections() == 1
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["destination"]) == ("connect", f"localhost:{tls_origin.port}")
    assert record["bytes_down"] > len(HELLO_BODY)


async def test_tls_inside_the_tunnel_fails_without_the_test_ca(
    anyio_backend: str, socks_server, tls_origin: TlsOrigin
) -> None:
    stream = await client.connect("localhost", tls_origin.port, proxy=socks_server.url("socks5h"))
    async with stream:
        with pytest.raises(ssl.SSLCertVerificationError):
            await TLSStream.wrap(
                stream, hostname="localhost", ssl_context=ssl.create_default_context()
            )
    assert (await records_of(socks_server))[0]["destination"] == f"localhost:{tls_origin.port}"


# --- BIND -------------------------------------------------------------------------------------


async def test_bind_accept_gives_a_stream_to_the_peer_that_connected(
    anyio_backend: str, socks_server
) -> None:
    binding = await client.open_bind("127.0.0.1", 0, proxy=socks_server.url())
    assert binding.address.port != 0
    async with await anyio.connect_tcp(*binding.address) as peer:
        stream = await binding.accept(timeout=IO_TIMEOUT)
        assert binding.peer == peer.extra(anyio.abc.SocketAttribute.local_address)
        await peer.send(b"from the peer")
        await peer.send_eof()
        assert await round_trip(stream, b"to the peer") == b"from the peer"
        assert await read_to_eof(peer) == b"to the peer"
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["reply"]) == ("bind", "succeeded")
    assert (record["bytes_up"], record["bytes_down"]) == (11, 13)


async def test_bind_replies_and_peer_data_in_one_segment_are_all_kept(
    anyio_backend: str, fake_proxy
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED + REPLY_SUCCEEDED_PEER + b"early bytes")

    proxy: FakeProxy = fake_proxy(script)
    binding = await client.open_bind("0.0.0.0", 0, proxy=proxy.url())
    async with await binding.accept(timeout=IO_TIMEOUT) as stream:
        assert await read_to_eof(stream) == b"early bytes"
    assert (str(binding.address), str(binding.peer)) == ("198.51.100.7:1080", "192.0.2.1:80")


async def test_bind_accept_without_a_peer_raises_proxy_timeout_and_gives_up(
    anyio_backend: str, socks_server
) -> None:
    binding = await client.open_bind("127.0.0.1", 0, proxy=socks_server.url())
    with pytest.raises(ProxyTimeout, match="no incoming connection in time"):
        await binding.accept(timeout=0.2)
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["outcome"]) == (
        "bind",
        "client closed the control connection during BIND",
    )


async def test_bind_expired_at_the_proxy_raises_ttl_expired(
    anyio_backend: str, start_server
) -> None:
    server = start_server(bind={"timeout": 0.2})
    binding = await client.open_bind("127.0.0.1", 0, proxy=server.url())
    with pytest.raises(TTLExpired):
        await binding.accept(timeout=IO_TIMEOUT)
    assert (await records_of(server))[0]["reply"] == "ttl_expired"


async def test_bind_aclose_wakes_the_task_waiting_in_accept(
    anyio_backend: str, socks_server
) -> None:
    binding = await client.open_bind("127.0.0.1", 0, proxy=socks_server.url())

    async def accept() -> None:
        with pytest.raises(anyio.ClosedResourceError):
            await binding.accept(timeout=IO_TIMEOUT)

    async with anyio.create_task_group() as group:
        group.start_soon(accept)
        await anyio.wait_all_tasks_blocked()
        await binding.aclose()
    assert (await records_of(socks_server))[0]["command"] == "bind"


# --- UDP ASSOCIATE ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_udp_round_trip_returns_the_echo_and_its_address(
    anyio_backend: str, scheme: str, socks_server, udp_echo
) -> None:
    echo = udp_echo()
    async with await client.open_udp(proxy=socks_server.url(scheme)) as udp:
        await udp.sendto(b"datagram one", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"datagram one", echo)
        await udp.sendto(b"two", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"two", echo)
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["reply"], record["outcome"]) == (
        "udp_associate",
        "succeeded",
        "closed",
    )
    assert (record["bytes_up"], record["bytes_down"]) == (15, 15)


async def test_udp_through_a_chain_of_two_goes_through_both_associations(
    anyio_backend: str, start_server, udp_echo
) -> None:
    first, second = start_server(), start_server()
    echo = udp_echo()
    async with await client.open_udp(proxy=[first.url(), second.url()]) as udp:
        await udp.sendto(b"through two", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"through two", echo)
    # the first: its own association, and the CONNECT carrying the second's control
    commands = sorted(r["command"] for r in await records_of(first, 2))
    assert commands == ["connect", "udp_associate"]
    last = (await records_of(second))[0]
    assert (last["command"], last["bytes_up"], last["bytes_down"]) == ("udp_associate", 11, 11)


async def test_udp_ends_with_the_control_connection_the_server_closed(
    anyio_backend: str, start_server, udp_echo
) -> None:
    server = start_server(udp={"idle_timeout": 0.5})
    echo = udp_echo()
    async with await client.open_udp(proxy=server.url()) as udp:
        await udp.sendto(b"once", echo)
        assert await udp.recvfrom(timeout=IO_TIMEOUT) == (b"once", echo)
        with pytest.raises(ConnectionError):
            await udp.recvfrom(timeout=IO_TIMEOUT)
        with pytest.raises(ConnectionError):
            await udp.sendto(b"too late", echo)
    assert (await records_of(server))[0]["outcome"] == "idle timeout"


async def test_recvfrom_with_nothing_to_receive_raises_proxy_timeout(
    anyio_backend: str, socks_server
) -> None:
    async with await client.open_udp(proxy=socks_server.url()) as udp:
        with pytest.raises(ProxyTimeout, match="no datagram in time"):
            await udp.recvfrom(timeout=0.1)


async def test_udp_aclose_wakes_the_task_waiting_in_recvfrom(
    anyio_backend: str, socks_server
) -> None:
    udp = await client.open_udp(proxy=socks_server.url())

    async def receive() -> None:
        with pytest.raises(ConnectionError, match="association is closed"):
            await udp.recvfrom(timeout=IO_TIMEOUT)

    async with anyio.create_task_group() as group:
        group.start_soon(receive)
        await anyio.wait_all_tasks_blocked()
        await udp.aclose()
    record = (await records_of(socks_server))[0]
    assert (record["command"], record["outcome"]) == ("udp_associate", "closed")


async def test_udp_through_socks4_is_refused_naming_the_hop(
    anyio_backend: str, socks_server
) -> None:
    with pytest.raises(ValueError, match="SOCKS5 at every hop: hop 2, "):
        await client.open_udp(proxy=[socks_server.url(), socks_server.url("socks4a")])
