"""Command line of the benchmark.

    python3 -m bench                       # every scenario, every target, 3 repetitions
    python3 -m bench --smoke --out DIR     # a few seconds: direct and socks5d, tiny loads
    python3 -m bench --targets direct,dante --scenarios bulk,latency --reps 5

Before anything is measured the benchmark builds what it needs (bench/.build/), then
re-executes itself in a private network namespace (see netns.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import build, netns, runner, scenarios, targets
from bench.scenarios import Settings

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench",
        description="Benchmark socks5d against direct connections, Dante, microsocks and "
        "pproxy; writes results.json, results.md and chart.png.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds in all: direct and socks5d (default flags), tiny loads, 1 repetition",
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument(
        "--targets",
        type=_names,
        default=None,
        help=f"comma-separated, from {','.join(targets.by_name())} (direct is always run)",
    )
    parser.add_argument(
        "--scenarios",
        type=_names,
        default=None,
        help=f"comma-separated, from {','.join(scenarios.by_name())}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default bench/results; smoke runs: a new temporary directory)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds per timed measurement (default 2; smoke 0.3)",
    )
    parser.add_argument(
        "--commit",
        metavar="REV",
        default=None,
        help="run socks5d as committed at this git revision (default: src/ as it is when the "
        "run starts; either way one copy serves the whole run)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the proxies' logs and configuration files"
    )
    return parser


def settings_for(args: argparse.Namespace) -> Settings:
    if args.smoke:
        return Settings(
            reps=1,
            duration=args.duration or 0.3,
            latency_count=200,
            idle_sizes=(50,),
            idle_timeout=10.0,
            smoke=True,
        )
    return Settings(
        reps=args.reps or 3,
        duration=args.duration or 2.0,
        latency_count=50_000,
        idle_sizes=(5_000, 10_000),
        idle_timeout=60.0,
    )


def _target_names(args: argparse.Namespace) -> list[str]:
    if args.targets is not None:
        return list(dict.fromkeys(["direct", *args.targets]))
    if args.smoke:
        return ["direct", targets.PLAIN_SOCKS5D.name]
    return [target.name for target in targets.FULL]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    known_targets, known_scenarios = targets.by_name(), scenarios.by_name()
    target_names = _target_names(args)
    scenario_names = args.scenarios or list(known_scenarios)
    unknown = [name for name in target_names if name not in known_targets]
    unknown += [name for name in scenario_names if name not in known_scenarios]
    if unknown:
        print(f"bench: unknown target or scenario: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.reps is not None and args.reps < 1:
        print("bench: --reps must be at least 1", file=sys.stderr)
        return 2

    if netns.inside():
        network: dict[str, object] = {"namespace": True, **netns.configure()}
    else:
        try:
            build.loadgen()
        except build.BuildError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        if "pproxy" in target_names:
            try:
                build.pproxy()
            except build.BuildError as exc:
                print(f"bench: {exc}; pproxy is skipped", file=sys.stderr)
        reason = netns.reexec(argv)  # returns only when no namespace can be made
        print(f"bench: WARNING: running on the host's loopback: {reason}", file=sys.stderr)
        network = {"namespace": False, "warning": reason, **netns.host_settings()}

    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="socks5d-bench-smoke-")) if args.smoke else RESULTS_DIR
    return runner.run(
        settings_for(args),
        [known_targets[name] for name in target_names],
        [known_scenarios[name] for name in scenario_names],
        out=out,
        network=network,
        command=" ".join(["python3 -m bench", *argv]),
        keep_logs=args.keep_logs,
        default_targets=args.targets is None and not args.smoke,
        commit=args.commit,
    )
