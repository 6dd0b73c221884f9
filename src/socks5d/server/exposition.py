"""A metrics snapshot (server/stats.py) in the Prometheus text format, written by the official
prometheus_client package (the optional extra `socks5d[metrics]`) through its custom-collector
metric families and `generate_latest`.

prometheus_client is imported when something is rendered, never at import time: without it
`render` raises `MetricsUnavailable`, and `/metrics` answers 501 naming the extra
(`INSTALL_HINT`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from socks5d.extras import install_hint
from socks5d.server.stats import BUILD_INFO, COUNTERS, GAUGES, HISTOGRAM_BOUNDS, HISTOGRAMS

#: The media type of the text format (version 0.0.4), as prometheus_client writes it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How to get prometheus_client, for the 501 answer: the extra, and the checkout form of the
#: command (socks5d is not on a package index; `socks5d.extras`).
INSTALL_HINT = f"the socks5d[metrics] extra: {install_hint('metrics')}"


class MetricsUnavailable(RuntimeError):
    """prometheus_client is not installed."""

    def __init__(self) -> None:
        super().__init__(f"metrics need the prometheus-client package, {INSTALL_HINT}")


def _label_values(names: tuple[str, ...], labels: dict[str, str]) -> list[str]:
    return [str(labels.get(name, "")) for name in names]


def render(snapshot: dict[str, Any]) -> bytes:
    """`snapshot` (one process's or a merged one) as Prometheus text.

    Every metric of `COUNTERS`, `GAUGES` and `HISTOGRAMS` is written, with its HELP and TYPE
    even before its first sample, and `socks5d_build_info{version}` 1.

    Raises:
        MetricsUnavailable: prometheus_client cannot be imported.
    """
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.registry import Collector
    except ImportError as exc:
        raise MetricsUnavailable from exc

    counters = snapshot.get("counters", {})
    gauges = snapshot.get("gauges", {})
    histograms = snapshot.get("histograms", {})

    class _SnapshotCollector(Collector):
        def collect(self) -> Iterator[Any]:
            for name, (label_names, documentation) in COUNTERS.items():
                counter = CounterMetricFamily(name, documentation, labels=label_names)
                for labels, value in counters.get(name, []):
                    counter.add_metric(_label_values(label_names, labels), value)
                yield counter
            for name, (label_names, documentation) in GAUGES.items():
                gauge = GaugeMetricFamily(name, documentation, labels=label_names)
                for labels, value in gauges.get(name, []):
                    gauge.add_metric(_label_values(label_names, labels), value)
                yield gauge
            for name, documentation in HISTOGRAMS.items():
                histogram = HistogramMetricFamily(name, documentation, labels=())
                bounds = HISTOGRAM_BOUNDS[name]
                for _, value in histograms.get(name, []):
                    buckets: list[tuple[str, float]] = [
                        (repr(float(bound)), count)
                        for bound, count in zip(bounds, value["buckets"], strict=True)
                    ]
                    buckets.append(("+Inf", value["count"]))
                    histogram.add_metric([], buckets, value["sum"])
                yield histogram
            info = GaugeMetricFamily(BUILD_INFO, "socks5d's version", labels=("version",))
            info.add_metric([str(snapshot.get("version", ""))], 1)
            yield info

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector())
    return generate_latest(registry)
