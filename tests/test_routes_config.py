"""`[[route]]` tables: what they accept (the match fields of `[[socks]]`, `via` candidates and
chains, `strategy`, `upstream_retry`), every error named by its key, and the pure routing:
which route a request takes (`Routes`), which upstream is tried next (`Health`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from socks5d.config import build_config
from socks5d.errors import ConfigError
from socks5d.proto import Command
from socks5d.proxies import HTTP
from socks5d.routing import Health, Route, Routes, Upstream
from socks5d.rules import Request, Rule

CLIENT = ipaddress.ip_address("192.0.2.1")


def routes_of(*tables: dict[str, Any]) -> tuple[Route, ...]:
    return build_config({"route": list(tables)}).rules.routes


def error_of(*tables: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_config({"route": list(tables)})
    return str(caught.value).splitlines()


def test_via_takes_direct_urls_and_chains_of_them() -> None:
    (route,) = routes_of(
        {
            "to": [".corp.example"],
            "via": [
                "socks5h://gw1.corp.example:1080",
                "socks5://a:1 http://user:pw@b:3128",
                ["socks4a://c:1080", "socks5h://d:1080?gssapi=integrity"],
                "direct",
            ],
            "strategy": "round-robin",
            "upstream_retry": 5,
        }
    )
    assert [str(u) for u in route.via] == [
        "socks5h://gw1.corp.example:1080",
        "socks5://a:1 http://user:***@b:3128",
        "socks4a://c:1080 socks5h://d:1080?gssapi=integrity&service=rcmd",
        "direct",
    ]
    assert route.via[1].chain[1].version == HTTP and route.via[1].chain[1].password == "pw"
    assert route.via[3].direct
    assert (route.strategy, route.retry, route.name) == ("round-robin", 5.0, "route[0]")


def test_a_single_via_string_and_the_defaults() -> None:
    (route,) = routes_of({"via": "socks5://a:1080"})
    assert (len(route.via), route.strategy, route.retry) == (1, "failover", 30.0)


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([{"via": ["ftp://x:1"]}], 'route[0].via[0]: "ftp://x:1": unsupported proxy scheme'),
        ([{"via": []}], "route[0].via: must name at least one upstream"),
        ([{"to": ["10.0.0.0/8"]}], "route[0].via: missing"),
        ([{"via": ["socks5://a:1 direct"]}], 'route[0].via[0][1]: "direct" stands alone'),
        ([{"via": [7]}], 'route[0].via[0]: must be "direct", a proxy URL, or a chain'),
        ([{"via": ["socks5://a:99999"]}], 'route[0].via[0]: "socks5://a:99999": '),
        ([{"via": "direct", "action": "pass"}], "route[0].action: unknown field"),
        ([{"via": "direct", "strategy": "random"}], "route[0].strategy: must be one of"),
        ([{"via": "direct", "upstream_retry": 0}], "route[0].upstream_retry: must be a positive"),
        ([{"via": "direct", "to": ["10.0.0.0/33"]}], 'route[0].to[0]: "10.0.0.0/33": '),
        ([{"via": "direct"}, {"to": ["x.example"], "via": "direct"}], "route[1]: unreachable"),
        (["direct"], "route[0]: must be a table"),
    ],
)
def test_errors_name_the_key(tables: list[Any], message: str) -> None:
    assert any(line.startswith(message) for line in error_of(*tables)), error_of(*tables)


def test_every_error_of_a_route_is_reported_at_once() -> None:
    lines = error_of({"via": ["ftp://x:1"], "strategy": "x", "upstream_retry": -1, "lisen": 1})
    assert len(lines) == 4, lines


def _request(**fields: Any) -> Request:
    return Request(CLIENT, "127.0.0.1:1080", **fields)


def test_the_first_matching_route_wins_and_udp_takes_only_routes_without_a_destination() -> None:
    routes = Routes(
        routes_of(
            {"to": [".corp.example"], "via": "socks5://a:1"},
            {"user": ["alice"], "via": "socks5://b:1"},
            {"via": "direct"},
        )
    )
    corp = _request(command=Command.CONNECT, name="git.corp.example", port=443)
    assert routes.route_for(corp).name == "route[0]"  # type: ignore[union-attr]
    alice = _request(user="alice", command=Command.CONNECT, name="example.org", port=443)
    assert routes.route_for(alice).name == "route[1]"  # type: ignore[union-attr]
    udp = _request(user="bob", command=Command.UDP_ASSOCIATE, has_destination=False)
    assert routes.route_for(udp).name == "route[2]"  # type: ignore[union-attr]
    assert Routes().route_for(corp) is None


def _route(*names: str, strategy: str = "failover", retry: float = 30.0) -> Route:
    from socks5d.proxies import Proxy

    via = tuple(Upstream((Proxy(name, 1080),)) for name in names)
    return Route(Rule("route[0]", "pass"), via, strategy, retry)


def test_failover_order_skips_what_is_down_until_its_retry_passes() -> None:
    route = _route("a", "b", retry=10)
    a, b = route.via
    health = Health()
    assert health.order(route, 0) == [a, b]
    assert health.failed(a, route, 0) is True  # a state change: one log line
    assert health.failed(a, route, 1) is False  # still down: no second line
    assert health.order(route, 5) == [b, a]  # down ones last, tried only if all else fails
    assert health.order(route, 12) == [a, b]  # its retry passed: first again
    assert health.worked(a) is True and health.worked(a) is False


def test_round_robin_starts_one_further_each_time() -> None:
    route = _route("a", "b", "c", strategy="round-robin")
    a, b, c = route.via
    health = Health()
    assert [health.order(route, 0)[0] for _ in range(4)] == [a, b, c, a]
    health.failed(b, route, 0)
    assert health.order(route, 1) == [c, a, b]
