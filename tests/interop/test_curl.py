"""curl's SOCKS5 client: --socks5 (curl resolves), --socks5-hostname (the proxy resolves),
IPv4 and IPv6 on both legs, and RFC 1929 username/password."""

from __future__ import annotations

import pytest

from .conftest import SMALL_BODY, crossed_proxy, curl, only_record, proxy_netloc


@pytest.mark.parametrize("origin_host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("proxy_option", ["--socks5", "--socks5-hostname"])
def test_curl_fetches_an_ip_literal_origin_through_the_proxy(
    socks_server, origins, proxy_option, origin_host
) -> None:
    origin = origins[origin_host]
    result = curl(proxy_option, proxy_netloc(socks_server), origin.url())
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    crossed_proxy(socks_server, origin.destination, min_bytes_down=len(SMALL_BODY))


def test_curl_socks5_hostname_lets_the_proxy_resolve_localhost(socks_server, origins) -> None:
    origin = origins["127.0.0.1"]
    result = curl("--socks5-hostname", proxy_netloc(socks_server), origin.url(host="localhost"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    record = crossed_proxy(socks_server, f"localhost:{origin.port}")
    assert record["destination"].startswith("localhost:")


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_curl_reaches_a_proxy_listening_on_ipv6(start_server, origins, scheme) -> None:
    server = start_server(listen=["[::1]:0"])
    origin = origins["::1"]
    result = curl("--proxy", server.url(scheme), origin.url())
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    record = crossed_proxy(server, origin.destination)
    assert record["client"].startswith("[::1]:")


@pytest.mark.parametrize(
    "proxy_arguments",
    [
        pytest.param(["--socks5", "{proxy}", "--proxy-user", "alice:secret"], id="proxy-user"),
        pytest.param(["--proxy", "socks5h://alice:secret@{proxy}"], id="credentials-in-url"),
    ],
)
def test_curl_with_the_right_password_is_relayed_and_logged_as_its_user(
    start_server, origins, proxy_arguments
) -> None:
    server = start_server(users={"alice": "secret"})
    origin = origins["127.0.0.1"]
    proxy = proxy_netloc(server)
    result = curl(*(argument.format(proxy=proxy) for argument in proxy_arguments), origin.url())
    assert result.returncode == 0, result.stderr
    assert result.stdout == SMALL_BODY
    assert crossed_proxy(server, origin.destination)["user"] == "alice"


def test_curl_with_a_wrong_password_fails_and_is_logged_as_auth_failure(
    start_server, origins
) -> None:
    server = start_server(users={"alice": "secret"})
    result = curl(
        "--socks5",
        proxy_netloc(server),
        "--proxy-user",
        "alice:wrong",
        origins["127.0.0.1"].url(),
    )
    assert result.returncode != 0
    assert result.stdout == b""
    record = only_record(server)
    assert record["outcome"].startswith("auth failed"), record
    assert record["user"] == "alice"
    assert record["destination"] is None


def test_curl_without_credentials_is_refused_by_a_userpass_only_server(
    start_server, origins
) -> None:
    # curl without --proxy-user offers "no authentication" (and GSSAPI), never userpass.
    server = start_server(users={"alice": "secret"})
    result = curl("--socks5", proxy_netloc(server), origins["127.0.0.1"].url())
    assert result.returncode != 0
    assert result.stdout == b""
    record = only_record(server)
    assert record["outcome"].startswith("auth failed"), record
    assert "no acceptable method" in record["outcome"]
    assert record["destination"] is None
