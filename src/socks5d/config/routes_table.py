"""The `[[route]]` tables of the file -> `routing.Route`s, every fault named by its key:
`route[1].via[0]: "ftp://x": unsupported proxy scheme 'ftp' ...`.

    [[route]]
    to = [".corp.example"]
    via = ["socks5h://gw1:1080", "socks5h://gw2:1080"]   # candidates, tried in order
    strategy = "failover"                                 # or "round-robin"
    upstream_retry = 30                                   # seconds a failed one is skipped

A `via` entry is `direct`, one proxy URL, a chain of them separated by spaces
(`"socks5://a:1080 socks5h://b:1080"`, first hop first), or the chain as a list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from socks5d.config.checks import ErrorList, choice, positive
from socks5d.config.rules_table import parse_rule
from socks5d.errors import ConfigError
from socks5d.proxies import Proxy, ProxyLike, as_chain
from socks5d.routing import DEFAULT_RETRY, STRATEGIES, Route, Upstream

_ROUTE_KEYS = ("via", "strategy", "upstream_retry")


def _upstream(entry: Any, key: str) -> Upstream:
    """One `via` entry: `direct`, a URL, URLs separated by spaces, or a list of URLs."""
    if isinstance(entry, str):
        urls = entry.split()
    elif isinstance(entry, list) and all(isinstance(item, str) for item in entry):
        urls = list(entry)
    else:
        raise ConfigError(f'{key}: must be "direct", a proxy URL, or a chain of them')
    if urls == ["direct"]:
        return Upstream()
    if not urls:
        raise ConfigError(f"{key}: empty")
    hops: list[ProxyLike] = []
    for index, url in enumerate(urls):
        where = key if len(urls) == 1 else f"{key}[{index}]"
        if url == "direct":
            raise ConfigError(f'{where}: "direct" stands alone, not in a chain')
        try:
            hops.append(Proxy.from_url(url))
        except ValueError as exc:
            raise ConfigError(f'{where}: "{url}": {exc}') from None
    try:
        return Upstream(tuple(as_chain(hops)))
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _route(table: Any, index: int) -> Route:
    key = f"route[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: must be a table")
    errors = ErrorList()
    rule = None
    with errors.collect():
        rule = parse_rule(table, "route", index, _ROUTE_KEYS)
    via: list[Upstream] = []
    if "via" not in table:
        errors.messages.append(f'{key}.via: missing: name at least one upstream, or "direct"')
    else:
        entries = table["via"] if isinstance(table["via"], list) else [table["via"]]
        if not entries:
            errors.messages.append(f'{key}.via: must name at least one upstream, or "direct"')
        for number, entry in enumerate(entries):
            with errors.collect():
                via.append(_upstream(entry, f"{key}.via[{number}]"))
    strategy, retry = "failover", DEFAULT_RETRY
    with errors.collect():
        if "strategy" in table:
            strategy = choice(table["strategy"], f"{key}.strategy", STRATEGIES)
    with errors.collect():
        if "upstream_retry" in table:
            retry = positive(table["upstream_retry"], f"{key}.upstream_retry")
    errors.raise_if_any()
    assert rule is not None
    return Route(rule, tuple(via), strategy, retry)


def _matches_everything(route: Route) -> bool:
    rule = route.rule
    return all(
        value is None
        for value in (
            rule.clients,
            rule.listeners,
            rule.users,
            rule.groups,
            rule.commands,
            rule.destinations,
            rule.ports,
        )
    )


def parse_route_tables(data: Mapping[str, Any], errors: ErrorList) -> tuple[Route, ...]:
    """The `[[route]]` tables of file contents `data`, in order; errors go to `errors` (a
    route at fault is left out). A route after one that matches every request could never
    be taken, and is an error too."""
    tables = data.get("route", [])
    if not isinstance(tables, list):
        errors.messages.append("route: must be an array of tables, [[route]]")
        return ()
    routes: list[Route] = []
    catch_all: str | None = None
    for index, table in enumerate(tables):
        if catch_all is not None:
            errors.messages.append(
                f"route[{index}]: unreachable: {catch_all} before it matches every request"
            )
            continue
        with errors.collect():
            route = _route(table, index)
            routes.append(route)
            if _matches_everything(route):
                catch_all = route.name
    return tuple(routes)
