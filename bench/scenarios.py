"""The scenarios: what each measures, how, and under which names its figures are reported.

Each scenario starts the target afresh (so one measurement's leftovers never weigh on the
next), drives it with the C load generator, and returns its figures; a figure it could not
measure is None and the reason goes to `problems`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import procs
from bench.loadgen import RUN_MARGIN, Figures, Loadgen, LoadgenError, Ports
from bench.report import number
from bench.targets import PASSWORD, USERNAME, Running, Target, TargetError, Workspace

#: Concurrent clients of the connection-rate scenario.
CONNRATE_CLIENTS = 64
#: Seconds of the one-client warm-up before each connection-rate measurement.
CONNRATE_WARMUP = 0.5
#: UDP: datagrams in flight at once, and payload bytes per datagram.
UDP_WINDOW, UDP_SIZE = 32, 64
#: The CPU that the pinned latency run puts client, proxy and echo server on.
PINNED_CPU = {0}


@dataclass(frozen=True)
class Settings:
    """How long and how much: a full run, or a smoke run of a few seconds."""

    reps: int
    #: seconds of each timed measurement (bulk, connrate, udp; the cap of a latency run)
    duration: float
    #: round trips per latency run (fewer if `duration` runs out first)
    latency_count: int
    #: numbers of idle tunnels, each measured on a freshly started proxy
    idle_sizes: tuple[int, ...]
    #: seconds allowed to establish the idle tunnels
    idle_timeout: float
    smoke: bool = False


@dataclass(frozen=True)
class Metric:
    """One reported figure."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    #: compared with the peers and drawn in the chart
    headline: bool = False
    #: also reported as a ratio to the direct target's figure
    vs_direct: bool = False
    #: a count (errors, tunnels held): shown without decimals
    count: bool = False


@dataclass
class Context:
    """What every scenario run gets."""

    settings: Settings
    loadgen: Loadgen
    ports: Ports
    #: the load generator's servers, pinned with everything else for the pinned latency run
    servers: procs.Child
    workspace: Workspace


@dataclass
class Outcome:
    """One scenario run against one target."""

    figures: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: why the scenario does not apply to the target ("n/a"), if it does not
    not_applicable: str | None = None


class Scenario:
    name = ""
    title = ""
    #: what it measures and how, for the README and the report
    description = ""

    def metrics(self, settings: Settings) -> list[Metric]:
        raise NotImplementedError

    def run(self, context: Context, target: Target) -> Outcome:
        raise NotImplementedError


def _attempt(outcome: Outcome, what: str, step: Callable[[], None]) -> None:
    """Run one measurement; a failure becomes a problem, not the end of the scenario."""
    try:
        step()
    except (LoadgenError, TargetError, OSError) as exc:
        outcome.problems.append(f"{what}: {exc}")


def failure_summary(figures: Figures) -> str:
    """The load generator's failures by phase: "reply 4 (reply X'01'), connect 1 (...)"."""
    return ", ".join(
        f"{phase} {detail['count']} (first: {detail['first']})"
        for phase, detail in figures.get("failures", {}).items()
    )


def _cpu(running: Running) -> float | None:
    return None if running.pid is None else procs.cpu_seconds(running.pid)


