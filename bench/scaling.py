"""Costs that must stay flat as the work grows: the connection rate and the UDP datagram rate
of socks5d with a `[[socks]]` block list of 0, 1,000 and 100,000 `to` entries (networks and
domain patterns mixed, none of which the traffic meets), each against the rate without rules
measured in the same repetition.
"""

from __future__ import annotations

from bench.loadgen import RUN_MARGIN
from bench.scenarios import (
    CONNRATE_CLIENTS,
    UDP_SIZE,
    UDP_WINDOW,
    Context,
    Metric,
    Outcome,
    Scenario,
    Settings,
    _attempt,
)
from bench.targets import Socks5d, Target

#: Block-list sizes: full runs, smoke runs.
RULE_SIZES = (0, 1_000, 100_000)
SMOKE_RULE_SIZES = (0, 100)


def block_list(entries: int) -> str:
    """A `[[socks]]` block rule of `entries` `to` entries: every other one a /24 in
    10.0.0.0/8, the others `.blockedN.example` patterns; the benchmark's traffic (127.0.0.1)
    meets none, so every request is checked against all of them."""
    if entries == 0:
        return ""
    to = []
    for number in range(entries):
        if number % 2:
            to.append(f'".blocked{number}.example"')
        else:
            to.append(f'"10.{(number >> 8) & 0xFF}.{number & 0xFF}.0/24"')
    return f'\n[[socks]]\naction = "block"\nto = [{", ".join(to)}]\n'


class RuleScale(Scenario):
    name = "rules"
    title = "Rules at scale"
    description = (
        "socks5d with a [[socks]] block list of N `to` entries (half /24 networks, half domain "
        "patterns, none matching the traffic, so each request and datagram is checked against "
        f"all of them): the connection rate ({CONNRATE_CLIENTS} clients, as connrate) and the "
        f"UDP datagram rate ({UDP_SIZE}-byte datagrams, {UDP_WINDOW} in flight, as udp) for each "
        "N, and each rate's ratio to N = 0 in the same repetition. Other targets: n/a."
    )

    @staticmethod
    def sizes(settings: Settings) -> tuple[int, ...]:
        return SMOKE_RULE_SIZES if settings.smoke else RULE_SIZES

    def metrics(self, settings: Settings) -> list[Metric]:
        found = []
        for n in self.sizes(settings):
            headline = n == max(self.sizes(settings))
            found.append(Metric(f"conn_per_s_{n}", f"conn/s, {n:,} rules", "", True))
            found.append(Metric(f"dgram_per_s_{n}", f"datagrams/s, {n:,} rules", "", True))
            if n:
                found.append(
                    Metric(f"conn_ratio_{n}", f"conn/s ÷ none, {n:,}", "", True, headline=headline)
                )
                found.append(Metric(f"dgram_ratio_{n}", f"datagrams/s ÷ none, {n:,}", "", True))
        return found

    def run(self, context: Context, target: Target) -> Outcome:
        if not isinstance(target, Socks5d):
            return Outcome(not_applicable="rules are socks5d's")
        outcome = Outcome()
        duration = context.settings.duration
        for n in self.sizes(context.settings):

            def measure(n: int = n) -> None:
                variant = target.with_config(f"rules{n}", block_list(n))
                with variant.start(context.workspace) as running:
                    rate = context.loadgen.run(
                        "connrate",
                        context.ports.echo,
                        running.address,
                        clients=CONNRATE_CLIENTS,
                        duration=duration,
                        time_limit=duration + RUN_MARGIN,
                    )
                    udp = context.loadgen.run(
                        "udp",
                        context.ports.udp,
                        running.address,
                        window=UDP_WINDOW,
                        size=UDP_SIZE,
                        duration=duration,
                        time_limit=duration + RUN_MARGIN,
                    )
                    running.check_alive()
                outcome.figures[f"conn_per_s_{n}"] = rate["rate"]
                outcome.figures[f"dgram_per_s_{n}"] = udp["rate"]
                if rate["errors"] or udp["errors"]:
                    outcome.problems.append(f"{n} rules: errors {rate['errors']}/{udp['errors']}")

            _attempt(outcome, f"{n} rules", measure)
        base_conn, base_udp = (
            outcome.figures.get("conn_per_s_0"),
            outcome.figures.get("dgram_per_s_0"),
        )
        for n in self.sizes(context.settings):
            conn, udp = (
                outcome.figures.get(f"conn_per_s_{n}"),
                outcome.figures.get(f"dgram_per_s_{n}"),
            )
            if n and base_conn and conn is not None:
                outcome.figures[f"conn_ratio_{n}"] = conn / base_conn
            if n and base_udp and udp is not None:
                outcome.figures[f"dgram_ratio_{n}"] = udp / base_udp
        return outcome
