"""The verified-password cache: scrypt once per user and password, never for a wrong one;
and the slow checks going through the bounded `HashPool`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from socks5d.server import auth
from socks5d.server.auth import Authenticator
from socks5d.server.hashing import HashPool, PoolFull
from socks5d.users import UserDatabase, hash_password

COST = (1 << 4, 1, 1)


class CountingDatabase(UserDatabase):
    """A user database that counts the slow checks."""

    def __init__(self, passwords: dict[str, str]) -> None:
        super().__init__({name: hash_password(pw, COST) for name, pw in passwords.items()})
        self.slow_checks = 0

    def verify(self, username: str, password: str) -> bool:
        self.slow_checks += 1
        return super().verify(username, password)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
async def pool() -> AsyncIterator[HashPool]:
    """Two hashing threads, four checks waiting at most; closed after the test."""
    hashes = HashPool(threads=2, queue=4)
    yield hashes
    hashes.close()


@pytest.fixture
def authenticator_for(pool: HashPool) -> Callable[..., Authenticator]:
    """`authenticator_for(users, cache_ttl=60)`: an `Authenticator` on the test's pool."""

    def make(users: UserDatabase | None, cache_ttl: float = 60) -> Authenticator:
        return Authenticator(users, pool=pool, cache_ttl=cache_ttl)

    return make


def occupy(pool: HashPool, jobs: int) -> threading.Event:
    """Fill `jobs` of the pool's threads with jobs that run until the returned event is set."""
    gate = threading.Event()
    for _ in range(jobs):
        pool.submit(gate.wait, 10.0)
    return gate


async def test_a_verified_password_is_checked_slowly_once(clock, authenticator_for) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    for _ in range(5):
        assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 1


async def test_a_wrong_password_is_never_answered_from_the_cache(clock, authenticator_for) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    assert await authenticator.verify("alice", "secret")
    for wrong in ("secret ", "Secret", "", "secret\0x"):
        assert not await authenticator.verify("alice", wrong)
    assert users.slow_checks == 5
    assert not await authenticator.verify("bob", "secret")  # unknown user, same password


async def test_failures_are_not_cached(clock, authenticator_for) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    assert not await authenticator.verify("alice", "guess")
    assert not await authenticator.verify("alice", "guess")
    assert users.slow_checks == 2


async def test_a_changed_password_misses_the_cache(clock, authenticator_for) -> None:
    authenticator = authenticator_for(CountingDatabase({"alice": "old"}))
    assert await authenticator.verify("alice", "old")
    changed = CountingDatabase({"alice": "new"})
    authenticator.users = changed  # what a reload does
    assert not await authenticator.verify("alice", "old")
    assert await authenticator.verify("alice", "new")
    assert await authenticator.verify("alice", "new")
    assert changed.slow_checks == 2


async def test_a_removed_user_is_refused_at_once(clock, authenticator_for) -> None:
    authenticator = authenticator_for(CountingDatabase({"alice": "secret"}))
    assert await authenticator.verify("alice", "secret")
    authenticator.users = CountingDatabase({"bob": "other"})
    assert not await authenticator.verify("alice", "secret")


async def test_entries_expire_after_the_ttl(clock, authenticator_for) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    assert await authenticator.verify("alice", "secret")
    clock[0] += 59
    assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 1
    clock[0] += 2
    assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 2


async def test_ttl_zero_turns_the_cache_off(clock, authenticator_for) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users, cache_ttl=0)
    for _ in range(3):
        assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 3


async def test_the_cache_keeps_no_password(clock, authenticator_for) -> None:
    authenticator = authenticator_for(CountingDatabase({"alice": "hunter2-secret"}))
    assert await authenticator.verify("alice", "hunter2-secret")
    remembered = repr(authenticator._verified)
    assert "hunter2" not in remembered
    assert b"hunter2" not in b"".join(entry[1] for entry in authenticator._verified.values())


async def test_simultaneous_logins_with_one_password_share_one_slow_check(
    clock, authenticator_for
) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    results = await asyncio.gather(*(authenticator.verify("alice", "secret") for _ in range(20)))
    assert results == [True] * 20
    assert users.slow_checks == 1
    wrong = await asyncio.gather(*(authenticator.verify("alice", "guess") for _ in range(5)))
    assert wrong == [False] * 5
    assert users.slow_checks == 2  # one shared check for the five identical wrong guesses
    assert not authenticator._checking


async def test_a_cancelled_login_does_not_cancel_the_shared_check(clock, authenticator_for) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    first = asyncio.ensure_future(authenticator.verify("alice", "secret"))
    second = asyncio.ensure_future(authenticator.verify("alice", "secret"))
    await asyncio.sleep(0)  # both are waiting on the one check
    first.cancel()
    assert await second
    assert users.slow_checks == 1


async def test_a_wrong_password_does_not_evict_the_cached_login(clock, authenticator_for) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    assert await authenticator.verify("alice", "secret")
    for guess in ("guess-1", "guess-2"):
        assert not await authenticator.verify("alice", guess)
    assert authenticator.cached("alice", "secret")
    assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 3  # the first login and the two guesses, no more


async def test_a_cached_login_waits_in_no_queue(clock, authenticator_for, pool) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    assert await authenticator.verify("alice", "secret")
    gate = occupy(pool, pool.threads + pool.queue)  # every thread busy, the queue full
    try:
        with pytest.raises(PoolFull):
            await authenticator.verify("alice", "guess")
        assert await authenticator.verify("alice", "secret")
    finally:
        gate.set()


async def test_an_unknown_user_is_checked_in_the_same_pool(clock, authenticator_for, pool) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    gate = occupy(pool, pool.threads)
    try:
        check = asyncio.ensure_future(authenticator.verify("mallory", "secret"))
        await asyncio.sleep(0)  # it is in the queue now, behind the busy threads
        assert pool.waiting == 1
    finally:
        gate.set()
    assert not await check
    assert users.slow_checks == 1  # the decoy hash, as costly as a real one


async def test_a_check_the_last_waiter_gave_up_leaves_the_queue_unrun(
    clock, authenticator_for, pool
) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = authenticator_for(users)
    gate = occupy(pool, pool.threads)
    try:
        waiters = [asyncio.ensure_future(authenticator.verify("alice", "guess")) for _ in range(2)]
        await asyncio.sleep(0)
        assert pool.waiting == 1  # one check shared by both
        waiters[0].cancel()
        await asyncio.sleep(0)
        assert pool.waiting == 1  # the other still waits for it
        waiters[1].cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await asyncio.sleep(0)  # the pool hears of the cancelled future
        assert pool.waiting == 0
        assert not authenticator._checking
    finally:
        gate.set()
    # The same guess again is a check of its own, and it does run.
    assert not await authenticator.verify("alice", "guess")
    assert users.slow_checks == 1
