"""Where a request goes out: `[[route]]` tables, matched like `[[socks]]` rules, each naming
its upstreams (`via`): `direct`, or a chain of proxies. Pure: no I/O, no clock of its own.

    routes = Routes(config_routes, groups)
    route = routes.route_for(rule_request)     # None: direct
    for candidate in health.order(route, now): # the upstreams to try, in turn
        ...
        health.failed(candidate, route, now) / health.worked(candidate)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from socks5d.proxies import Proxy
from socks5d.rules import Request, Rule, RuleSet

#: `strategy` values: the first that works in order, or one after the other in turn.
STRATEGIES = ("failover", "round-robin")
#: Seconds an upstream that failed is skipped while others are up (`upstream_retry`).
DEFAULT_RETRY = 30.0


@dataclass(frozen=True, slots=True)
class Upstream:
    """One `via` candidate: a chain of proxies, first hop first; empty for `direct`."""

    chain: tuple[Proxy, ...] = ()

    @property
    def direct(self) -> bool:
        return not self.chain

    def __str__(self) -> str:
        """As the log names it: `direct`, or the URLs (passwords as `***`), space-separated."""
        return " ".join(proxy.url for proxy in self.chain) or "direct"


@dataclass(frozen=True, slots=True)
class Route:
    """One `[[route]]`: what it matches (a `Rule` whose name is `route[N]`) and its upstreams."""

    rule: Rule
    via: tuple[Upstream, ...]
    strategy: str = "failover"
    #: seconds a failed upstream is skipped while another is up
    retry: float = DEFAULT_RETRY

    @property
    def name(self) -> str:
        return self.rule.name


class Routes:
    """The route tables in order: the first whose fields match a request routes it."""

    def __init__(
        self, routes: Iterable[Route] = (), groups: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self.routes = tuple(routes)
        self._by_name = {route.name: route for route in self.routes}
        self._rules = RuleSet(
            socks_rules=[route.rule for route in self.routes], socks_default="block", groups=groups
        )
        #: UDP associations name no destination: routes with `to` or `port` never take them
        self._udp_rules = RuleSet(
            socks_rules=[
                r.rule for r in self.routes if r.rule.destinations is None and r.rule.ports is None
            ],
            socks_default="block",
            groups=groups,
        )

    def route_for(self, request: Request) -> Route | None:
        """The route of `request` (a `[[socks]]` rule request), None when none matches."""
        rules = self._rules if request.has_destination else self._udp_rules
        decision = rules.check_request(request)
        return self._by_name.get(decision.rule) if decision.rule is not None else None


@dataclass(slots=True)
class Health:
    """Which upstreams failed lately, and each round-robin route's turn: kept by the server
    across reloads (an upstream is the same one while its URLs are)."""

    #: upstream -> the time (monotonic) until which it is skipped
    down_until: dict[Upstream, float] = field(default_factory=dict)
    #: route name -> how many requests it has taken (round-robin's turn)
    turns: dict[str, int] = field(default_factory=dict)

    def order(self, route: Route, now: float) -> list[Upstream]:
        """The upstreams to try, in turn: round-robin starts one further each time; those down
        go last (tried only when every other failed too)."""
        candidates = list(route.via)
        if route.strategy == "round-robin" and candidates:
            turn = self.turns.get(route.name, 0)
            self.turns[route.name] = turn + 1
            start = turn % len(candidates)
            candidates = candidates[start:] + candidates[:start]
        up = [u for u in candidates if self.down_until.get(u, 0.0) <= now]
        return up + [u for u in candidates if u not in up]

    def failed(self, upstream: Upstream, route: Route, now: float) -> bool:
        """`upstream` failed to connect or to handshake: skip it for `route.retry` seconds.
        True when it was up until now (a state change, worth one log line)."""
        was_up = self.down_until.get(upstream, 0.0) <= now
        self.down_until[upstream] = now + route.retry
        return was_up

    def worked(self, upstream: Upstream) -> bool:
        """`upstream` worked: up again. True when it was down (a state change)."""
        return self.down_until.pop(upstream, None) is not None
