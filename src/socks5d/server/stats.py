"""The server's metrics as plain numbers: `Stats` (counters and fixed-bucket histograms of
one process) and the snapshot functions (`merge_snapshots`, `monotonic_part`).

Counting is a dict increment where an event happens (a session ends, a login is checked, a
rule blocks): never per byte. Bytes of open tunnels are not counted here as they move; the
server reads them from the tunnels at scrape time (`Server.metrics_snapshot`) and adds them
here when a tunnel ends (`add_bytes`), so `socks5d_bytes_total` never goes back.

A snapshot is a JSON-serialisable dict, the same shape in every process, so that the
snapshots of several workers can be summed:

    {"pid": 123, "version": "0.1.0",
     "counters":   {name: [[labels, value], ...], ...},
     "histograms": {name: [[labels, {"buckets": [...], "sum": s, "count": n}], ...], ...},
     "gauges":     {name: [[labels, value], ...], ...}}

`buckets[i]` counts the observations at most `HISTOGRAM_BOUNDS[name][i]` (cumulative, as
Prometheus's `le` buckets); `count` is the `+Inf` bucket. Nothing here imports
prometheus_client (that is exposition.py).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from typing import Any

from socks5d import __version__

#: Every counter: its label names and help text.
COUNTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "socks5d_sessions_total": (
        ("protocol", "command", "reply"),
        "Sessions ended, by protocol, command and reply",
    ),
    "socks5d_bytes_total": (
        ("direction",),
        "Bytes relayed (TCP and BIND tunnels, UDP payloads); up is client to destination",
    ),
    "socks5d_auth_total": (("method", "result"), "Logins checked, by method and result"),
    "socks5d_rule_blocks_total": (("list",), "Requests refused by the client or socks rules"),
    "socks5d_limit_refusals_total": (("limit",), "Refusals by a limit"),
    "socks5d_udp_datagrams_total": (("direction",), "UDP datagrams relayed"),
    "socks5d_udp_dropped_total": (("reason",), "UDP datagrams dropped, by reason"),
    "socks5d_config_reloads_total": (("result",), "Configuration reloads, by result"),
    "socks5d_proxy_headers_total": (
        ("result",),
        "PROXY protocol headers: proxied, local (health checks), invalid, untrusted",
    ),
}

#: Every gauge: its label names and help text (the server fills them in at scrape time).
GAUGES: dict[str, tuple[tuple[str, ...], str]] = {
    "socks5d_sessions_active": (
        ("command",),
        'Sessions open now, by command ("handshake" before the request)',
    ),
    "socks5d_blocked_clients": ((), "Client networks blocked after failed logins"),
    "socks5d_draining": ((), "1 once a drain began, else 0"),
}

#: Every histogram: its help text.
HISTOGRAMS: dict[str, str] = {
    "socks5d_handshake_seconds": "Seconds from accept to the request read",
    "socks5d_connect_seconds": "Seconds a CONNECT took to resolve and connect to the destination",
}

#: Bucket bounds (seconds) for waits from a loopback round trip up to the default deadlines.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The upper bounds of each histogram's buckets (seconds), the same in every process.
HISTOGRAM_BOUNDS: dict[str, tuple[float, ...]] = {
    "socks5d_handshake_seconds": _SECONDS,
    "socks5d_connect_seconds": _SECONDS,
}

#: The build-info metric: one sample, 1, labelled with the version.
BUILD_INFO = "socks5d_build_info"

Labels = tuple[str, ...]
_UP: Labels = ("up",)
_DOWN: Labels = ("down",)


class _Histogram:
    """Per-bucket counts (not cumulative while counting: one increment per observation)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        #: counts[i]: observations in (bounds[i-1], bounds[i]]; the last: above every bound
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def as_dict(self) -> dict[str, Any]:
        cumulative = []
        total = 0
        for count in self.counts[:-1]:
            total += count
            cumulative.append(total)
        return {"buckets": cumulative, "sum": self.sum, "count": total + self.counts[-1]}