class Bulk(Scenario):
    name = "bulk"
    title = "Bulk throughput"
    description = (
        "One tunnel, then 8 parallel tunnels, each way: upload (client to sink) and download "
        "(source to client), for a fixed duration. Upload time runs until the sink has "
        "acknowledged every byte; download counts what arrived within the duration. GB/s is "
        "10^9 payload bytes per second. CPU s/GB is the proxy's whole process tree "
        "(utime+stime, reaped children included, from /proc) per 10^9 bytes relayed."
    )
    RUNS = (("up", 1), ("down", 1), ("up", 8), ("down", 8))

    def metrics(self, settings: Settings) -> list[Metric]:
        rates = [
            Metric(f"{way}{n}_gbps", f"{way} {n}", "GB/s", True, headline=True, vs_direct=True)
            for way, n in self.RUNS
        ]
        cpu = [
            Metric(f"{way}{n}_cpu_s_per_gb", f"CPU {way} {n}", "s/GB", False)
            for way, n in self.RUNS
        ]
        return [*rates, *cpu, Metric("errors", "errors", "", False, count=True)]

    def run(self, context: Context, target: Target) -> Outcome:
        outcome = Outcome({"errors": 0})
        duration = context.settings.duration
        with target.start(context.workspace) as running:
            for way, streams in self.RUNS:

                def measure(way: str = way, streams: int = streams) -> None:
                    port = context.ports.sink if way == "up" else context.ports.source
                    before = _cpu(running)
                    figures = context.loadgen.run(
                        "bulk",
                        port,
                        running.address,
                        direction=way,
                        streams=streams,
                        duration=duration,
                        time_limit=duration + RUN_MARGIN,
                        client_options=running.client_options,
                    )
                    after = _cpu(running)
                    running.check_alive()
                    key = f"{way}{streams}"
                    outcome.figures[f"{key}_gbps"] = figures["gbps"]
                    gigabytes = figures["bytes"] / 1e9
                    if before is not None and after is not None and gigabytes > 0:
                        outcome.figures[f"{key}_cpu_s_per_gb"] = (after - before) / gigabytes
                    outcome.figures["errors"] = (outcome.figures["errors"] or 0) + figures["errors"]

                _attempt(outcome, f"{way} {streams}", measure)
        return outcome


class ConnectionRate(Scenario):
    name = "connrate"
    title = "Connection rate"
    description = (
        f"{CONNRATE_CLIENTS} concurrent clients for a fixed duration, each in a loop: TCP "
        "connect to the proxy, SOCKS5 greeting (no authentication; or username/password, "
        "RFC 1929, for the userpass variant), CONNECT to the echo server by IPv4 address, a "
        "32-byte echo, close. Connections per second count completed loops; errors count any "
        "failure (refused, reset, wrong reply); latency is that of a whole loop. Each "
        f"measurement follows a warm-up of one client looping for {CONNRATE_WARMUP} s "
        "(discarded), which also fills socks5d's login cache, so userpass figures are the "
        "steady state. socks5d configurations also run with a users file (--users), "
        "reported as userpass rate and its ratio to the same configuration's no-auth rate."
    )

    def metrics(self, settings: Settings) -> list[Metric]:
        return [
            Metric("conn_per_s", "conn/s", "", True, headline=True, vs_direct=True),
            Metric("p50_ms", "p50", "ms", False, vs_direct=True),
            Metric("p99_ms", "p99", "ms", False, vs_direct=True),
            Metric("errors", "errors", "", False, count=True),
            Metric("userpass_conn_per_s", "userpass conn/s", "", True),
            Metric("userpass_ratio", "userpass ÷ no-auth", "", True),
            Metric("userpass_p50_ms", "userpass p50", "ms", False),
            Metric("userpass_p99_ms", "userpass p99", "ms", False),
            Metric("userpass_errors", "userpass errors", "", False, count=True),
        ]

    def run(self, context: Context, target: Target) -> Outcome:
        outcome = Outcome()

        def measure(prefix: str, userpass: bool) -> None:
            duration = context.settings.duration
            with target.start(context.workspace, userpass=userpass) as running:
                warmup = min(CONNRATE_WARMUP, duration)
                connrate(context, running, userpass, clients=1, duration=warmup)
                figures = connrate(context, running, userpass, CONNRATE_CLIENTS, duration)
                running.check_alive()
            outcome.figures[f"{prefix}conn_per_s"] = figures["rate"]
            outcome.figures[f"{prefix}p50_ms"] = figures["p50_ms"]
            outcome.figures[f"{prefix}p99_ms"] = figures["p99_ms"]
            outcome.figures[f"{prefix}errors"] = figures["errors"]
            if figures["errors"]:
                outcome.problems.append(
                    f"{prefix or 'no-auth '}errors: {failure_summary(figures)}".replace("_", " ")
                )

        _attempt(outcome, "no-auth", lambda: measure("", False))
        if target.supports_userpass:
            _attempt(outcome, "userpass", lambda: measure("userpass_", True))
            plain = outcome.figures.get("conn_per_s")
            userpass = outcome.figures.get("userpass_conn_per_s")
            if plain and userpass is not None:
                outcome.figures["userpass_ratio"] = userpass / plain
        return outcome


