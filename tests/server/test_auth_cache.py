"""The verified-password cache: scrypt once per user and password, never for a wrong one."""

from __future__ import annotations

import asyncio

import pytest

from socks5d.server import auth
from socks5d.server.auth import Authenticator
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


async def test_a_verified_password_is_checked_slowly_once(clock) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = Authenticator(users, cache_ttl=60)
    for _ in range(5):
        assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 1


async def test_a_wrong_password_is_never_answered_from_the_cache(clock) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = Authenticator(users, cache_ttl=60)
    assert await authenticator.verify("alice", "secret")
    for wrong in ("secret ", "Secret", "", "secret\0x"):
        assert not await authenticator.verify("alice", wrong)
    assert users.slow_checks == 5
    assert not await authenticator.verify("bob", "secret")  # unknown user, same password


async def test_failures_are_not_cached(clock) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = Authenticator(users, cache_ttl=60)
    assert not await authenticator.verify("alice", "guess")
    assert not await authenticator.verify("alice", "guess")
    assert users.slow_checks == 2


async def test_a_changed_password_misses_the_cache(clock) -> None:
    authenticator = Authenticator(CountingDatabase({"alice": "old"}), cache_ttl=60)
    assert await authenticator.verify("alice", "old")
    changed = CountingDatabase({"alice": "new"})
    authenticator.users = changed  # what a reload does
    assert not await authenticator.verify("alice", "old")
    assert await authenticator.verify("alice", "new")
    assert await authenticator.verify("alice", "new")
    assert changed.slow_checks == 2


async def test_a_removed_user_is_refused_at_once(clock) -> None:
    authenticator = Authenticator(CountingDatabase({"alice": "secret"}), cache_ttl=60)
    assert await authenticator.verify("alice", "secret")
    authenticator.users = CountingDatabase({"bob": "other"})
    assert not await authenticator.verify("alice", "secret")


async def test_entries_expire_after_the_ttl(clock) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = Authenticator(users, cache_ttl=60)
    assert await authenticator.verify("alice", "secret")
    clock[0] += 59
    assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 1
    clock[0] += 2
    assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 2


async def test_ttl_zero_turns_the_cache_off(clock) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = Authenticator(users, cache_ttl=0)
    for _ in range(3):
        assert await authenticator.verify("alice", "secret")
    assert users.slow_checks == 3


async def test_the_cache_keeps_no_password(clock) -> None:
    authenticator = Authenticator(CountingDatabase({"alice": "hunter2-secret"}), cache_ttl=60)
    assert await authenticator.verify("alice", "hunter2-secret")
    remembered = repr(authenticator._verified)
    assert "hunter2" not in remembered
    assert b"hunter2" not in b"".join(entry[1] for entry in authenticator._verified.values())


async def test_simultaneous_logins_with_one_password_share_one_slow_check(clock) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = Authenticator(users, cache_ttl=60)
    results = await asyncio.gather(*(authenticator.verify("alice", "secret") for _ in range(20)))
    assert results == [True] * 20
    assert users.slow_checks == 1
    wrong = await asyncio.gather(*(authenticator.verify("alice", "guess") for _ in range(5)))
    assert wrong == [False] * 5
    assert users.slow_checks == 2  # one shared check for the five identical wrong guesses
    assert not authenticator._checking


async def test_a_cancelled_login_does_not_cancel_the_shared_check(clock) -> None:
    users = CountingDatabase({"alice": "secret"})
    authenticator = Authenticator(users, cache_ttl=60)
    first = asyncio.ensure_future(authenticator.verify("alice", "secret"))
    second = asyncio.ensure_future(authenticator.verify("alice", "secret"))
    await asyncio.sleep(0)  # both are waiting on the one check
    first.cancel()
    assert await second
    assert users.slow_checks == 1