class Stats:
    """The counters and histograms of one server process (see the module docstring); one
    per `Server`, kept across reloads."""

    def __init__(self) -> None:
        #: name -> label values (in `COUNTERS` order) -> count
        self.counters: dict[str, dict[Labels, int]] = {name: {} for name in COUNTERS}
        self.histograms = {name: _Histogram(HISTOGRAM_BOUNDS[name]) for name in HISTOGRAMS}
        # the hot ones, bound once
        self._sessions = self.counters["socks5d_sessions_total"]
        self._bytes = self.counters["socks5d_bytes_total"]
        self._datagrams = self.counters["socks5d_udp_datagrams_total"]
        self._dropped = self.counters["socks5d_udp_dropped_total"]
        self.handshake = self.histograms["socks5d_handshake_seconds"]
        self.connect = self.histograms["socks5d_connect_seconds"]

    def count(self, name: str, *labels: str, amount: int = 1) -> None:
        """Add `amount` to counter `name` at `labels` (values in `COUNTERS[name]` order)."""
        values = self.counters[name]
        values[labels] = values.get(labels, 0) + amount

    def session_ended(self, protocol: str | None, command: str | None, reply: str | None) -> None:
        """One session ended; a field it never reached is "none"."""
        key = (protocol or "none", command or "none", reply or "none")
        self._sessions[key] = self._sessions.get(key, 0) + 1

    def add_bytes(self, up: int, down: int) -> None:
        """A tunnel or association ended having relayed `up` and `down` bytes."""
        values = self._bytes
        values[_UP] = values.get(_UP, 0) + up
        values[_DOWN] = values.get(_DOWN, 0) + down

    def datagram(self, direction: str) -> None:
        """A UDP datagram relayed, "up" (client to destination) or "down"."""
        key = (direction,)
        self._datagrams[key] = self._datagrams.get(key, 0) + 1

    def dropped(self, reason: str) -> None:
        """A UDP datagram dropped for `reason`."""
        key = (reason,)
        self._dropped[key] = self._dropped.get(key, 0) + 1

    def auth(self, method: str, success: bool) -> None:
        """A login by `method` ("userpass", "gssapi") succeeded or failed."""
        self.count("socks5d_auth_total", method, "success" if success else "failure")

    def rule_block(self, rule_list: str) -> None:
        """A request refused by the "client" or the "socks" rules."""
        self.count("socks5d_rule_blocks_total", rule_list)

    def limit_refusal(self, limit: str) -> None:
        """A refusal by `limit` ("sessions", "handshakes", "udp_associations", ...)."""
        self.count("socks5d_limit_refusals_total", limit)

    def proxy_header(self, result: str) -> None:
        """A PROXY protocol header read ("proxied", "local"), refused ("invalid"), or sent by
        a source not trusted to ("untrusted")."""
        self.count("socks5d_proxy_headers_total", result)

    def count_reload(self, ok: bool) -> None:
        """A configuration reload succeeded (`ok`) or was refused."""
        self.count("socks5d_config_reloads_total", "success" if ok else "failure")

    def snapshot(self) -> dict[str, Any]:
        """The counters and histograms now, as a snapshot with no gauges yet (the server
        adds its live values)."""
        counters = {
            name: [
                [dict(zip(COUNTERS[name][0], labels, strict=True)), value]
                for labels, value in values.items()
            ]
            for name, values in self.counters.items()
        }
        histograms = {
            name: [[{}, histogram.as_dict()]] for name, histogram in self.histograms.items()
        }
        return {
            "pid": os.getpid(),
            "version": __version__,
            "counters": counters,
            "histograms": histograms,
            "gauges": {},
        }


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def merge_snapshots(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One snapshot of several processes: counters, histograms and gauges summed per name
    and label set (`socks5d_draining`: the maximum); `pid` dropped. The version is the first
    snapshot's (every worker runs the same code).
    """
    version = __version__
    counters: dict[str, dict[tuple[tuple[str, str], ...], Any]] = {}
    gauges: dict[str, dict[tuple[tuple[str, str], ...], Any]] = {}
    histograms: dict[str, dict[tuple[tuple[str, str], ...], dict[str, Any]]] = {}
    first = True
    for snapshot in snapshots:
        if first:
            version = snapshot.get("version", version)
            first = False
        for kind, merged in (("counters", counters), ("gauges", gauges)):
            for name, samples in snapshot.get(kind, {}).items():
                into = merged.setdefault(name, {})
                for labels, value in samples:
                    key = _key(labels)
                    if key not in into:
                        into[key] = value
                    elif name == "socks5d_draining":
                        into[key] = max(into[key], value)
                    else:
                        into[key] += value
        for name, samples in snapshot.get("histograms", {}).items():
            into_h = histograms.setdefault(name, {})
            for labels, value in samples:
                key = _key(labels)
                old = into_h.get(key)
                if old is None:
                    into_h[key] = {
                        "buckets": list(value["buckets"]),
                        "sum": value["sum"],
                        "count": value["count"],
                    }
                else:
                    pairs = zip(old["buckets"], value["buckets"], strict=True)
                    old["buckets"] = [a + b for a, b in pairs]
                    old["sum"] += value["sum"]
                    old["count"] += value["count"]
    return {
        "version": version,
        "counters": _as_lists(counters),
        "histograms": _as_lists(histograms),
        "gauges": _as_lists(gauges),
    }


def _as_lists(merged: dict[str, dict[tuple[tuple[str, str], ...], Any]]) -> dict[str, Any]:
    return {
        name: [[dict(key), value] for key, value in sorted(samples.items())]
        for name, samples in sorted(merged.items())
    }


def monotonic_part(snapshot: dict[str, Any]) -> dict[str, Any]:
    """`snapshot` without its gauges: what a worker that died leaves behind, so that the sums
    of its counters and histograms never go backwards."""
    return {key: value for key, value in snapshot.items() if key != "gauges"} | {"gauges": {}}
