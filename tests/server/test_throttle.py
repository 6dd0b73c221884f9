"""`AuthThrottle`: what one client may try, as pure bookkeeping (the clock is passed in).

A login is counted when it starts (`begin`): while the client's failed and pending logins
within `auth_failure_window` reach `auth_failures_before_block`, further ones are refused
before any hash. Failures are kept per user name; a success forgives only its own name's; the
failures over all names reaching the limit block the client (its whole prefix) for
`auth_block_time`, reported exactly once. `reset` forgets every block and count.
"""

from __future__ import annotations

import ipaddress

import pytest

from socks5d.config import Limits
from socks5d.errors import AuthFailed
from socks5d.server.limits import AuthThrottle, Block, IPAddress

LIMITS = Limits(auth_failures_before_block=3, auth_failure_window=60, auth_block_time=300)
HOST = ipaddress.ip_address("192.0.2.1")
NEIGHBOUR = ipaddress.ip_address("192.0.2.2")
AT_LIMIT = "limit of 3 failed or pending logins per client reached"
BLOCKED = "blocked after repeated failed logins"


def refusal(
    throttle: AuthThrottle, client: IPAddress = HOST, user: str = "alice", now: float = 0.0
) -> str:
    """Why `begin` refuses a login right now."""
    with pytest.raises(AuthFailed) as refused:
        throttle.begin(client, user, now)
    return str(refused.value)


def fail(
    throttle: AuthThrottle, client: IPAddress = HOST, user: str = "alice", now: float = 0.0
) -> Block | None:
    """One login from its start to its failure; returns the block it caused, if any."""
    return throttle.failed(throttle.begin(client, user, now), now)


def test_pending_logins_count_before_their_answer() -> None:
    throttle = AuthThrottle(LIMITS)
    pending = [throttle.begin(HOST, "alice", 0.0) for _ in range(3)]
    assert refusal(throttle) == AT_LIMIT
    assert refusal(throttle, user="bob") == AT_LIMIT  # the limit is the client's, any name
    throttle.begin(NEIGHBOUR, "alice", 0.0)  # another client has a limit of its own
    throttle.abandoned(pending[0])  # a client that left: not a failure, its place is free
    throttle.begin(HOST, "alice", 0.0)


def test_the_failure_that_reaches_the_limit_blocks_once() -> None:
    throttle = AuthThrottle(LIMITS)
    attempts = [throttle.begin(HOST, "alice", 0.0) for _ in range(3)]
    assert throttle.failed(attempts[0], 1.0) is None
    assert throttle.failed(attempts[1], 1.0) is None
    block = throttle.failed(attempts[2], 2.0)
    assert block is not None
    assert str(block) == "blocking 192.0.2.1 for 300 s after 3 failed logins"
    assert throttle.blocked(HOST, 2.0)
    assert refusal(throttle, now=2.0) == BLOCKED
    assert not throttle.blocked(NEIGHBOUR, 2.0)
    assert throttle.blocked(HOST, 301.9)
    assert not throttle.blocked(HOST, 302.0)
    # After the block the count starts from nothing.
    assert fail(throttle, now=302.0) is None
    assert fail(throttle, now=302.0) is None


def test_failures_of_all_names_add_up() -> None:
    throttle = AuthThrottle(LIMITS)
    assert fail(throttle, user="alice") is None
    assert fail(throttle, user="bob") is None
    assert fail(throttle, user="carol") is not None


def test_a_success_forgives_only_its_own_names_failures() -> None:
    throttle = AuthThrottle(LIMITS)
    assert fail(throttle, user="alice") is None
    assert fail(throttle, user="alice") is None
    throttle.succeeded(throttle.begin(HOST, "mallory", 0.0))  # the guesser's own account
    assert fail(throttle, user="alice") is not None

    throttle = AuthThrottle(LIMITS)
    assert fail(throttle, user="alice") is None
    assert fail(throttle, user="bob") is None
    throttle.succeeded(throttle.begin(HOST, "alice", 0.0))  # alice mistyped, then got it
    assert fail(throttle, user="alice") is None  # 2: bob's one and this one
    assert fail(throttle, user="alice") is not None


def test_failures_older_than_the_window_no_longer_count() -> None:
    throttle = AuthThrottle(LIMITS)
    assert fail(throttle, now=0.0) is None
    assert fail(throttle, now=30.0) is None
    assert fail(throttle, now=60.5) is None  # the first is out of the window
    assert fail(throttle, now=61.0) is not None


def test_a_whole_prefix_is_one_client() -> None:
    throttle = AuthThrottle(Limits(auth_failures_before_block=2, client_prefix_v6=64))
    hosts = [ipaddress.ip_address(f"2001:db8:1:2::{n}") for n in (1, 2, 3)]
    assert fail(throttle, hosts[0]) is None
    block = fail(throttle, hosts[1])
    assert str(block) == "blocking 2001:db8:1:2::/64 for 300 s after 2 failed logins"
    assert throttle.blocked(hosts[2], 0.0)
    assert not throttle.blocked(ipaddress.ip_address("2001:db8:1:3::1"), 0.0)
    mapped = AuthThrottle(Limits(auth_failures_before_block=1))
    assert fail(mapped, ipaddress.ip_address("::ffff:192.0.2.1")) is not None
    assert mapped.blocked(HOST, 0.0)


def test_reset_forgets_blocks_counts_and_the_attempts_under_way() -> None:
    throttle = AuthThrottle(LIMITS)
    under_way = throttle.begin(HOST, "alice", 0.0)
    for _ in range(2):
        assert fail(throttle) is None
    assert [fail(throttle, NEIGHBOUR) is None for _ in range(3)] == [True, True, False]
    assert throttle.blocked(NEIGHBOUR, 0.0)
    throttle.reset(LIMITS)
    assert not throttle.blocked(NEIGHBOUR, 0.0)
    assert throttle.failed(under_way, 0.0) is None  # from before the reset: not counted
    assert fail(throttle) is None
    assert fail(throttle) is None
    assert fail(throttle) is not None


def test_clients_with_nothing_left_to_count_are_forgotten() -> None:
    throttle = AuthThrottle(LIMITS)
    throttle.succeeded(throttle.begin(HOST, "alice", 0.0))
    throttle.abandoned(throttle.begin(NEIGHBOUR, "alice", 0.0))
    assert throttle.clients == 0
    for number in range(5000):
        client = ipaddress.ip_address(f"10.0.{number // 250}.{number % 250}")
        assert fail(throttle, client, now=float(number) / 100) is None
    # Long after the window, a sweep keeps only what still counts.
    assert fail(throttle, HOST, now=10_000.0) is None
    assert throttle.clients <= 4096
