"""Reading a running server's metrics as a scraper does: the snapshot taken on the server's
own loop, rendered to Prometheus text, parsed back with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from conftest import START_TIMEOUT, RunningServer
from socks5d.server.exposition import render
from socks5d.server.stats import merge_snapshots

T = TypeVar("T")


def on_loop(running: RunningServer, function: Callable[[], T]) -> T:
    """`function()` called on the server's event loop thread; its result."""

    async def call() -> T:
        return function()

    loop = running._loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(call(), loop).result(START_TIMEOUT)


class Samples:
    """Parsed samples: `samples["socks5d_bytes_total", {"direction": "up"}]` -> value (0 when
    absent: a counter not yet incremented has no sample)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.values[sample.name, frozenset(sample.labels.items())] = sample.value

    def __getitem__(self, key: tuple[str, dict[str, str]]) -> float:
        name, labels = key
        return self.values.get((name, frozenset(labels.items())), 0.0)


def scrape(running: RunningServer) -> Samples:
    """The server's metrics now, as a scrape of `/metrics` would render them."""
    snapshot: dict[str, Any] = on_loop(running, running.server.metrics_snapshot)
    return Samples(render(merge_snapshots([snapshot])).decode())
