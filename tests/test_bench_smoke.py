"""The benchmark's smoke run: `python3 -m bench --smoke` measures direct and socks5d in every
scenario with tiny loads and writes its results. Figures are not judged here (speed lives in
bench/); only that each scenario produced one for both targets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Seconds the smoke run may take before it is stopped (it takes well under 20).
RUN_TIMEOUT = 100


def _required_keys(scenario: dict[str, Any]) -> list[str]:
    """The figures a scenario must have measured, above zero: its headline ones; for idle
    tunnels the number held (50 tunnels' memory may fit in what the proxy already had).
    """
    return [
        metric["key"]
        for metric in scenario["metrics"]
        if (metric["headline"] and not metric["key"].startswith("kib_per_tunnel_"))
        or metric["key"].startswith("held_")
    ]


@pytest.mark.timeout(120)
def test_smoke_run_measures_every_scenario_for_direct_and_socks5d(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the benchmark stops its children on SIGTERM
        output, _ = process.communicate(timeout=15)
        pytest.fail(f"smoke run took over {RUN_TIMEOUT} s:\n{output.decode(errors='replace')}")
    log = output.decode(errors="replace")
    assert process.returncode == 0, log

    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().startswith("# socks5d benchmark"), log
    measured = {target["name"] for target in results["targets"] if target["available"]}
    assert measured == {"direct", "socks5d"}, results["targets"]
    for scenario in results["scenarios"]:
        keys = _required_keys(scenario)
        assert keys, scenario["name"]
        for target in sorted(measured):
            (rep,) = results["results"][scenario["name"]][target]["reps"]
            if rep.get("not_applicable"):  # the scaling scenarios are socks5d's alone
                assert target == "direct", (scenario["name"], rep)
                continue
            figures = rep["figures"]
            for key in keys:
                assert figures.get(key) is not None and figures[key] > 0, (
                    f"{scenario['name']} {target} {key}: {figures}, problems {rep['problems']}"
                )
