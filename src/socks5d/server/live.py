"""What the metrics and `/sessions` read of the open sessions, at scrape time: the bytes of
open tunnels and associations, the sessions by command, and each session's description.

Nothing here runs per byte or per session: a scrape walks the open sessions once.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from socks5d.server.session import Session
from socks5d.server.stats import Stats


def live_snapshot(
    stats: Stats, sessions: Iterable[Session], blocked_clients: int, draining: bool
) -> dict[str, Any]:
    """`stats.snapshot()` with the live values: the bytes of the open `sessions` added into
    `socks5d_bytes_total` (a session's bytes move to the totals when it ends, in the same
    step that takes it out of the open ones: the counter never goes back), and the gauges.
    """
    result = stats.snapshot()
    up = down = 0
    active: Counter[str] = Counter()
    for session in sessions:
        counts = session.counts
        if counts is not None:
            up += counts.bytes_up
            down += counts.bytes_down
        active[session.record["command"] or "handshake"] += 1
    totals = {"up": up, "down": down}
    for labels, value in result["counters"]["socks5d_bytes_total"]:
        totals[labels["direction"]] += value
    result["counters"]["socks5d_bytes_total"] = [
        [{"direction": direction}, value] for direction, value in totals.items()
    ]
    result["gauges"] = {
        "socks5d_sessions_active": [
            [{"command": command}, count] for command, count in sorted(active.items())
        ],
        "socks5d_blocked_clients": [[{}, blocked_clients]],
        "socks5d_draining": [[{}, int(draining)]],
    }
    return result


def describe_sessions(sessions: Iterable[Session], limit: int) -> list[dict[str, Any]]:
    """The first `limit` of `sessions` (oldest first): client, the balancer it came through
    (`via`), listener, user, protocol, command, destination, bytes so far, age in seconds, and
    this process's pid."""
    now = time.monotonic()
    pid = os.getpid()
    found: list[dict[str, Any]] = []
    for session in sessions:
        if len(found) >= limit:
            break
        record = session.record
        counts = session.counts
        found.append(
            {
                "client": record["client"],
                "via": record["via"],
                "listener": record["listener"],
                "user": record["user"],
                "protocol": record["protocol"],
                "command": record["command"],
                "destination": record["destination"],
                "bytes_up": counts.bytes_up if counts is not None else 0,
                "bytes_down": counts.bytes_down if counts is not None else 0,
                "age": round(now - session.started, 6),
                "pid": pid,
            }
        )
    return found


class Tunnels(set["Session"]):
    """The server's set of tunnels; tells the server when one leaves (`Session._relayed`)."""

    def __init__(self, changed: Callable[[], None]) -> None:
        super().__init__()
        self._changed = changed

    def discard(self, session: object) -> None:
        if session in self:
            super().discard(session)
            self._changed()
