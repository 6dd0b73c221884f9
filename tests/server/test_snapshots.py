"""Snapshots of several processes: `merge_snapshots` is associative and commutative, its
counters are the sums, `socks5d_draining` the maximum; `monotonic_part` keeps everything but
the gauges. Rendering gives what prometheus_client's parser reads back.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from socks5d import __version__
from socks5d.server.exposition import render
from socks5d.server.stats import HISTOGRAM_BOUNDS, Stats, merge_snapshots, monotonic_part

BOUNDS = len(HISTOGRAM_BOUNDS["socks5d_connect_seconds"])
values = st.integers(min_value=0, max_value=10**12)


@st.composite
def histograms(draw: st.DrawFn) -> dict[str, Any]:
    steps = draw(st.lists(st.integers(0, 1000), min_size=BOUNDS + 1, max_size=BOUNDS + 1))
    cumulative = []
    total = 0
    for step in steps[:-1]:
        total += step
        cumulative.append(total)
    # integral sums: float addition of integers this small is exact, so order cannot matter
    return {"buckets": cumulative, "sum": float(draw(st.integers(0, 10**6))), "count": total}


def samples(value_strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[list[Any]]]:
    return st.dictionaries(st.sampled_from(["up", "down", "x"]), value_strategy, max_size=3).map(
        lambda found: [[{"label": key}, value] for key, value in found.items()]
    )


snapshots = st.fixed_dictionaries(
    {
        "pid": st.integers(1, 1 << 22),
        "version": st.just(__version__),
        "counters": st.dictionaries(
            st.sampled_from(["socks5d_bytes_total", "socks5d_sessions_total"]), samples(values)
        ),
        "histograms": st.dictionaries(
            st.sampled_from(["socks5d_connect_seconds", "socks5d_handshake_seconds"]),
            samples(histograms()),
        ),
        "gauges": st.dictionaries(
            st.sampled_from(["socks5d_sessions_active", "socks5d_draining"]),
            samples(st.integers(0, 1)),
        ),
    }
)


@given(snapshots, snapshots, snapshots)
def test_merging_is_associative(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> None:
    left = merge_snapshots([merge_snapshots([a, b]), c])
    right = merge_snapshots([a, merge_snapshots([b, c])])
    assert left == right == merge_snapshots([a, b, c])


@given(snapshots, snapshots)
def test_merging_is_commutative(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert merge_snapshots([a, b]) == merge_snapshots([b, a])


def _totals(snapshot: dict[str, Any], kind: str) -> dict[tuple[str, str], Any]:
    return {
        (name, labels["label"]): value
        for name, found in snapshot[kind].items()
        for labels, value in found
    }


@given(st.lists(snapshots, max_size=4))
def test_counters_of_the_merge_are_the_sums_and_draining_the_maximum(
    parts: list[dict[str, Any]],
) -> None:
    merged = merge_snapshots(parts)
    assert "pid" not in merged
    expected: dict[tuple[str, str], int] = {}
    for part in parts:
        for key, value in _totals(part, "counters").items():
            expected[key] = expected.get(key, 0) + value
    assert _totals(merged, "counters") == expected
    for key, value in _totals(merged, "gauges").items():
        found = [_totals(part, "gauges")[key] for part in parts if key in _totals(part, "gauges")]
        assert value == (max(found) if key[0] == "socks5d_draining" else sum(found))
    for key, value in _totals(merged, "histograms").items():
        found = [_totals(part, "histograms").get(key) for part in parts]
        present = [histogram for histogram in found if histogram is not None]
        assert value["count"] == sum(histogram["count"] for histogram in present)
        columns = zip(*(histogram["buckets"] for histogram in present), strict=True)
        assert value["buckets"] == [sum(column) for column in columns]


@given(snapshots)
def test_monotonic_part_is_the_snapshot_without_its_gauges(snapshot: dict[str, Any]) -> None:
    part = monotonic_part(snapshot)
    assert part["gauges"] == {}
    assert {key: value for key, value in part.items() if key != "gauges"} == {
        key: value for key, value in snapshot.items() if key != "gauges"
    }
    # what a dead worker left, merged with a live one, keeps its counters in the sum
    merged = merge_snapshots([part, snapshot])
    assert _totals(merged, "counters") == {
        key: 2 * value for key, value in _totals(snapshot, "counters").items()
    }


def test_rendering_writes_every_metric_and_prometheus_reads_it_back() -> None:
    stats = Stats()
    stats.session_ended("socks5", "connect", "succeeded")
    stats.add_bytes(10, 20)
    stats.handshake.observe(0.002)
    snapshot = stats.snapshot()
    snapshot["gauges"] = {"socks5d_draining": [[{}, 1]]}
    families = {
        family.name: family
        for family in text_string_to_metric_families(render(merge_snapshots([snapshot])).decode())
    }
    assert families["socks5d_handshake_seconds"].type == "histogram"
    assert families["socks5d_sessions"].type == "counter"
    assert families["socks5d_draining"].samples[0].value == 1
    buckets = {
        sample.labels["le"]: sample.value
        for sample in families["socks5d_handshake_seconds"].samples
        if sample.name.endswith("_bucket")
    }
    assert (buckets["0.001"], buckets["0.0025"], buckets["+Inf"]) == (0, 1, 1)
    # declared metrics without samples still say what they are
    assert families["socks5d_udp_dropped"].type == "counter"
