"""socks5d routing requests through upstream proxies (`[[route]]`), the upstreams real
programs on loopback: microsocks and Dante's sockd (SOCKS5, SOCKS4), tinyproxy (HTTP
CONNECT), and socks5d itself (chains). Each upstream's own log (or access record) proves the
request crossed it; our access record names the route and the upstream used.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningServer
from socks5d.client import aio, sync
from socks5d.errors import CommandNotSupported, ConnectionRefused, HostUnreachable, NotAllowed

from .conftest import CLIENT_TIMEOUT, PAYLOAD, Endpoint, curl
from .proxies import (
    Crossing,
    DanteServer,
    MicrosocksServer,
    Socks5dUnderTest,
    TinyproxyServer,
)
from .test_socksify_udp_bind import socksify_udp_round_trips

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: `upstreams("microsocks" | "dante" | "tinyproxy", **options)`, started; all
    stopped after the test."""
    started: list[Any] = []

    def start(kind: str, **options: Any) -> Any:
        directory = tmp_path / f"{kind}{len(started)}"
        directory.mkdir()
        if kind == "microsocks":
            server: Any = MicrosocksServer(**options)
        elif kind == "dante":
            server = DanteServer(directory, **options)
        else:
            server = TinyproxyServer(directory, **options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def routed(
    start_server: Callable[..., RunningServer], *routes: dict[str, Any], **settings: Any
) -> RunningServer:
    return start_server(route=list(routes), **settings)


def echo(server: RunningServer, destination: Endpoint) -> bytes:
    """PAYLOAD through `server` (our SOCKS5, names to the proxy) to an echo server."""
    with sync.create_connection(
        (destination.host, destination.port), CLIENT_TIMEOUT, proxy=server.url("socks5h")
    ) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.sendall(PAYLOAD)
        received = b""
        while len(received) < len(PAYLOAD) and (chunk := sock.recv(len(PAYLOAD))):
            received += chunk
        return received


def url_of(upstream: Any, scheme: str = "socks5") -> str:
    return f"{scheme}://{Endpoint(upstream.host, upstream.port).netloc}"


# --- one upstream of each kind -----------------------------------------------------------------


def test_connect_through_microsocks(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    upstream = upstreams("microsocks")
    server = routed(start_server, {"to": ["127.0.0.0/8"], "via": [upstream.url]})
    destination = tcp_echoes["127.0.0.1"]
    assert echo(server, destination) == PAYLOAD
    upstream.connected(destination.netloc)  # it crossed microsocks
    (record,) = server.wait_records(1)
    assert (record["route"], record["upstream"]) == ("route[0]", upstream.url)
    assert record["reply"] == "succeeded"


def test_connect_through_microsocks_with_a_login(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    """RFC 1929 at the upstream: the credentials of the `via` URL."""
    upstream = upstreams("microsocks", username="gw", password="s3cret")
    url = f"socks5://gw:s3cret@{Endpoint(upstream.host, upstream.port).netloc}"
    server = routed(start_server, {"via": [url]})
    destination = tcp_echoes["127.0.0.1"]
    assert echo(server, destination) == PAYLOAD
    upstream.connected(destination.netloc)
    assert server.wait_records(1)[0]["upstream"] == url.replace(":s3cret@", ":***@")


def test_connect_through_dante_socks5_and_socks4(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    dante = upstreams("dante")
    destination = tcp_echoes["127.0.0.1"]
    for scheme in ("socks5h", "socks4"):
        server = routed(start_server, {"via": [url_of(dante, scheme)]})
        assert echo(server, destination) == PAYLOAD
        crossing = dante.connected(destination)
        assert crossing.bytes_up == crossing.bytes_down == len(PAYLOAD)
        assert server.wait_records(1)[0]["upstream"] == url_of(dante, scheme)


def test_connect_through_tinyproxy_with_basic_credentials(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    tinyproxy = upstreams("tinyproxy", username="gw", password="pw")
    server = routed(start_server, {"via": [tinyproxy.url]})
    destination = tcp_echoes["127.0.0.1"]
    assert echo(server, destination) == PAYLOAD
    tinyproxy.requested(destination.netloc)
    assert server.wait_records(1)[0]["upstream"] == tinyproxy.url.replace(":pw@", ":***@")


def test_a_chain_of_three_socks5d(start_server, tcp_echoes: dict[str, Endpoint]) -> None:
    """Our server routes through two more of ours, one after the other: each logs the hop."""
    last, middle = start_server(), start_server()
    first = routed(start_server, {"via": [f"{middle.url()} {last.url('socks5h')}"]})
    destination = tcp_echoes["127.0.0.1"]
    assert echo(first, destination) == PAYLOAD
    assert middle.wait_records(1)[0]["destination"] == f"{last.host}:{last.port}"
    assert last.wait_records(1)[0]["destination"] == destination.netloc
    assert first.wait_records(1)[0]["upstream"] == f"{middle.url()} {last.url('socks5h')}"


def test_curl_through_a_routed_server(start_server, upstreams, origins) -> None:
    """A real client: curl to our server, which goes out through tinyproxy."""
    tinyproxy = upstreams("tinyproxy")
    server = routed(start_server, {"via": [tinyproxy.url]})
    origin = origins["127.0.0.1"]
    done = curl("--socks5-hostname", f"{server.host}:{server.port}", origin.url("/small"))
    assert done.returncode == 0, done.stderr
    tinyproxy.requested(origin.netloc)
    assert server.wait_records(1)[0]["upstream"] == tinyproxy.url


# --- which route, which upstream ---------------------------------------------------------------


def test_first_matching_route_wins_and_direct_is_the_default(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    upstream = upstreams("microsocks")
    v4, v6 = tcp_echoes["127.0.0.1"], tcp_echoes["::1"]
    server = routed(
        start_server,
        {"to": ["::1"], "via": ["direct"]},
        {"to": ["127.0.0.0/8"], "via": [upstream.url]},
    )
    assert echo(server, v6) == PAYLOAD
    assert echo(server, v4) == PAYLOAD
    first, second = server.wait_records(2)
    assert (first["route"], first["upstream"]) == ("route[0]", "direct")
    assert (second["route"], second["upstream"]) == ("route[1]", upstream.url)
    upstream.connected(v4.netloc)
    assert not any(str(v6.port) in line and "::1" in line for line in upstream.lines)


def test_failover_skips_a_dead_upstream_then_uses_it_again_after_upstream_retry(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    backup = upstreams("microsocks")
    first = start_server()
    port = first.port
    first.stop()  # its port refuses connections now
    primary = f"socks5://127.0.0.1:{port}"
    server = routed(start_server, {"via": [primary, backup.url], "upstream_retry": 0.2})
    destination = tcp_echoes["127.0.0.1"]
    assert echo(server, destination) == PAYLOAD
    assert server.wait_records(1)[0]["upstream"] == backup.url
    backup.connected(destination.netloc)
    revived = start_server(listen=[f"127.0.0.1:{port}"])  # the first comes back
    # while it is marked down requests go to the backup; once upstream_retry has passed the
    # first is tried first again, and used
    deadline = time.monotonic() + 10
    used = [backup.url]
    while primary not in used:
        assert time.monotonic() < deadline, f"the first upstream was never used again: {used}"
        assert echo(server, destination) == PAYLOAD
        used = [record["upstream"] for record in server.wait_records(len(used) + 1)]
    assert revived.wait_records(1)[0]["destination"] == destination.netloc


def test_round_robin_spreads_requests_over_its_upstreams(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    one, two = upstreams("microsocks"), upstreams("microsocks")
    server = routed(start_server, {"via": [one.url, two.url], "strategy": "round-robin"})
    destination = tcp_echoes["127.0.0.1"]
    for _ in range(4):
        assert echo(server, destination) == PAYLOAD
    used = [record["upstream"] for record in server.wait_records(4)]
    assert used == [one.url, two.url, one.url, two.url]


# --- what the client is told -------------------------------------------------------------------


def test_the_upstreams_refusal_is_the_clients(
    start_server, upstreams, closed_port: Endpoint
) -> None:
    upstream = upstreams("microsocks")
    server = routed(start_server, {"via": [upstream.url]})
    with pytest.raises(ConnectionRefused, match="X'05'"):
        echo(server, closed_port)
    assert server.wait_records(1)[0]["reply"] == "connection_refused"


def test_no_upstream_answering_is_host_unreachable(
    start_server, closed_port: Endpoint, tcp_echoes: dict[str, Endpoint]
) -> None:
    server = routed(
        start_server, {"via": [f"socks5://{closed_port.netloc}", f"http://{closed_port.netloc}"]}
    )
    with pytest.raises(HostUnreachable, match="X'04'"):
        echo(server, tcp_echoes["127.0.0.1"])
    record = server.wait_records(1)[0]
    assert record["reply"] == "host_unreachable"
    assert "no upstream of route[0] carried it" in record["outcome"]


def test_a_blocked_request_is_never_sent_upstream(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    upstream = upstreams("microsocks")
    v4 = tcp_echoes["127.0.0.1"]
    server = routed(
        start_server,
        {"via": [upstream.url]},
        socks=[{"action": "block", "to": ["::1"]}],
    )
    with pytest.raises(NotAllowed):
        echo(server, tcp_echoes["::1"])
    assert echo(server, v4) == PAYLOAD  # then one allowed: microsocks logs it, and only it
    upstream.connected(v4.netloc)
    assert [line for line in upstream.lines if "connected to" in line] == [
        line for line in upstream.lines if line.endswith(f"connected to {v4.netloc}")
    ]
    blocked = server.wait_records(2)[0]
    assert blocked["reply"] == "connection_not_allowed" and blocked["upstream"] is None


def test_routes_reload_and_open_tunnels_keep_their_upstream(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    from socks5d.config import build_config

    one, two = upstreams("microsocks"), upstreams("microsocks")
    server = routed(start_server, {"via": [one.url]})
    destination = tcp_echoes["127.0.0.1"]
    with sync.create_connection(
        (destination.host, destination.port), CLIENT_TIMEOUT, proxy=server.url()
    ) as held:
        held.settimeout(CLIENT_TIMEOUT)
        config = build_config({"route": [{"via": [two.url]}]}, listen=["127.0.0.1:0"])
        _on_loop(server, lambda: server.server.apply(config))
        assert echo(server, destination) == PAYLOAD  # a new request: the new route
        held.sendall(b"still")
        assert held.recv(5) == b"still"  # the open tunnel: still through the first
    one.connected(destination.netloc)
    two.connected(destination.netloc)
    upstreams_used = sorted(record["upstream"] for record in server.wait_records(2))
    assert upstreams_used == sorted([one.url, two.url])


def _on_loop(running: RunningServer, function: Callable[[], Any]) -> Any:
    import asyncio

    async def call() -> Any:
        return function()

    assert running._loop is not None
    return asyncio.run_coroutine_threadsafe(call(), running._loop).result(CLIENT_TIMEOUT)


# --- BIND through an upstream ------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks4"])
def test_bind_through_dante_passes_both_replies_on(start_server, upstreams, scheme: str) -> None:
    """Dante listens; its first reply (where) and second reply (who connected) reach our
    client as Dante sent them, and the relay runs through Dante."""
    dante = upstreams("dante")
    server = routed(start_server, {"via": [url_of(dante, scheme)]})
    binding = sync.open_bind("127.0.0.1", 0, proxy=server.url(), timeout=CLIENT_TIMEOUT)
    try:
        assert str(binding.address.host) == "127.0.0.1" and binding.address.port != 0
        assert binding.address.port not in (server.port, dante.port)
        peer = socket.create_connection(
            (str(binding.address.host), binding.address.port), timeout=CLIENT_TIMEOUT
        )
    except BaseException:
        binding.close()
        raise
    with peer, binding.accept(CLIENT_TIMEOUT) as connection:
        connection.settimeout(CLIENT_TIMEOUT)
        peer_host, peer_port = peer.getsockname()[:2]
        assert binding.peer == (peer_host, peer_port)
        peer.sendall(b"from the peer")
        assert connection.recv(64) == b"from the peer"
        connection.sendall(b"to the peer")
        assert peer.recv(64) == b"to the peer"
    dante.bound(Endpoint(peer_host, peer_port))  # Dante relayed it
    record = server.wait_records(1)[0]
    assert (record["command"], record["upstream"]) == ("bind", url_of(dante, scheme))


def test_bind_through_an_http_upstream_is_command_not_supported(start_server, upstreams) -> None:
    tinyproxy = upstreams("tinyproxy")
    server = routed(start_server, {"via": [tinyproxy.url]})
    with pytest.raises(CommandNotSupported, match="X'07'"):
        sync.open_bind("127.0.0.1", 0, proxy=server.url(), timeout=CLIENT_TIMEOUT)


# --- UDP ASSOCIATE through an upstream ---------------------------------------------------------


async def test_udp_through_a_dante_upstream(start_server, upstreams, udp_echoes) -> None:
    """Our association with the client, Dante's with us: datagrams go both ways re-wrapped,
    and Dante's log counts them."""
    dante = upstreams("dante")
    server = routed(start_server, {"via": [url_of(dante)]})
    echo = udp_echoes["127.0.0.1"]
    async with await aio.open_udp(proxy=server.url(), timeout=CLIENT_TIMEOUT) as udp:
        for text in (b"first", b"second datagram"):
            await udp.sendto(text, (echo.host, echo.port))
            data, sender = await udp.recvfrom(CLIENT_TIMEOUT)
            assert (data, sender) == (text, (echo.host, echo.port))
    assert dante.udp_relayed(echo) == Crossing(bytes_up=20, bytes_down=20)
    record = server.wait_records(1)[0]
    assert (record["command"], record["upstream"], record["dropped"]) == (
        "udp_associate",
        url_of(dante),
        0,
    )
    assert (record["bytes_up"], record["bytes_down"]) == (20, 20)


def test_socksify_udp_through_a_routed_server_and_dante(
    start_server, upstreams, udp_echoes, tmp_path: Path
) -> None:
    """A real UDP program under Dante's socksify, to our server, out through Dante."""
    dante = upstreams("dante")
    server = routed(start_server, {"via": [url_of(dante)]})
    echo = udp_echoes["127.0.0.1"]
    payload = socksify_udp_round_trips(Socks5dUnderTest(server), echo, tmp_path / "socks.conf")
    assert dante.udp_relayed(echo) == Crossing(bytes_up=payload, bytes_down=payload)


async def test_udp_through_an_http_upstream_is_command_not_supported(
    start_server, upstreams
) -> None:
    tinyproxy = upstreams("tinyproxy")
    server = routed(start_server, {"via": [tinyproxy.url]})
    with pytest.raises(CommandNotSupported, match="X'07'"):
        await aio.open_udp(proxy=server.url(), timeout=CLIENT_TIMEOUT)


def test_a_route_with_a_destination_takes_no_udp_association(
    start_server, upstreams, udp_echoes
) -> None:
    """An association names no destination: only routes without `to`/`port` take it."""
    dante = upstreams("dante")
    server = routed(start_server, {"to": ["127.0.0.1"], "via": [url_of(dante)]})
    echo = udp_echoes["127.0.0.1"]
    with sync.open_udp(proxy=server.url(), timeout=CLIENT_TIMEOUT) as udp:
        udp.sendto(b"direct", (echo.host, echo.port))
        assert udp.recvfrom(CLIENT_TIMEOUT)[0] == b"direct"
    record = server.wait_records(1)[0]
    assert (record["route"], record["upstream"]) == (None, None)


def test_an_upstreams_refusal_by_its_rules_is_not_allowed(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint]
) -> None:
    """Dante's own block rule: its X'02' reaches our client as X'02'; Dante stays up."""
    destination = tcp_echoes["127.0.0.1"]
    dante = upstreams("dante", blocked=[destination])
    server = routed(start_server, {"via": [url_of(dante)]})
    with pytest.raises(NotAllowed, match="X'02'"):
        echo(server, destination)
    assert server.wait_records(1)[0]["reply"] == "connection_not_allowed"


def test_a_failed_login_at_an_upstream_fails_over_and_logs_once(
    start_server, upstreams, tcp_echoes: dict[str, Endpoint], caplog
) -> None:
    """microsocks wants a password we do not have: that upstream is down for us (one warning,
    however many requests), the next one carries the requests."""
    locked = upstreams("microsocks", username="u", password="p")
    backup = upstreams("microsocks")
    wrong = f"socks5://u:wrong@{Endpoint(locked.host, locked.port).netloc}"
    server = routed(start_server, {"via": [wrong, backup.url], "upstream_retry": 60})
    destination = tcp_echoes["127.0.0.1"]
    with caplog.at_level("WARNING", logger="socks5d.server.upstream"):
        for _ in range(3):
            assert echo(server, destination) == PAYLOAD
        used = [record["upstream"] for record in server.wait_records(3)]
    assert used == [backup.url] * 3
    warnings = [r for r in caplog.records if r.name == "socks5d.server.upstream"]
    assert len(warnings) == 1 and "is down for 60s" in warnings[0].getMessage()


async def test_udp_through_a_chain_of_two_socks5d_upstreams(start_server, udp_echoes) -> None:
    middle, last = start_server(), start_server()
    server = routed(start_server, {"via": [f"{middle.url()} {last.url()}"]})
    echo = udp_echoes["127.0.0.1"]
    async with await aio.open_udp(proxy=server.url(), timeout=CLIENT_TIMEOUT) as udp:
        await udp.sendto(b"three hops", (echo.host, echo.port))
        assert await udp.recvfrom(CLIENT_TIMEOUT) == (b"three hops", (echo.host, echo.port))
    last_record = last.wait_records(1)[0]
    assert (last_record["command"], last_record["bytes_up"]) == ("udp_associate", 10)
    assert server.wait_records(1)[0]["upstream"] == f"{middle.url()} {last.url()}"
