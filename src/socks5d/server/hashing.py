"""The bounded password hashing: a fixed number of threads for the slow hashes (scrypt) and a
bounded queue of checks waiting for one.

Unauthenticated clients choose how many hashes the server computes, so the work is bounded
here: at most `threads` hashes run at once (`[performance] hash_threads`), at most `queue`
wait (`hash_queue`), and a check submitted beyond that is refused at once (`PoolFull`). A
waiting check whose future is cancelled (its client left) leaves the queue and never runs; a
running one finishes in its thread, and its result is dropped.

Only the event loop's thread calls in here; the worker threads only run the hash and hand
the result back with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Hashing threads of "auto": two, so that hashes neither wait behind one long check nor
#: take every core from the event loop; one when the process may use one CPU only.
AUTO_THREADS = 2


class PoolFull(Exception):
    """Every hashing thread is busy and the queue of waiting checks is full."""


def thread_count(setting: int) -> int:
    """The `hash_threads` setting as a number: 0 ("auto") is 2, or 1 on a single CPU."""
    if setting:
        return setting
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(AUTO_THREADS, cpus)


@dataclass(slots=True, eq=False)  # compared and hashed by identity
class _Job:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    #: handed to a thread (no longer in the queue)
    started: bool = False


class HashPool:
    """Runs blocking hash functions on `threads` threads, with at most `queue` waiting.

    Args:
        threads: hashes run at once.
        queue: checks that may wait for a thread; 0: none, a busy pool refuses at once.
    """

    def __init__(self, threads: int, queue: int) -> None:
        self.threads = threads
        self.queue = queue
        #: jobs in a thread now (including those nobody waits for any more)
        self._running: set[_Job] = set()
        self._waiting: deque[_Job] = deque()
        self._executor = self._new_executor(threads)
        self._closed = False

    @staticmethod
    def _new_executor(threads: int) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="socks5d-hash")

    @property
    def running(self) -> int:
        """Jobs in a thread now, including those nobody waits for any more."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Checks waiting for a thread."""
        return len(self._waiting)

    def configure(self, threads: int, queue: int) -> None:
        """New bounds (a reload). Jobs running go on; fewer threads take effect as they end."""
        self.queue = queue
        if threads != self.threads:
            old, self._executor = self._executor, self._new_executor(threads)
            old.shutdown(wait=False)
            self.threads = threads
        self._start_waiting()

    def submit(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `function(*args)` on a hashing thread; its result comes in the future.

        Cancel the future to give the job up: a waiting job then never runs.

        Raises:
            PoolFull: every thread is busy and `queue` jobs wait already (or the pool is
                closed).
        """
        if self._closed:
            raise PoolFull("the password checks are shut down")
        if len(self._running) >= self.threads and len(self._waiting) >= self.queue:
            raise PoolFull(f"{len(self._waiting)} password checks waiting")
        job = _Job(function, args, asyncio.get_running_loop().create_future())
        if len(self._running) < self.threads:
            self._start(job)
        else:
            self._waiting.append(job)
            job.future.add_done_callback(lambda _: self._forget(job))
        return job.future

    def _forget(self, job: _Job) -> None:
        """A job's future is done: if it still waits, it was cancelled; out of the queue."""
        if not job.started:
            with contextlib.suppress(ValueError):  # dropped by `close`
                self._waiting.remove(job)

    def _start(self, job: _Job) -> None:
        loop = job.future.get_loop()
        job.started = True
        self._running.add(job)

        def finished(done: concurrent.futures.Future[Any]) -> None:  # on the worker thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._finished, job, done)

        try:
            self._executor.submit(job.function, *job.args).add_done_callback(finished)
        except RuntimeError:  # the executor is shut down (closing)
            self._running.discard(job)
            job.future.cancel()

    def _finished(self, job: _Job, done: concurrent.futures.Future[Any]) -> None:
        self._running.discard(job)
        future = job.future
        if not future.done():
            if done.cancelled():
                future.cancel()
            elif (error := done.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result())
        self._start_waiting()

    def _start_waiting(self) -> None:
        while self._waiting and len(self._running) < self.threads and not self._closed:
            job = self._waiting.popleft()
            if not job.future.done():
                self._start(job)

    def close(self) -> None:
        """Cancel every job: waiting ones never run, running ones finish in their threads,
        unheard. Nothing can be submitted any more."""
        self._closed = True
        waiting, self._waiting = self._waiting, deque()
        for job in (*waiting, *self._running):
            job.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
