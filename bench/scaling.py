"""Costs that must stay flat as the work grows, each against the same figure without the
growth, measured in the same repetition:

- `rules`: the connection and UDP datagram rates of socks5d with a `[[socks]]` block list of
  0, 1,000 and 100,000 `to` entries (networks and domain patterns mixed, none of which the
  traffic meets);
- `held`: the connection rate and round-trip latency while 9,000 idle tunnels are held;
- `associations`: the UDP datagram rate while 1,000 other UDP associations are open.
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
    connrate,
    udp_rate,
)
from bench.targets import Running, Socks5d, Target

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
                    rate = connrate(context, running, False, CONNRATE_CLIENTS, duration)
                    udp = udp_rate(context, running, duration)
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


#: Idle tunnels held while the rates are measured again: as many as one process may hold under
#: this machine's open-files cap (20,000: two descriptors a tunnel), and a smoke run's few.
HELD_TUNNELS = 9_000
SMOKE_HELD_TUNNELS = 50


class HeldTunnels(Scenario):
    name = "held"
    title = "With tunnels held"
    description = (
        "socks5d's connection rate (64 clients, as connrate) and round-trip latency (as "
        f"latency, unpinned), on an empty proxy and again while {HELD_TUNNELS:,} idle tunnels "
        "are held open through it (as idle; 9,000 because one process may hold at most "
        "about 10,000 under this machine's cap of 20,000 open files); each figure's ratio to "
        "the empty proxy's in the same repetition. Other targets: n/a."
    )

    @staticmethod
    def tunnels(settings: Settings) -> int:
        return SMOKE_HELD_TUNNELS if settings.smoke else HELD_TUNNELS

    def metrics(self, settings: Settings) -> list[Metric]:
        return [
            Metric("conn_per_s_empty", "conn/s, empty", "", True),
            Metric("conn_per_s_held", "conn/s, held", "", True),
            Metric("conn_ratio", "conn/s held ÷ empty", "", True, headline=True),
            Metric("p50_us_empty", "p50, empty", "µs", False),
            Metric("p50_us_held", "p50, held", "µs", False),
            Metric("p50_ratio", "p50 held ÷ empty", "", False, headline=True),
            Metric("held", "tunnels held", "", True, count=True),
        ]

    def run(self, context: Context, target: Target) -> Outcome:
        if not isinstance(target, Socks5d):
            return Outcome(not_applicable="measured for socks5d")
        outcome = Outcome()
        settings = context.settings
        duration = settings.duration

        def rates(running: Running, suffix: str) -> None:
            rate = connrate(context, running, False, CONNRATE_CLIENTS, duration)
            latency = context.loadgen.run(
                "pingpong",
                context.ports.echo,
                running.address,
                count=settings.latency_count,
                duration=duration,
                time_limit=duration + RUN_MARGIN,
                client_options=running.client_options,
            )
            running.check_alive()
            outcome.figures[f"conn_per_s_{suffix}"] = rate["rate"]
            outcome.figures[f"p50_us_{suffix}"] = latency["p50_us"]

        def measure() -> None:
            with target.start(context.workspace) as running:
                rates(running, "empty")
                with context.loadgen.hold_idle(
                    context.ports.echo,
                    running.address,
                    tunnels=self.tunnels(settings),
                    timeout=settings.idle_timeout,
                    client_options=running.client_options,
                ) as held:
                    outcome.figures["held"] = held["held"]
                    rates(running, "held")

        _attempt(outcome, "held", measure)
        figures = outcome.figures
        for ratio, held, empty in (
            ("conn_ratio", "conn_per_s_held", "conn_per_s_empty"),
            ("p50_ratio", "p50_us_held", "p50_us_empty"),
        ):
            base, value = figures.get(empty), figures.get(held)
            if base and value is not None:
                figures[ratio] = value / base
        return outcome


#: Open UDP associations beside the measured one: full runs, smoke runs.
HELD_ASSOCIATIONS = 1_000
SMOKE_HELD_ASSOCIATIONS = 20


class HeldAssociations(Scenario):
    name = "associations"
    title = "With UDP associations open"
    description = (
        f"socks5d's UDP datagram rate ({UDP_SIZE}-byte datagrams, {UDP_WINDOW} in flight, as "
        "udp) through one association, on an otherwise empty proxy and again while "
        f"{HELD_ASSOCIATIONS:,} other associations are open (each proven by one datagram "
        "echoed back, then idle); the rate's ratio to the empty proxy's in the same "
        "repetition. Other targets: n/a."
    )

    @staticmethod
    def associations(settings: Settings) -> int:
        return SMOKE_HELD_ASSOCIATIONS if settings.smoke else HELD_ASSOCIATIONS

    def metrics(self, settings: Settings) -> list[Metric]:
        return [
            Metric("dgram_per_s_one", "datagrams/s, one association", "", True),
            Metric("dgram_per_s_held", "datagrams/s, beside the others", "", True),
            Metric("dgram_ratio", "datagrams/s held ÷ one", "", True, headline=True),
            Metric("held", "associations open", "", True, count=True),
        ]

    def run(self, context: Context, target: Target) -> Outcome:
        if not isinstance(target, Socks5d):
            return Outcome(not_applicable="measured for socks5d")
        outcome = Outcome()
        settings = context.settings

        def rate(running: Running, suffix: str) -> None:
            udp = udp_rate(context, running, settings.duration)
            running.check_alive()
            outcome.figures[f"dgram_per_s_{suffix}"] = udp["rate"]
            if udp["errors"]:
                outcome.problems.append(f"{suffix}: {udp['errors']} errors")

        def measure() -> None:
            with target.start(context.workspace) as running:
                rate(running, "one")
                with context.loadgen.hold_idle(
                    context.ports.udp,
                    running.address,
                    tunnels=self.associations(settings),
                    timeout=settings.idle_timeout,
                    client_options=running.client_options,
                    mode="associations",
                ) as held:
                    outcome.figures["held"] = held["held"]
                    if held["failed"]:
                        outcome.problems.append(f"{held['failed']} associations failed")
                    rate(running, "held")

        _attempt(outcome, "associations", measure)
        figures = outcome.figures
        base, value = figures.get("dgram_per_s_one"), figures.get("dgram_per_s_held")
        if base and value is not None:
            figures["dgram_ratio"] = value / base
        return outcome
