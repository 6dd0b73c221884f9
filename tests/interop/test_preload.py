"""SOCKS clients by LD_PRELOAD: proxychains4 and Dante's socksify, each running curl with no
proxy options of its own. Both would happily reach a loopback origin directly, so only the
access record proves that the connection was redirected through our server.
"""

from __future__ import annotations

import pytest

from .conftest import (
    SMALL_BODY,
    crossed_proxy,
    curl_command,
    only_record,
    run_tool,
    socksify_env,
    write_dante_conf,
    write_proxychains_conf,
)

# proxychains4 resolves "localhost" itself (from /etc/hosts) even with proxy_dns: IPs only.


@pytest.mark.parametrize("origin_host", ["127.0.0.1", "::1"])
def test_proxychains_redirects_curl_through_the_proxy(
    socks_server, origins, tmp_path, origin_host
) -> None:
    origin = origins[origin_host]
    conf = write_proxychains_conf(tmp_path / "proxychains.conf", socks_server)
    result = run_tool(["proxychains4", "-q", "-f", str(conf), *curl_command(origin.url())])
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    crossed_proxy(socks_server, origin.destination, min_bytes_down=len(SMALL_BODY))


def test_proxychains_authenticates_with_the_credentials_of_its_proxy_list(
    start_server, origins, tmp_path
) -> None:
    server = start_server(users={"alice": "secret"})
    origin = origins["127.0.0.1"]
    conf = write_proxychains_conf(tmp_path / "proxychains.conf", server, "alice", "secret")
    result = run_tool(["proxychains4", "-q", "-f", str(conf), *curl_command(origin.url())])
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    assert crossed_proxy(server, origin.destination)["user"] == "alice"


def test_proxychains_with_a_wrong_password_fails_the_connection(
    start_server, origins, tmp_path
) -> None:
    server = start_server(users={"alice": "secret"})
    conf = write_proxychains_conf(tmp_path / "proxychains.conf", server, "alice", "wrong")
    command = curl_command(origins["127.0.0.1"].url())
    result = run_tool(["proxychains4", "-q", "-f", str(conf), *command])
    assert result.returncode != 0
    assert result.stdout == b""
    assert only_record(server)["outcome"].startswith("auth failed"), server.records


def test_socksify_redirects_curl_through_the_proxy(socks_server, origins, tmp_path) -> None:
    origin = origins["127.0.0.1"]
    conf = write_dante_conf(tmp_path / "socks.conf", socks_server)
    result = run_tool(["socksify", *curl_command(origin.url())], env=socksify_env(conf))
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    crossed_proxy(socks_server, origin.destination, min_bytes_down=len(SMALL_BODY))


def test_socksify_authenticates_with_socks_username_and_password(
    start_server, origins, tmp_path
) -> None:
    server = start_server(users={"alice": "secret"})
    origin = origins["127.0.0.1"]
    conf = write_dante_conf(tmp_path / "socks.conf", server, method="username")
    env = socksify_env(conf, SOCKS_USERNAME="alice", SOCKS_PASSWORD="secret")
    result = run_tool(["socksify", *curl_command(origin.url())], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    assert crossed_proxy(server, origin.destination)["user"] == "alice"


def test_socksify_with_a_wrong_password_fails_the_connection(
    start_server, origins, tmp_path
) -> None:
    server = start_server(users={"alice": "secret"})
    conf = write_dante_conf(tmp_path / "socks.conf", server, method="username")
    env = socksify_env(conf, SOCKS_USERNAME="alice", SOCKS_PASSWORD="wrong")
    result = run_tool(["socksify", *curl_command(origins["127.0.0.1"].url())], env=env)
    assert result.returncode != 0
    assert result.stdout == b""
    assert only_record(server)["outcome"].startswith("auth failed"), server.records