def connrate(
    context: Context, running: Running, userpass: bool, clients: int, duration: float
) -> Figures:
    """The load generator's connrate loop against `running` (the connrate and scaling
    scenarios)."""
    return context.loadgen.run(
        "connrate",
        context.ports.echo,
        running.address,
        credentials=(USERNAME, PASSWORD) if userpass else None,
        clients=clients,
        duration=duration,
        time_limit=duration + RUN_MARGIN,
        client_options=running.client_options,
    )


def udp_rate(context: Context, running: Running, duration: float) -> Figures:
    """The load generator's udp loop against `running` (the udp and scaling scenarios)."""
    return context.loadgen.run(
        "udp",
        context.ports.udp,
        running.address,
        window=UDP_WINDOW,
        size=UDP_SIZE,
        duration=duration,
        time_limit=duration + RUN_MARGIN,
        client_options=running.client_options,
    )


class Latency(Scenario):
    name = "latency"
    title = "Round-trip latency"
    description = (
        "One tunnel to the echo server, 1 byte sent and its echo awaited, again and again "
        "(after 100 unrecorded round trips); p50 and p99 of the round-trip time. Run twice: "
        "unpinned (the scheduler places client, proxy and echo server), and with the client, "
        "the proxy's whole process tree and the echo server pinned to CPU 0."
    )

    def metrics(self, settings: Settings) -> list[Metric]:
        return [
            Metric("p50_us", "p50", "µs", False, headline=True, vs_direct=True),
            Metric("p99_us", "p99", "µs", False, vs_direct=True),
            Metric("pinned_p50_us", "pinned p50", "µs", False, headline=True, vs_direct=True),
            Metric("pinned_p99_us", "pinned p99", "µs", False, vs_direct=True),
        ]

    def run(self, context: Context, target: Target) -> Outcome:
        outcome = Outcome()
        with target.start(context.workspace) as running:

            def measure(prefix: str, cpus: set[int] | None) -> None:
                figures = context.loadgen.run(
                    "pingpong",
                    context.ports.echo,
                    running.address,
                    cpus=cpus,
                    count=context.settings.latency_count,
                    duration=context.settings.duration,
                    time_limit=context.settings.duration + RUN_MARGIN,
                    client_options=running.client_options,
                )
                running.check_alive()
                outcome.figures[f"{prefix}p50_us"] = figures["p50_us"]
                outcome.figures[f"{prefix}p99_us"] = figures["p99_us"]

            def pinned() -> None:
                if running.pid is not None:
                    procs.pin_tree(running.pid, PINNED_CPU)
                procs.pin_tree(context.servers.pid, PINNED_CPU)
                try:
                    measure("pinned_", PINNED_CPU)
                finally:
                    procs.pin_tree(context.servers.pid, procs.all_cpus())

            _attempt(outcome, "unpinned", lambda: measure("", None))
            _attempt(outcome, "pinned", pinned)
        return outcome


