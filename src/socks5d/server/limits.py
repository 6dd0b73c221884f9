"""Limits and throttling: how many sessions, handshakes, UDP associations and BIND listeners a
client may hold, and how password guessing is slowed down and then blocked.

Pure bookkeeping (the clock is passed in); the server asks and obeys.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from dataclasses import dataclass, field

from socks5d.config import Limits

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Slots:
    """Counted slots, in all and per client IP."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.in_use: Counter[IPAddress] = Counter()
        self.count = 0

    def acquire(self, client: IPAddress) -> str | None:
        """Take a slot; None when granted, else the reason it is not."""
        if self.count >= self.total:
            return f"limit of {self.total} reached"
        if self.in_use[client] >= self.per_client:
            return f"limit of {self.per_client} per client reached"
        self.count += 1
        self.in_use[client] += 1
        return None

    def release(self, client: IPAddress) -> None:
        """Give a slot back."""
        self.count -= 1
        self.in_use[client] -= 1
        if self.in_use[client] <= 0:
            del self.in_use[client]


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class AuthThrottle:
    """Failed logins per client IP: a growing delay, then a temporary block.

    The n-th failure within `auth_failure_window` is answered after
    `auth_failure_delay * 2**(n-1)` seconds (at most `auth_max_delay`); at
    `auth_failures_before_block` failures the IP is refused for `auth_block_time` seconds.
    A successful login forgets the failures.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._clients: dict[IPAddress, _Failures] = {}

    def blocked(self, client: IPAddress, now: float) -> bool:
        """Whether `client` is refused right now."""
        record = self._clients.get(client)
        return record is not None and record.blocked_until > now

    def failure(self, client: IPAddress, now: float) -> float:
        """Record a failed login; return the delay before answering it."""
        limits = self.limits
        record = self._clients.setdefault(client, _Failures())
        while record.times and record.times[0] < now - limits.auth_failure_window:
            record.times.popleft()
        record.times.append(now)
        exponent = min(len(record.times), 32) - 1
        delay: float = limits.auth_failure_delay * 2.0 ** max(exponent, 0)
        if len(record.times) >= limits.auth_failures_before_block:
            record.blocked_until = now + limits.auth_block_time
            record.times.clear()
        self._forget_old(now)
        return min(limits.auth_max_delay, delay)

    def success(self, client: IPAddress) -> None:
        """A good login: forget this IP's failures (not an active block)."""
        record = self._clients.get(client)
        if record is not None and not record.blocked_until:
            del self._clients[client]

    def _forget_old(self, now: float) -> None:
        if len(self._clients) < 4096:
            return
        horizon = now - self.limits.auth_failure_window
        for client, record in list(self._clients.items()):
            if record.blocked_until < now and (not record.times or record.times[-1] < horizon):
                del self._clients[client]
