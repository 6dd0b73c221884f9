"""Turning per-repetition figures into results.json, results.md and chart.png.

Everything here works on the JSON-ready dictionary the run builds (`build_results`), so the
files say the same thing. Summaries: median with min and max over the repetitions; ratios to
direct are taken within each repetition (target ÷ direct, same repetition), then summarised
the same way; socks5d against a peer is the ratio of the two medians.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.targets import PEERS, is_socks5d

Data = dict[str, Any]


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def summarize(data: Data) -> None:
    """Add `summary` to every (scenario, target) of `data["results"]`, and the peer
    comparisons to `data["comparisons"]`.
    """
    for scenario in data["scenarios"]:
        per_target = data["results"].get(scenario["name"], {})
        direct_reps = per_target.get("direct", {}).get("reps", [])
        for entry in per_target.values():
            summary = {}
            for metric in scenario["metrics"]:
                key = metric["key"]
                values = [
                    rep["figures"][key]
                    for rep in entry["reps"]
                    if rep["figures"].get(key) is not None
                ]
                ratios = []
                if metric["vs_direct"]:
                    for index, rep in enumerate(entry["reps"]):
                        value = rep["figures"].get(key)
                        base = (
                            direct_reps[index]["figures"].get(key)
                            if index < len(direct_reps)
                            else None
                        )
                        if value is not None and base:
                            ratios.append(value / base)
                summary[key] = {"value": _spread(values), "ratio_to_direct": _spread(ratios)}
            entry["summary"] = summary
    data["comparisons"] = _comparisons(data)


def _median(data: Data, scenario: str, target: str, key: str) -> float | None:
    entry = data["results"].get(scenario, {}).get(target)
    if entry is None:
        return None
    spread = entry["summary"].get(key, {}).get("value")
    return None if spread is None else spread["median"]


def _comparisons(data: Data) -> list[dict[str, Any]]:
    measured = [target["name"] for target in data["targets"] if target["available"]]
    rows = []
    for ours in (name for name in measured if is_socks5d(name)):
        for peer in (name for name in measured if name in PEERS):
            for scenario in data["scenarios"]:
                for metric in scenario["metrics"]:
                    if not metric["headline"]:
                        continue
                    mine = _median(data, scenario["name"], ours, metric["key"])
                    theirs = _median(data, scenario["name"], peer, metric["key"])
                    rows.append(
                        {
                            "socks5d": ours,
                            "peer": peer,
                            "scenario": scenario["name"],
                            "metric": metric["key"],
                            "ratio": mine / theirs if mine is not None and theirs else None,
                        }
                    )
    return rows


def write_json(path: Path, data: Data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- Markdown


def number(value: float) -> str:
    """Three significant digits, thousands separated: 48,267 / 812 / 2.86 / 0.0413."""
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(summary: dict[str, Any] | None, metric: dict[str, Any], direct: bool) -> str:
    if summary is None or summary["value"] is None:
        return "-"
    spread = summary["value"]
    show = (lambda value: f"{value:,.0f}") if metric.get("count") else number
    text = show(spread["median"])
    if spread["n"] > 1 and spread["min"] != spread["max"]:
        text += f" [{show(spread['min'])}, {show(spread['max'])}]"
    ratio = summary.get("ratio_to_direct")
    if ratio is not None and not direct:
        text += f" ·{number(ratio['median'])}x"
    return text


def _arrow(metric: dict[str, Any]) -> str:
    return "↑" if metric["higher_is_better"] else "↓"


def _heading(metric: dict[str, Any]) -> str:
    unit = f" {metric['unit']}" if metric["unit"] else ""
    return f"{metric['label']}{unit} {_arrow(metric)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _machine_lines(data: Data) -> list[str]:
    machine, network, settings = data["machine"], data["network"], data["settings"]
    if network.get("namespace"):
        where = "private network namespace (unshare -n)"
    else:
        where = f"host loopback ({network.get('warning', 'no namespace')})"
    sysctls = "; ".join(
        f"{key.split('.')[-1]} {value}" for key, value in network.items() if key.startswith("net.")
    )
    versions = "; ".join(
        f"{target['name']}: {target['version']}"
        for target in data["targets"]
        if target.get("version")
    )
    rows = [
        ["CPU", f"{machine['cpus']} x {machine['cpu_model']}"],
        ["kernel", machine["kernel"]],
        ["Python", machine["python"]],
        [
            "load average",
            f"{machine.get('load_at_start', '?')} at the start, "
            f"{machine.get('load_at_end', '?')} at the end (1, 5, 15 min)",
        ],
        ["socks5d", f"git {machine['socks5d_git']}"],
        ["network", f"{where}; {sysctls}; open files {network.get('nofile_limit', '?')}"],
        ["programs", versions or "-"],
        [
            "run",
            f"{data['generated']}, `{data['command']}`, {settings['reps']} repetition(s), "
            f"{settings['duration']} s per timed measurement, idle "
            f"{', '.join(f'{n:,}' for n in settings['idle_sizes'])} tunnels, "
            f"{data['elapsed_seconds']:.0f} s in all",
        ],
    ]
    return _table(["machine", ""], rows)


def markdown(data: Data) -> str:
    lines = ["# socks5d benchmark", ""]
    lines += _machine_lines(data)
    lines += [
        "",
        "Each cell: median [min, max] over the repetitions, then `·Rx`: the ratio to direct "
        "measured in the same repetition (median of the per-repetition ratios). ↑ higher is "
        "better, ↓ lower is better; - not measured; n/a the target lacks the feature. "
        "bench/README.md says how each figure is measured.",
        "",
    ]
    skipped = [target for target in data["targets"] if not target["available"]]
    if skipped:
        lines += ["Skipped targets:", ""]
        lines += [f"- {target['name']}: {target['note']}" for target in skipped]
        lines.append("")
    for note in data.get("notes", []):
        lines += [f"Note: {note}", ""]
    measured = [target["name"] for target in data["targets"] if target["available"]]
    for scenario in data["scenarios"]:
        per_target = data["results"].get(scenario["name"])
        if not per_target:
            continue
        metrics = [metric for metric in scenario["metrics"] if _shown(metric, per_target)]
        lines += [f"## {scenario['title']} (`{scenario['name']}`)", "", scenario["description"], ""]
        rows, problems = [], []
        for name in measured:
            entry = per_target.get(name)
            if entry is None:
                continue
            not_applicable = entry["reps"][0].get("not_applicable") if entry["reps"] else None
            if not_applicable:
                rows.append([name, *("n/a" for _ in metrics)])
                continue
            cells = [
                _cell(entry["summary"].get(metric["key"]), metric, name == "direct")
                for metric in metrics
            ]
            rows.append([name, *cells])
            for index, rep in enumerate(entry["reps"], 1):
                problems += [
                    f"- {name}, repetition {index}: {problem}" for problem in rep["problems"]
                ]
        lines += _table(["target", *(_heading(metric) for metric in metrics)], rows)
        lines.append("")
        if problems:
            lines += ["Problems:", "", *problems, ""]
    lines += _peer_lines(data)
    return "\n".join(lines).rstrip() + "\n"


def _shown(metric: dict[str, Any], per_target: dict[str, Any]) -> bool:
    """A column appears when some target has a figure for it (userpass: socks5d only)."""
    return any(
        entry["summary"].get(metric["key"], {}).get("value") for entry in per_target.values()
    )


def _peer_lines(data: Data) -> list[str]:
    comparisons = data["comparisons"]
    if not comparisons:
        return []
    metrics = {(s["name"], m["key"]): m for s in data["scenarios"] for m in s["metrics"]}
    columns = list(dict.fromkeys((row["scenario"], row["metric"]) for row in comparisons))
    pairs = list(dict.fromkeys((row["socks5d"], row["peer"]) for row in comparisons))
    ratios = {
        (row["socks5d"], row["peer"], row["scenario"], row["metric"]): row["ratio"]
        for row in comparisons
    }
    header = ["socks5d", "peer"]
    header += [
        f"{scenario} {metrics[scenario, key]['label']} {_arrow(metrics[scenario, key])}"
        for scenario, key in columns
    ]
    rows = []
    for ours, peer in pairs:
        cells = []
        for scenario, key in columns:
            ratio = ratios.get((ours, peer, scenario, key))
            cells.append("-" if ratio is None else f"{number(ratio)}x")
        rows.append([ours, peer, *cells])
    return [
        "## socks5d against its peers",
        "",
        "socks5d's median ÷ the peer's median for each headline figure. Above 1 is better for "
        "↑ figures (throughput, rates), below 1 is better for ↓ figures (latency, memory).",
        "",
        *_table(header, rows),
        "",
    ]


def write_markdown(path: Path, data: Data) -> None:
    path.write_text(markdown(data))


# --------------------------------------------------------------------------- chart


def write_chart(path: Path, data: Data) -> str | None:
    """Grouped bars, one group per figure, one bar per proxy, whiskers min to max:
    throughput and rates relative to direct, latency relative to direct, memory per idle
    tunnel (RSS and PSS). Returns a note instead when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"

    proxies = [
        target["name"]
        for target in data["targets"]
        if target["available"] and target["name"] != "direct"
    ]
    panels = [
        (
            "Throughput and rates ÷ direct (higher is better)",
            "ratio_to_direct",
            lambda scenario, metric: (
                metric["headline"] and metric["vs_direct"] and metric["higher_is_better"]
            ),
        ),
        (
            "Round-trip latency ÷ direct (lower is better)",
            "ratio_to_direct",
            lambda scenario, metric: scenario == "latency",
        ),
        (
            "Memory per idle tunnel, KiB: sum of RSS, and of PSS, over the process tree "
            "(lower is better)",
            "value",
            lambda scenario, metric: "kib_per_tunnel_" in metric["key"],
        ),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(12, 13))
    for axis, (title, kind, wanted) in zip(axes, panels, strict=True):
        groups = [
            (scenario["name"], metric)
            for scenario in data["scenarios"]
            for metric in scenario["metrics"]
            if wanted(scenario["name"], metric)
        ]
        _bars(axis, data, groups, proxies, kind)
        axis.set_title(title)
        axis.set_yscale("log")
        if kind == "ratio_to_direct":
            axis.axhline(1.0, color="black", linewidth=0.8)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="upper center",
        ncol=len(proxies),
        fontsize="small",
        bbox_to_anchor=(0.5, 0.965),
    )
    figure.suptitle(f"socks5d benchmark, {data['generated']} (direct = 1)")
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None


def _bars(
    axis: Any,
    data: Data,
    groups: list[tuple[str, dict[str, Any]]],
    proxies: list[str],
    kind: str,
) -> None:
    width = 0.8 / max(len(proxies), 1)
    for index, proxy in enumerate(proxies):
        heights, lows, highs = [], [], []
        for scenario, metric in groups:
            entry = data["results"].get(scenario, {}).get(proxy)
            summary = entry["summary"].get(metric["key"]) if entry else None
            spread = None if summary is None else summary[kind]
            if spread is None:
                heights.append(float("nan"))
                lows.append(0.0)
                highs.append(0.0)
            else:
                heights.append(spread["median"])
                lows.append(spread["median"] - spread["min"])
                highs.append(spread["max"] - spread["median"])
        offset = (index - (len(proxies) - 1) / 2) * width
        positions = [group + offset for group in range(len(groups))]
        axis.bar(positions, heights, width, yerr=[lows, highs], label=proxy, capsize=2)
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels([f"{scenario}\n{metric['label']}" for scenario, metric in groups])