class Idle(Scenario):
    name = "idle"
    title = "Idle tunnels"
    description = (
        "N tunnels opened through the proxy to the echo server (at most 64 handshakes at a "
        "time), each proven with a 1-byte echo, then held open. Memory is the sum of VmRSS "
        "over the proxy's process tree (/proc/PID/status of the proxy and every descendant), "
        "read after the proxy started and again once all tunnels are held; KiB per tunnel is "
        "the difference divided by the tunnels held. Each N runs on a freshly started proxy."
    )

    def metrics(self, settings: Settings) -> list[Metric]:
        metrics = []
        for n in settings.idle_sizes:
            metrics += [
                Metric(f"held_{n}", f"held of {n:,}", "", True, count=True),
                Metric(
                    f"kib_per_tunnel_{n}",
                    f"per tunnel @{n:,}",
                    "KiB",
                    False,
                    headline=n == max(settings.idle_sizes),
                ),
                Metric(f"pss_kib_per_tunnel_{n}", f"PSS per tunnel @{n:,}", "KiB", False),
            ]
        return metrics

    def run(self, context: Context, target: Target) -> Outcome:
        outcome = Outcome()
        for n in context.settings.idle_sizes:
            _attempt(
                outcome, f"{n} tunnels", lambda n=n: self._measure(context, target, n, outcome)
            )
        return outcome

    @staticmethod
    def _measure(context: Context, target: Target, n: int, outcome: Outcome) -> None:
        with target.start(context.workspace) as running:
            pid = running.pid
            before = None if pid is None else (procs.rss_kib(pid), procs.pss_kib(pid))
            with context.loadgen.hold_idle(
                context.ports.echo,
                running.address,
                tunnels=n,
                timeout=context.settings.idle_timeout,
                client_options=running.client_options,
            ) as figures:
                after = None if pid is None else (procs.rss_kib(pid), procs.pss_kib(pid))
                running.check_alive()
        held = figures["held"]
        outcome.figures[f"held_{n}"] = held
        if held < n:
            outcome.problems.append(
                f"{n} tunnels: {held} held, {figures['failed']} failed, "
                f"{figures['pending']} unfinished after {figures['seconds']:.1f} s; "
                f"failures: {failure_summary(figures) or 'none'}"
            )
        if figures.get("still_open", held) < held:
            outcome.problems.append(
                f"{n} tunnels: {held - figures['still_open']} closed by the proxy while held"
            )
        if before is not None and after is not None and held > 0:
            outcome.figures[f"kib_per_tunnel_{n}"] = (after[0] - before[0]) / held
            outcome.figures[f"pss_kib_per_tunnel_{n}"] = (after[1] - before[1]) / held
            outcome.figures[f"rss_before_kib_{n}"] = before[0]
            outcome.figures[f"rss_after_kib_{n}"] = after[0]


class Udp(Scenario):
    name = "udp"
    title = "UDP datagrams"
    description = (
        f"UDP ASSOCIATE, then {UDP_SIZE}-byte datagrams (plus the 10-byte RFC 1928 header) "
        f"through the relay to a UDP echo server, keeping {UDP_WINDOW} in flight; datagrams "
        "per second count echoes received within the duration. A window with no echo for "
        "20 ms counts as lost and is sent again. Direct: the same datagrams straight to the "
        "echo server, without the header."
    )

    def metrics(self, settings: Settings) -> list[Metric]:
        return [
            Metric("dgram_per_s", "datagrams/s", "", True, headline=True, vs_direct=True),
            Metric("lost", "lost", "", False, count=True),
            Metric("errors", "errors", "", False, count=True),
        ]

    def run(self, context: Context, target: Target) -> Outcome:
        if not target.supports_udp:
            return Outcome(not_applicable=f"{target.name} does not support UDP ASSOCIATE")
        outcome = Outcome()
        duration = context.settings.duration

        def measure() -> None:
            with target.start(context.workspace) as running:
                figures = udp_rate(context, running, duration)
                running.check_alive()
            outcome.figures["dgram_per_s"] = figures["rate"]
            outcome.figures["lost"] = figures["lost"]
            outcome.figures["errors"] = figures["errors"]

        _attempt(outcome, "udp", measure)
        return outcome


ALL: tuple[Scenario, ...] = (Bulk(), ConnectionRate(), Latency(), Idle(), Udp())


def by_name() -> dict[str, Scenario]:
    """Every scenario by name, those of bench/scaling.py after the ones here."""
    from bench.scaling import HeldAssociations, HeldTunnels, RuleScale  # builds on this module

    scaling = (RuleScale(), HeldTunnels(), HeldAssociations())
    return {scenario.name: scenario for scenario in (*ALL, *scaling)}


def headline_figure(figures: dict[str, Any], scenario: Scenario, settings: Settings) -> str:
    """A short progress summary of one outcome's headline figures."""
    parts = []
    for metric in scenario.metrics(settings):
        value = figures.get(metric.key)
        if (metric.headline or metric.key.startswith("held_")) and value is not None:
            shown = f"{value:,.0f}" if metric.count else number(value)
            parts.append(f"{metric.label} {shown} {metric.unit}".strip())
    return ", ".join(parts)
