"""Proxy addresses: `socks5://user:pass@host:port` URLs, the `Proxy(...)` keywords, `.url`."""

from __future__ import annotations

import re

import pytest

from socks5d.client import GssapiOptions, ProtectionLevel, Proxy
from socks5d.proxies import as_chain


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("socks5://127.0.0.1:1080", Proxy("127.0.0.1", 1080, version=5, remote_dns=False)),
        ("socks5h://proxy.example:9050", Proxy("proxy.example", 9050, version=5, remote_dns=True)),
        ("socks4://10.0.0.1:1081", Proxy("10.0.0.1", 1081, version=4, remote_dns=False)),
        ("socks4a://proxy.example:1082", Proxy("proxy.example", 1082, version=4, remote_dns=True)),
        ("socks5://[::1]:1080", Proxy("::1", 1080, version=5, remote_dns=False)),
        ("socks5h://[2001:db8::7]:443", Proxy("2001:db8::7", 443, version=5, remote_dns=True)),
        ("SOCKS5H://Proxy.Example:1", Proxy("proxy.example", 1, version=5, remote_dns=True)),
    ],
)
def test_url_gives_host_port_version_and_who_resolves(url: str, expected: Proxy) -> None:
    assert Proxy.from_url(url) == expected


@pytest.mark.parametrize(
    "url", ["socks5://proxy.example", "socks4a://proxy.example", "socks5h://[::1]"]
)
def test_url_without_port_means_1080(url: str) -> None:
    assert Proxy.from_url(url).port == 1080


@pytest.mark.parametrize(
    ("url", "username", "password"),
    [
        ("socks5://alice:s3cret@h:1", "alice", "s3cret"),
        ("socks5h://al%40ice:p%3Ass%2Fw%25rd@h:1", "al@ice", "p:ss/w%rd"),
        ("socks5://j%C3%BCrgen:p%C3%A4ss@h:1", "jürgen", "päss"),
        ("socks5://alice:p%20w%23x@[::1]:1", "alice", "p w#x"),
        ("socks4a://Fred@h:1", "Fred", None),
        ("socks5://h:1", None, None),
    ],
)
def test_url_credentials_are_percent_decoded(
    url: str, username: str | None, password: str | None
) -> None:
    proxy = Proxy.from_url(url)
    assert (proxy.username, proxy.password) == (username, password)


def test_keywords_equal_the_parsed_url() -> None:
    keywords = Proxy(
        host="::1", port=1081, version=5, remote_dns=True, username="al@ice", password="p:w"
    )
    assert keywords == Proxy.from_url("socks5h://al%40ice:p%3Aw@[::1]:1081")


def test_keyword_defaults_are_socks5h_on_1080() -> None:
    assert Proxy("proxy.example") == Proxy.from_url("socks5h://proxy.example")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://proxy.example:3128", "unsupported proxy scheme 'ftp'"),
        ("socks6://proxy.example", "unsupported proxy scheme"),
        ("proxy.example:1080", "unsupported proxy scheme"),
        ("", "unsupported proxy scheme"),
        ("socks5://:1080", "no proxy host"),
        ("socks5://proxy.example:65536", "out of range"),
        ("socks5://proxy.example:-1", None),
        ("socks5://proxy.example:port", None),
        pytest.param(
            "socks5://proxy.example:0",
            "out of range",
        ),
    ],
)
def test_bad_url_raises_value_error(url: str, message: str | None) -> None:
    with pytest.raises(ValueError, match=message):
        Proxy.from_url(url)


@pytest.mark.parametrize(
    "keywords",
    [{"port": 0}, {"port": 65536}, {"port": -1}, {"version": 6}, {"version": 3}],
)
def test_bad_keywords_raise_value_error(keywords: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Proxy("proxy.example", **keywords)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("proxy", "url"),
    [
        (Proxy("h", 1, version=5, remote_dns=False), "socks5://h:1"),
        (Proxy("h", 1, version=5, remote_dns=True), "socks5h://h:1"),
        (Proxy("h", 1, version=4, remote_dns=False), "socks4://h:1"),
        (Proxy("h", 1, version=4, remote_dns=True), "socks4a://h:1"),
        (Proxy("::1", 1080), "socks5h://[::1]:1080"),
        (Proxy("h", 1, username="alice"), "socks5h://alice@h:1"),
        (Proxy("h", 1, username="alice", password="s3cret"), "socks5h://alice:***@h:1"),
    ],
)
def test_url_property_names_scheme_host_port_and_user(proxy: Proxy, url: str) -> None:
    assert proxy.url == url


def test_password_appears_neither_in_url_nor_in_repr() -> None:
    proxy = Proxy.from_url("socks5://alice:hunter2@proxy.example:1080")
    assert "hunter2" not in proxy.url
    assert "hunter2" not in repr(proxy)
    assert proxy.password == "hunter2"


@pytest.mark.parametrize(
    "url", ["socks5://h:1", "socks4a://alice@[::1]:1080", "socks5h://proxy.example:9050"]
)
def test_url_property_parses_back_to_the_same_proxy(url: str) -> None:
    proxy = Proxy.from_url(url)
    assert Proxy.from_url(proxy.url) == proxy


@pytest.mark.parametrize("username", ["a/b", "al:ice"])
def test_url_property_percent_encodes_the_username(username: str) -> None:
    proxy = Proxy("h", 1, username=username)
    assert Proxy.from_url(proxy.url) == proxy


def test_chain_accepts_urls_and_proxies_in_order() -> None:
    first = Proxy("a.example", 1)
    assert as_chain([first, "socks4://b.example:2"]) == [
        first,
        Proxy("b.example", 2, version=4, remote_dns=False),
    ]
    assert as_chain("socks5://c.example:3") == [Proxy("c.example", 3, remote_dns=False)]


def test_empty_chain_raises_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        as_chain([])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("gssapi=integrity", GssapiOptions(ProtectionLevel.INTEGRITY)),
        ("gssapi=Confidentiality", GssapiOptions(ProtectionLevel.CONFIDENTIALITY)),
        ("gssapi=clear&service=socks", GssapiOptions(ProtectionLevel.CLEAR, "socks")),
        (
            "gssapi=integrity&service_host=proxy.example.org&unwrapped_level=1",
            GssapiOptions(
                ProtectionLevel.INTEGRITY, host="proxy.example.org", unwrapped_level=True
            ),
        ),
        ("gssapi=integrity&unwrapped_level=0", GssapiOptions(ProtectionLevel.INTEGRITY)),
    ],
)
def test_url_query_selects_gssapi(query: str, expected: GssapiOptions) -> None:
    proxy = Proxy.from_url(f"socks5h://127.0.0.1:1080?{query}")
    assert proxy.gssapi == expected
    assert Proxy.from_url(proxy.url) == proxy


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("socks5://h:1?gssapi=selective", "gssapi='selective'"),
        ("socks5://h:1?gssapi=", "gssapi=''"),
        ("socks5://h:1?service=rcmd", "need gssapi=LEVEL"),
        ("socks5://h:1?gssapi=integrity&colour=blue", "'colour'"),
        ("socks4a://h:1?gssapi=integrity", "GSS-API needs SOCKS5"),
    ],
)
def test_bad_gssapi_query_raises_value_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Proxy.from_url(url)


def test_url_without_query_has_no_gssapi() -> None:
    proxy = Proxy.from_url("socks5h://127.0.0.1:1080")
    assert proxy.gssapi is None
    assert "?" not in proxy.url
