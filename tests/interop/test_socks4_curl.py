"""curl's SOCKS4 and SOCKS4a clients, and socksify speaking SOCKS4 for curl.

SOCKS4 runs against socks5d and Dante's sockd alike. SOCKS4a (DSTIP 0.0.0.x, the name after
the USERID) is socks5d's alone: sockd takes 0.0.0.1 for an address, and its rule refuses it.
"""

from __future__ import annotations

from .conftest import (
    SMALL_BODY,
    Endpoint,
    curl,
    curl_command,
    proxy_netloc,
    run_tool,
    socksify_env,
)
from .proxies import Socks5dUnderTest, write_socksify_conf


def test_curl_socks4_fetches_an_ipv4_origin_through_the_proxy(proxy, origins) -> None:
    origin = origins["127.0.0.1"]
    result = curl("--socks4", f"{proxy.host}:{proxy.port}", origin.url())
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    crossing = proxy.connected(origin, protocol="socks4")
    assert crossing.bytes_up > 0
    assert crossing.bytes_down >= len(SMALL_BODY)


def test_curl_socks4a_lets_socks5d_resolve_localhost(socks_server, origins) -> None:
    origin = origins["127.0.0.1"]
    result = curl("--socks4a", proxy_netloc(socks_server), origin.url(host="localhost"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    named = Endpoint("localhost", origin.port)
    crossing = Socks5dUnderTest(socks_server).connected(named, protocol="socks4a")
    assert crossing.bytes_up > 0
    assert crossing.bytes_down >= len(SMALL_BODY)


def test_curl_socks4_user_id_is_logged_as_the_user(socks_server, origins) -> None:
    origin = origins["127.0.0.1"]
    result = curl("--proxy", f"socks4://alice@{proxy_netloc(socks_server)}", origin.url())
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    proxy = Socks5dUnderTest(socks_server)
    proxy.connected(origin, protocol="socks4")
    record = proxy.wait_record(lambda r: r["command"] == "connect")
    assert record["user"] == "alice", record


def test_curl_socks4a_is_refused_by_dante_which_takes_the_marker_for_an_address(
    dante_server, origins
) -> None:
    origin = origins["127.0.0.1"]
    result = curl("--socks4a", proxy_netloc(dante_server), origin.url(host="localhost"))
    assert result.returncode != 0
    assert result.stdout == b""
    assert b"0.0.0.1" in result.stderr  # curl names the DSTIP it sent: the SOCKS4a marker
    # sockd's catch-all block rule logs the request: a CONNECT to the address 0.0.0.1.
    dante_server.wait_log(rf"block\(\d+\): tcp/connect \]: .* -> \S+ 0\.0\.0\.1\.{origin.port}$")


def test_socksify_with_a_socks_v4_route_redirects_curl(proxy, origins, tmp_path) -> None:
    origin = origins["127.0.0.1"]
    conf = write_socksify_conf(tmp_path / "socks.conf", proxy, proxyprotocol="socks_v4")
    result = run_tool(["socksify", *curl_command(origin.url())], env=socksify_env(conf))
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    crossing = proxy.connected(origin, protocol="socks4")
    assert crossing.bytes_up > 0
    assert crossing.bytes_down >= len(SMALL_BODY)
