"""The GSS-API benchmark's smoke run: `python3 -m bench.gssapi --smoke` measures direct, and
socks5d and Dante's sockd at every protection level, with 0.3 s transfers, and writes its
results. Figures are not judged here (speed lives in bench/); only that every (server, level)
and direct produced a figure each way, and that each server served the levels asked for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .dante import LEVELS, DanteGssapi
from .dante_build import BUILD_ENV

REPO = Path(__file__).resolve().parents[2]
#: Seconds the smoke run may take before it is stopped (it takes under 15).
RUN_TIMEOUT = 60


@pytest.mark.timeout(90)
def test_gssapi_smoke_run_measures_every_level_for_socks5d_and_dante(
    dante_gssapi: DanteGssapi, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.gssapi", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **{BUILD_ENV: str(dante_gssapi.prefix)}),
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the benchmark stops its children on SIGTERM
        output, _ = process.communicate(timeout=30)
        pytest.fail(f"smoke run took over {RUN_TIMEOUT} s:\n{output.decode(errors='replace')}")
    log = output.decode(errors="replace")
    assert process.returncode == 0, log

    results = json.loads((tmp_path / "gssapi.json").read_text())
    assert {name for name, info in results["servers"].items() if info["available"]} == {
        "socks5d",
        "dante",
    }, results["servers"]
    expected = [
        "direct",
        *(f"{server} {level}" for level in LEVELS for server in ("socks5d", "dante")),
    ]
    assert [case["name"] for case in results["cases"]] == expected
    for name in expected:
        (rep,) = results["results"][name]["reps"]
        figures = rep["figures"]
        keys = ["down_gbps", "up_gbps"]
        if name != "direct":
            keys += ["down_proxy_cpu_s_per_gb", "up_proxy_cpu_s_per_gb"]
        for key in keys:
            assert figures.get(key) is not None and figures[key] > 0, (
                f"{name} {key}: {figures}, problems {rep['problems']}\n{log}"
            )
        assert rep["errors"] == 0, (name, rep)
    for server in ("socks5d", "dante"):
        assert results["sessions"][server] == dict.fromkeys(LEVELS, 2), results["sessions"]
        assert set(results["socks5d_vs_dante"]) == set(LEVELS)

    markdown = (tmp_path / "gssapi.md").read_text()
    assert markdown.startswith("# socks5d GSS-API (RFC 1961) throughput"), markdown
    for level in LEVELS:
        for server in ("socks5d", "dante"):
            assert f"| {level} | {server} | " in markdown, markdown
    assert "## socks5d ÷ Dante" in markdown, markdown
