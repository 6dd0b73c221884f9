"""One benchmark run: every scenario against every target, repeated, with progress.

Within a repetition each scenario runs against all targets back to back, in an order rotated
by one each repetition, so that drift (thermal, background work) falls on all of them alike.
The results dictionary built here is what results.json holds; report.py derives the rest.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from bench import build, procs, report
from bench.loadgen import Loadgen, LoadgenError
from bench.scenarios import Context, Outcome, Scenario, Settings, headline_figure
from bench.targets import (
    PLAIN_SOCKS5D,
    Target,
    TargetError,
    Workspace,
    is_socks5d,
    use_socks5d_source,
)


def _say(message: str) -> None:
    print(message, flush=True)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally` that stops a child


def machine(socks5d_revision: str) -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "socks5d_git": socks5d_revision,
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine shows here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _describe(target: Target) -> dict[str, Any]:
    note = target.unavailable()
    return {
        "name": target.name,
        "available": note is None,
        "note": note,
        "version": target.version() if note is None else None,
        "supports_udp": target.supports_udp,
        "flags": list(getattr(target, "flags", ())),
    }


def run(
    settings: Settings,
    chosen_targets: Sequence[Target],
    chosen_scenarios: Sequence[Scenario],
    *,
    out: Path,
    network: dict[str, Any],
    command: str,
    keep_logs: bool,
    default_targets: bool,
    commit: str | None = None,
) -> int:
    """Measure, then write results.json, results.md and chart.png to `out`.

    Args:
        commit: run socks5d as committed at this git revision, instead of the work tree's
            src/ as it is when the run starts.

    Returns:
        The exit status: 0 once the results are written (figures that failed are reported
        in them), 1 when `commit` is unknown, 130 when interrupted.
    """
    started = time.monotonic()
    load_at_start = load_average()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    nofile = procs.raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="socks5d-bench-"))
    try:
        source, revision = build.snapshot_socks5d(workdir, commit)
    except build.BuildError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        _say(f"bench: {exc}")
        return 1
    use_socks5d_source(source)
    _say(f"bench: socks5d from git {revision}, copied to {source}")
    measured_on = machine(revision)
    descriptions = [_describe(target) for target in chosen_targets]
    available = [t for t, d in zip(chosen_targets, descriptions, strict=True) if d["available"]]
    notes = []
    tunnels = max(settings.idle_sizes)
    if any(scenario.name == "idle" for scenario in chosen_scenarios) and nofile < 2 * tunnels + 64:
        notes.append(
            f"open files are limited to {nofile:,} per process here and the limit cannot be "
            f"raised (no CAP_SYS_RESOURCE); a single-process proxy needs two descriptors per "
            f"tunnel, so holding {tunnels:,} idle tunnels runs out of descriptors (EMFILE) "
            f"and a few tunnels fail; proxies spread over processes (Dante, socks5d --workers) "
            f"are not limited this way"
        )
    if default_targets and not any(is_socks5d(target.name) for target in available):
        fallback = _describe(PLAIN_SOCKS5D)
        if fallback["available"]:
            descriptions.insert(1, fallback)
            available.insert(1, PLAIN_SOCKS5D)
            notes.append(
                "none of the socks5d engine configurations can run with the installed socks5d "
                "(see the skipped targets), so socks5d ran once with its default flags"
            )
    for description in descriptions:
        if not description["available"]:
            _say(f"bench: skipping {description['name']}: {description['note']}")
    _say(
        f"bench: {len(available)} targets ({', '.join(t.name for t in available)}), "
        f"{len(chosen_scenarios)} scenarios, {settings.reps} repetition(s)"
    )

    results: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        scenario.name: {target.name: {"reps": []} for target in available}
        for scenario in chosen_scenarios
    }
    workspace = Workspace(workdir)
    problems = 0
    try:
        loadgen = Loadgen(build.loadgen())
        with loadgen.servers(workspace.log("loadgen-servers")) as (servers, ports):
            context = Context(settings, loadgen, ports, servers, workspace)
            for rep in range(settings.reps):
                shift = rep % len(available)
                order = [*available[shift:], *available[:shift]]
                for scenario in chosen_scenarios:
                    for target in order:
                        record = _run_one(context, scenario, target)
                        results[scenario.name][target.name]["reps"].append(record)
                        problems += len(record["problems"])
                        _progress(started, rep, settings, scenario, target, record)
                if rep == 0 and settings.reps > 1:
                    remaining = (time.monotonic() - started) * (settings.reps - 1)
                    _say(f"bench: about {remaining / 60:.0f} min to go")
    except KeyboardInterrupt:
        _say("bench: interrupted; no results written")
        return 130
    finally:
        if keep_logs or problems:
            _say(f"bench: logs and configuration files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    data: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "elapsed_seconds": time.monotonic() - started,
        "machine": {**measured_on, "load_at_start": load_at_start, "load_at_end": load_average()},
        "network": {**network, "nofile_limit": nofile},
        "settings": {**asdict(settings), "idle_sizes": list(settings.idle_sizes)},
        "targets": descriptions,
        "notes": notes,
        "scenarios": [
            {
                "name": scenario.name,
                "title": scenario.title,
                "description": scenario.description,
                "metrics": [asdict(metric) for metric in scenario.metrics(settings)],
            }
            for scenario in chosen_scenarios
        ],
        "results": results,
    }
    report.summarize(data)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "results.json", data)
    report.write_markdown(out / "results.md", data)
    chart_note = report.write_chart(out / "chart.png", data)
    if chart_note:
        _say(f"bench: {chart_note}")
    _say(f"bench: done in {data['elapsed_seconds']:.0f} s; results in {out}")
    return 0


def _run_one(context: Context, scenario: Scenario, target: Target) -> dict[str, Any]:
    began = time.monotonic()
    try:
        outcome = scenario.run(context, target)
    except (TargetError, LoadgenError, OSError) as exc:
        outcome = Outcome(problems=[str(exc)])
    return {
        "figures": outcome.figures,
        "problems": outcome.problems,
        "not_applicable": outcome.not_applicable,
        "seconds": round(time.monotonic() - began, 2),
    }


def _progress(
    started: float,
    rep: int,
    settings: Settings,
    scenario: Scenario,
    target: Target,
    record: dict[str, Any],
) -> None:
    if record["not_applicable"]:
        summary = "n/a"
    else:
        summary = headline_figure(record["figures"], scenario, settings)
    _say(
        f"[{time.monotonic() - started:5.0f} s] {rep + 1}/{settings.reps} {scenario.name:<8} "
        f"{target.name:<16} {summary}  ({record['seconds']:.1f} s)"
    )
    for problem in record["problems"]:
        print(f"    problem: {problem}", file=sys.stderr, flush=True)
