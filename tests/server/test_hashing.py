"""`HashPool`: a fixed number of hashing threads and a bounded queue of waiting checks.

Jobs here are blocking functions held by `threading.Event`s, so that what runs and what waits
is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from socks5d.server.hashing import HashPool, PoolFull

#: Seconds a held job waits at most for its gate (a test that forgets one still ends).
HOLD = 10.0


class Held:
    """A job that reports it started and then blocks until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.runs = 0

    def __call__(self, value: object = True) -> object:
        self.runs += 1
        self.started.set()
        assert self.gate.wait(HOLD)
        return value


@pytest.fixture
async def pools() -> AsyncIterator[list[HashPool]]:
    """Pools the test makes; closed after it."""
    made: list[HashPool] = []
    yield made
    for pool in made:
        pool.close()


def pool_of(pools: list[HashPool], threads: int, queue: int) -> HashPool:
    pool = HashPool(threads, queue)
    pools.append(pool)
    return pool


async def started(job: Held) -> None:
    """Wait (without blocking the loop) until `job` runs in its thread."""
    assert await asyncio.to_thread(job.started.wait, HOLD)


async def test_no_more_jobs_run_at_once_than_threads_and_the_rest_wait_in_order(pools) -> None:
    pool = pool_of(pools, threads=2, queue=3)
    jobs = [Held() for _ in range(5)]
    futures = [pool.submit(job, number) for number, job in enumerate(jobs)]
    await started(jobs[0])
    await started(jobs[1])
    assert (pool.running, pool.waiting) == (2, 3)
    assert not any(job.started.is_set() for job in jobs[2:])
    jobs[0].gate.set()
    assert await futures[0] == 0
    await started(jobs[2])  # the first waiting one, not any other
    assert not jobs[3].started.is_set() and not jobs[4].started.is_set()
    for job in jobs[1:]:
        job.gate.set()
    assert await asyncio.gather(*futures[1:]) == [1, 2, 3, 4]
    assert (pool.running, pool.waiting) == (0, 0)


async def test_a_full_queue_refuses_at_once(pools) -> None:
    pool = pool_of(pools, threads=1, queue=1)
    running, waiting = Held(), Held()
    pool.submit(running)
    pool.submit(waiting)
    with pytest.raises(PoolFull, match="1 password checks waiting"):
        pool.submit(Held())
    running.gate.set()
    waiting.gate.set()
    no_queue = pool_of(pools, threads=1, queue=0)
    busy = Held()
    no_queue.submit(busy)
    with pytest.raises(PoolFull):
        no_queue.submit(Held())
    busy.gate.set()


async def test_a_cancelled_waiting_job_leaves_the_queue_and_never_runs(pools) -> None:
    pool = pool_of(pools, threads=1, queue=2)
    running, given_up, next_one = Held(), Held(), Held()
    first = pool.submit(running)
    dropped = pool.submit(given_up)
    last = pool.submit(next_one)
    dropped.cancel()
    await asyncio.sleep(0)  # the pool hears of it
    assert pool.waiting == 1
    running.gate.set()
    next_one.gate.set()
    await first
    await last
    assert given_up.runs == 0


async def test_a_cancelled_running_job_finishes_in_its_thread_and_keeps_it_busy(pools) -> None:
    pool = pool_of(pools, threads=1, queue=1)
    running, waiting = Held(), Held()
    abandoned = pool.submit(running)
    after = pool.submit(waiting)
    await started(running)
    abandoned.cancel()
    await asyncio.sleep(0)
    # Nobody waits for it, but its thread is still hashing: the next one waits on.
    assert (pool.running, pool.waiting) == (1, 1)
    assert not waiting.started.is_set()
    running.gate.set()
    waiting.gate.set()
    assert await after is True
    assert running.runs == 1


async def test_an_exception_in_a_job_reaches_its_waiter(pools) -> None:
    pool = pool_of(pools, threads=1, queue=0)

    def broken() -> bool:
        raise MemoryError("scrypt")

    with pytest.raises(MemoryError, match="scrypt"):
        await pool.submit(broken)
    assert pool.running == 0


async def test_more_threads_start_waiting_jobs_and_a_new_queue_bound_applies(pools) -> None:
    pool = pool_of(pools, threads=1, queue=2)
    jobs = [Held() for _ in range(3)]
    futures = [pool.submit(job) for job in jobs]
    pool.configure(threads=3, queue=0)  # a reload
    for job in jobs:
        await started(job)
    assert (pool.running, pool.waiting) == (3, 0)
    with pytest.raises(PoolFull):
        pool.submit(Held())
    for job in jobs:
        job.gate.set()
    await asyncio.gather(*futures)


async def test_close_cancels_the_waiting_jobs_and_refuses_new_ones(pools) -> None:
    pool = pool_of(pools, threads=1, queue=2)
    running, waiting = Held(), Held()
    first = pool.submit(running)
    second = pool.submit(waiting)
    await started(running)
    pool.close()
    assert second.cancelled()
    with pytest.raises(PoolFull):
        pool.submit(Held())
    running.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert waiting.runs == 0
