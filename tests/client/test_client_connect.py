"""The client against our server, once per face (asyncio and blocking, `faces.py`): CONNECT
over loopback, chains, and the names each face looks up.

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
from socks5d.errors import AuthFailed, ProtocolError
from socks5d.net import lookup, lookup_blocking
from socks5d.proto import AuthMethod, MethodSelected
from socks5d.proxies import as_chain
from vectors import REPLY_SUCCEEDED

from .conftest import (
    BANNER,
    HTTP_BODY,
    HTTP_REQUEST,
    NAME_SCHEMES,
    FakeProxy,
    ProxySide,
    fetch,
    records_of,
)
from .faces import Face

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


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
async def test_lookup_and_lookup_blocking_give_the_same_addresses(host: str) -> None:
    expected = await asyncio.to_thread(lookup_blocking, host, 1080)
    assert await lookup(host, 1080) == expected
    assert expected[0][1][:2] == ("::1" if ":" in host else "127.0.0.1", 1080)


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


# --- PROXY protocol header ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
async def test_proxy_protocol_header_names_our_end_as_the_client(
    face: Face, version: int, start_server, tcp_echo
) -> None:
    """`Proxy(..., proxy_protocol=N)` speaks as a balancer: a server that trusts us sees the
    header's source (our end), and the balancer's address (also ours) as `via`."""
    server = start_server(proxy_protocol={"from": ["127.0.0.1"]})
    host, port = tcp_echo()
    proxy = Proxy(server.host, server.port, proxy_protocol=version)
    conn = await face.open_connection(host, port, proxy=proxy)
    assert await conn.round_trip(b"behind a balancer") == b"behind a balancer"
    (record,) = await records_of(server)
    assert record["via"] is not None and record["via"] == record["client"]


async def test_without_proxy_protocol_a_trusting_server_refuses(
    face: Face, start_server, tcp_echo
) -> None:
    server = start_server(proxy_protocol={"from": ["127.0.0.1"]})
    host, port = tcp_echo()
    with pytest.raises(ProtocolError, match="closed the connection after the greeting"):
        await face.open_connection(host, port, proxy=server.url())


def test_proxy_protocol_version_and_hop_are_checked() -> None:
    with pytest.raises(ValueError, match="1 or 2"):
        Proxy("127.0.0.1", 1080, proxy_protocol=3)
    with pytest.raises(ValueError, match="first proxy"):
        as_chain([Proxy("127.0.0.1", 1080), Proxy("127.0.0.1", 1081, proxy_protocol=2)])
