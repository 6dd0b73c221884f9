"""Hundreds of one-shot wrong logins from hundreds of loopback IPs (127.0.x.y), each trying
once so no per-client limit is reached, against the bounded password hashing.

The hashes run on `[performance] hash_threads` threads with at most `hash_queue` checks
waiting; a login that finds the queue full is refused at once (RFC 1929 failure, then close)
and not counted as a wrong password; a check whose client left is dropped from the queue. A
login the password cache knows waits in no queue.

Deadlines, not timings: the cached login must be served within `CACHED_DEADLINE`, and the
queue must be empty within `DRAIN_DEADLINE` of the flood's clients closing. The users' hashes
have the production scrypt cost, so the flood is worth seconds of hashing.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack

import pytest

from conftest import START_TIMEOUT, RunningServer
from socks5d.proto import AuthMethod, Command, Reply

from .logins import (
    CLIENT,
    LOGIN_SUCCESS,
    USERPASS_SELECTED,
    connect_from,
    flood_sources,
    log_in,
    pipelined_answer,
    pipelined_login,
    slow_hash_server,
)
from .raw_client import (
    greeting_bytes,
    loopback_address,
    read_reply,
    recv_exactly,
    request_bytes,
    userpass_bytes,
)

pytestmark = pytest.mark.timeout(60)

FLOOD = 600
#: A cached login must be through (auth, CONNECT, a round trip) within this many seconds.
CACHED_DEADLINE = 1.0
#: Once the flood's clients closed, no check may be left waiting after this many seconds.
DRAIN_DEADLINE = 1.0
QUEUE_FULL = "auth failed: too many password checks waiting"
LEFT = "auth failed: the client left before its password was checked"


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    assert left > 0, "deadline passed"
    return left


def serve_cached_login(running: RunningServer, echo: socket.socket, deadline: float) -> None:
    """Log in as alice (already cached), CONNECT to `echo` and make a round trip, every step
    before `deadline`."""
    with connect_from(running, CLIENT, timeout=remaining(deadline)) as sock:
        sock.sendall(greeting_bytes(AuthMethod.USERNAME_PASSWORD))
        assert recv_exactly(sock, 2) == USERPASS_SELECTED
        sock.settimeout(remaining(deadline))
        sock.sendall(userpass_bytes("alice", "secret"))
        assert recv_exactly(sock, 2)[1] == LOGIN_SUCCESS
        sock.settimeout(remaining(deadline))
        sock.sendall(request_bytes(Command.CONNECT, loopback_address(echo)))
        assert read_reply(sock)[0].reply == Reply.SUCCEEDED
        echo.settimeout(remaining(deadline))
        with echo.accept()[0] as far_end:
            far_end.settimeout(remaining(deadline))
            sock.sendall(b"ping")
            far_end.sendall(recv_exactly(far_end, 4))
            sock.settimeout(remaining(deadline))
            assert recv_exactly(sock, 4) == b"ping"


def wait_until_no_check_waits(running: RunningServer, timeout: float) -> None:
    """Poll the pool on the server's own loop until nothing waits; fail after `timeout`."""

    async def drained() -> None:
        async with asyncio.timeout(timeout):
            while running.server.hash_pool.waiting:
                await asyncio.sleep(0.01)

    assert running._loop is not None
    asyncio.run_coroutine_threadsafe(drained(), running._loop).result(START_TIMEOUT)


def test_a_flood_of_wrong_logins_neither_delays_a_cached_login_nor_outlives_its_clients(
    loop_name: str, listener: socket.socket
) -> None:
    with slow_hash_server({"alice": "secret"}, event_loop=loop_name) as server:
        assert log_in(server, "alice", "secret") == LOGIN_SUCCESS  # cached from now on
        with ExitStack() as flood:
            sockets = [
                flood.enter_context(pipelined_login(server, "alice", f"guess-{n}", source))
                for n, source in enumerate(flood_sources(FLOOD))
            ]
            # Every flood login is under way: the server answered each greeting.
            for sock in sockets:
                assert recv_exactly(sock, 2) == USERPASS_SELECTED
            serve_cached_login(server, listener, time.monotonic() + CACHED_DEADLINE)
        wait_until_no_check_waits(server, DRAIN_DEADLINE)
        records = server.wait_records(FLOOD + 2)
    assert QUEUE_FULL in {record["outcome"] for record in records}


def wait_until_pool_idle(running: RunningServer) -> None:
    """Poll the pool on the server's own loop until no job runs: a job that ended on its thread
    holds its place until the loop has heard of it."""

    async def idle() -> None:
        async with asyncio.timeout(START_TIMEOUT):
            while running.server.hash_pool.running:
                await asyncio.sleep(0.01)

    assert running._loop is not None
    asyncio.run_coroutine_threadsafe(idle(), running._loop).result(START_TIMEOUT)


def occupy_pool(running: RunningServer) -> Callable[[], None]:
    """Run a job that blocks on the server's hash pool; returns the function that ends it."""
    gate = threading.Event()
    started = threading.Event()

    def job() -> bool:
        started.set()
        gate.wait(START_TIMEOUT)
        return False

    async def submit() -> None:
        running.server.hash_pool.submit(job)

    assert running._loop is not None
    asyncio.run_coroutine_threadsafe(submit(), running._loop).result(START_TIMEOUT)
    assert started.wait(START_TIMEOUT)
    return gate.set


def wait_until_waiting(running: RunningServer, count: int) -> None:
    """Poll the pool on the server's own loop until `count` checks wait."""

    async def queued() -> None:
        async with asyncio.timeout(START_TIMEOUT):
            while running.server.hash_pool.waiting < count:
                await asyncio.sleep(0.01)

    assert running._loop is not None
    asyncio.run_coroutine_threadsafe(queued(), running._loop).result(START_TIMEOUT)


def test_a_full_queue_refuses_at_once_and_the_refusal_is_no_failed_login(
    start_server,
) -> None:
    # One thread, no queue: while a check runs, every other login needing a hash is refused.
    server = start_server(
        users={"alice": "secret"},
        performance={"hash_threads": 1, "hash_queue": 0},
        limits={"auth_failures_before_block": 2},
    )
    release = occupy_pool(server)
    try:
        for number in range(5):
            with pipelined_login(server, "alice", f"guess-{number}") as sock:
                assert pipelined_answer(sock) not in (None, LOGIN_SUCCESS)
    finally:
        release()
    outcomes = [record["outcome"] for record in server.wait_records(5)]
    assert outcomes == [QUEUE_FULL] * 5
    wait_until_pool_idle(server)  # else this login may find the thread still taken
    # Five refusals from 127.0.0.1 and no block: they were no wrong passwords.
    assert log_in(server, "alice", "secret") == LOGIN_SUCCESS


def test_a_client_that_leaves_while_its_check_waits_is_dropped_from_the_queue(
    loop_name: str,
) -> None:
    with slow_hash_server(
        {"alice": "secret"},
        event_loop=loop_name,
        performance={"hash_threads": 1, "hash_queue": 4},
    ) as server:
        release = occupy_pool(server)
        try:
            with pipelined_login(server, "alice", "guess", "127.0.0.2") as leaving:
                assert recv_exactly(leaving, 2) == USERPASS_SELECTED
                wait_until_waiting(server, 1)
            wait_until_no_check_waits(server, DRAIN_DEADLINE)
        finally:
            release()
        assert server.wait_records(1)[0]["outcome"] == LEFT
