"""Limits and throttling: how many sessions, handshakes, UDP associations and BIND listeners a
client may hold, and how many logins it may try.

A client is counted as its network, not its address (`client_key`): `[limits]
client_prefix_v4` (32) and `client_prefix_v6` (64), since one IPv6 host commonly has a whole
/64. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is counted as its IPv4 address.

Pure bookkeeping (the clock is passed in); the server asks and obeys. No I/O, no logging.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from dataclasses import dataclass, field

from socks5d.config import Limits
from socks5d.errors import AuthFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: What a client is counted as: (IP version, prefix length, the network's address as an int).
ClientKey = tuple[int, int, int]

#: Throttle records are swept for stale ones once there are this many.
SWEEP_SIZE = 4096
#: ... and then at most once per this many seconds, unless their number doubled.
SWEEP_INTERVAL = 60.0


def client_key(address: IPAddress, prefix_v4: int, prefix_v6: int) -> ClientKey:
    """The network `address` is counted as: its first `prefix_v4` or `prefix_v6` bits.

    ::ffff:a.b.c.d is a.b.c.d (the same host, reached through a dual-stack socket).
    """
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            shift = 128 - prefix_v6
            return (6, prefix_v6, int(address) >> shift << shift)
        address = mapped
    shift = 32 - prefix_v4
    return (4, prefix_v4, int(address) >> shift << shift)


def describe_client(key: ClientKey) -> str:
    """The key as the log writes it: the address when the prefix is whole, else the network
    (`127.0.0.1`, `2001:db8:1:2::/64`)."""
    version, prefix, network = key
    if version == 4:
        address: IPAddress = ipaddress.IPv4Address(network)
        whole = 32
    else:
        address = ipaddress.IPv6Address(network)
        whole = 128
    return str(address) if prefix == whole else f"{address}/{prefix}"


class Slots:
    """Counted slots, in all and per client network (`client_key`)."""

    def __init__(
        self, total: int, per_client: int, prefix_v4: int = 32, prefix_v6: int = 64
    ) -> None:
        self.total = total
        self.per_client = per_client
        self.prefix_v4 = prefix_v4
        self.prefix_v6 = prefix_v6
        #: slots held per client network
        self.in_use: Counter[ClientKey] = Counter()
        #: slots held per exact address, to count them again under other prefixes
        self._by_address: Counter[IPAddress] = Counter()
        self.count = 0

    def acquire(self, client: IPAddress) -> str | None:
        """Take a slot; None when granted, else the reason it is not."""
        if self.count >= self.total:
            return f"limit of {self.total} reached"
        key = client_key(client, self.prefix_v4, self.prefix_v6)
        if self.in_use[key] >= self.per_client:
            return f"limit of {self.per_client} per client reached"
        self.count += 1
        self.in_use[key] += 1
        self._by_address[client] += 1
        return None

    def configure(self, total: int, per_client: int, prefix_v4: int, prefix_v6: int) -> None:
        """New limits (a reload); the slots held stay held."""
        self.total, self.per_client = total, per_client
        self.set_prefixes(prefix_v4, prefix_v6)

    def reserve(self) -> str | None:
        """Take a slot counted in all only, for a connection whose client is not known yet
        (a balancer's, before its PROXY header); None when granted, else why not."""
        if self.count >= self.total:
            return f"limit of {self.total} reached"
        self.count += 1
        return None

    def unreserve(self) -> None:
        """Give back a slot `reserve` granted."""
        self.count -= 1

    def release(self, client: IPAddress) -> None:
        """Give back a slot `acquire` granted to `client`."""
        self.count -= 1
        key = client_key(client, self.prefix_v4, self.prefix_v6)
        self.in_use[key] -= 1
        if self.in_use[key] <= 0:
            del self.in_use[key]
        self._by_address[client] -= 1
        if self._by_address[client] <= 0:
            del self._by_address[client]

    def set_prefixes(self, prefix_v4: int, prefix_v6: int) -> None:
        """Count per other networks from now on; the slots held are counted again."""
        if (prefix_v4, prefix_v6) == (self.prefix_v4, self.prefix_v6):
            return
        self.prefix_v4, self.prefix_v6 = prefix_v4, prefix_v6
        self.in_use = Counter()
        for address, held in self._by_address.items():
            self.in_use[client_key(address, prefix_v4, prefix_v6)] += held


@dataclass(frozen=True, slots=True)
class Block:
    """A client just blocked: what the one warning about it says."""

    client: str
    seconds: float
    failures: int

    def __str__(self) -> str:
        return f"blocking {self.client} for {self.seconds:g} s after {self.failures} failed logins"


@dataclass(slots=True)
class _Client:
    #: user name -> times of its failed logins within the window, oldest first
    failures: dict[str, deque[float]] = field(default_factory=dict)
    #: logins begun and not yet answered (their password being checked)
    pending: int = 0
    blocked_until: float = 0.0

    def failure_count(self, horizon: float) -> int:
        """Failures since `horizon` over all names; older ones are forgotten."""
        count = 0
        for name, times in list(self.failures.items()):
            while times and times[0] < horizon:
                times.popleft()
            if times:
                count += len(times)
            else:
                del self.failures[name]
        return count


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login under way (`AuthThrottle.begin`); end it with exactly one of `failed`,
    `succeeded` or `abandoned`."""

    key: ClientKey
    username: str
    record: _Client


class AuthThrottle:
    """Logins per client network: counted when they start, then a temporary block.

    Within `auth_failure_window` seconds a client may have at most
    `auth_failures_before_block` logins failed or pending (being checked); one more is
    refused before its password is looked at. Failures are kept per user name: a good login
    forgives the failures of its own name only (an attacker's own account must not reset the
    count of the names it guesses at). When the failures over all names reach the limit, the
    client is refused for `auth_block_time` seconds. Logins are answered at once: the
    counts limit guessing, not a delay.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._clients: dict[ClientKey, _Client] = {}
        self._sweep_size = SWEEP_SIZE
        self._next_sweep = 0.0

    @property
    def clients(self) -> int:
        """Client networks with something counted (pending, failures or a block)."""
        return len(self._clients)

    def blocked_count(self, now: float) -> int:
        """Client networks blocked right now (O(clients): for a metrics scrape)."""
        return sum(1 for record in self._clients.values() if record.blocked_until > now)

    def reset(self, limits: Limits) -> None:
        """New limits, and every block and count forgotten (a reload). Logins already under
        way end uncounted."""
        self.limits = limits
        self._clients.clear()
        self._sweep_size = SWEEP_SIZE

    def _key(self, client: IPAddress) -> ClientKey:
        return client_key(client, self.limits.client_prefix_v4, self.limits.client_prefix_v6)

    def blocked(self, client: IPAddress, now: float) -> bool:
        """Whether `client` is refused right now."""
        record = self._clients.get(self._key(client))
        return record is not None and record.blocked_until > now

    def begin(self, client: IPAddress, username: str, now: float) -> Attempt:
        """Count a login from `client` as pending, before its password is checked.

        Raises:
            AuthFailed: the client is blocked, or has its limit of failed and pending logins.
        """
        limits = self.limits
        key = self._key(client)
        record = self._clients.get(key)
        if record is None:
            self._sweep(now)
            record = self._clients[key] = _Client()
        elif record.blocked_until > now:
            raise AuthFailed("blocked after repeated failed logins")
        else:
            record.blocked_until = 0.0  # a block that is over
            failures = record.failure_count(now - limits.auth_failure_window)
            if record.pending + failures >= limits.auth_failures_before_block:
                raise AuthFailed(
                    f"limit of {limits.auth_failures_before_block} failed or pending logins"
                    " per client reached"
                )
        record.pending += 1
        return Attempt(key, username, record)

    def _current(self, attempt: Attempt) -> bool:
        """End a pending login; False when it began before a `reset` (it no longer counts)."""
        if self._clients.get(attempt.key) is not attempt.record:
            return False
        attempt.record.pending -= 1
        return True

    def failed(self, attempt: Attempt, now: float) -> Block | None:
        """A wrong user name or password; returns the `Block` when this failure blocks the
        client (once per block), else None."""
        if not self._current(attempt):
            return None
        limits = self.limits
        record = attempt.record
        if record.blocked_until > now:
            return None
        record.failures.setdefault(attempt.username, deque()).append(now)
        failures = record.failure_count(now - limits.auth_failure_window)
        if failures < limits.auth_failures_before_block:
            return None
        record.blocked_until = now + limits.auth_block_time
        record.failures.clear()
        return Block(describe_client(attempt.key), limits.auth_block_time, failures)

    def succeeded(self, attempt: Attempt) -> None:
        """A good login: the failures of its user name are forgiven (not those of others,
        not an active block)."""
        if self._current(attempt):
            attempt.record.failures.pop(attempt.username, None)
            self._forget_if_empty(attempt)

    def abandoned(self, attempt: Attempt) -> None:
        """A login that got no answer on its password (the client left, or the checks were
        too busy to take it): neither a failure nor a success."""
        if self._current(attempt):
            self._forget_if_empty(attempt)

    def _forget_if_empty(self, attempt: Attempt) -> None:
        record = attempt.record
        if not record.pending and not record.failures and not record.blocked_until:
            del self._clients[attempt.key]

    def _sweep(self, now: float) -> None:
        """Forget clients with nothing left to count; O(clients), so seldom: when their
        number doubled, or after `SWEEP_INTERVAL`."""
        size = len(self._clients)
        if size < self._sweep_size and (size < SWEEP_SIZE or now < self._next_sweep):
            return
        horizon = now - self.limits.auth_failure_window
        for key, record in list(self._clients.items()):
            if (
                not record.pending
                and record.blocked_until <= now
                and not record.failure_count(horizon)
            ):
                del self._clients[key]
        self._sweep_size = max(SWEEP_SIZE, 2 * len(self._clients))
        self._next_sweep = now + SWEEP_INTERVAL
