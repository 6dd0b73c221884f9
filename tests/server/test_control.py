"""The worker control channel (server/control.py) and the admin process's `WorkersSource`
(server/fleet.py), in one process: real `Server`s, each answering on its own control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator

import pytest

from socks5d.client import aio
from socks5d.config import build_config
from socks5d.server import Server
from socks5d.server.control import MAX_REQUEST, ControlSockets, ask, serve_control
from socks5d.server.fleet import WorkersSource

IO_TIMEOUT = 5.0


@contextlib.asynccontextmanager
async def servers(count: int) -> AsyncIterator[tuple[list[Server], ControlSockets]]:
    """`count` started servers on 127.0.0.1:0, each serving control socket number 1..count."""
    control = ControlSockets(count)
    try:
        async with contextlib.AsyncExitStack() as stack:
            started = []
            for number in range(1, count + 1):
                server = Server(build_config({}, listen=["127.0.0.1:0"]))
                await stack.enter_async_context(server)
                await stack.enter_async_context(serve_control(server, control.sockets[number]))
                started.append(server)
            yield started, control
    finally:
        control.close()


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[:2]


async def tunnel_through(
    server: Server, destination: tuple[str, int]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.addresses[0]
    reader, writer = await aio.open_connection(
        *destination, proxy=f"socks5://{host}:{port}", timeout=IO_TIMEOUT
    )
    writer.write(b"ping")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(4), IO_TIMEOUT) == b"ping"
    return reader, writer


def sessions_total(snapshot: dict[str, object]) -> int:
    counters = snapshot["counters"]
    assert isinstance(counters, dict)
    return sum(int(value) for _, value in counters.get("socks5d_sessions_total", []))


async def test_the_control_directory_is_private_and_removed() -> None:
    control = ControlSockets(2)
    assert stat.S_IMODE(os.stat(control.directory).st_mode) == 0o700
    assert sorted(control.paths) == [1, 2]
    control.close()
    assert not os.path.exists(control.directory)


async def test_metrics_and_sessions_requests_answer_the_servers_own_values() -> None:
    async with servers(1) as ((server,), control), echo_server() as destination:
        _, writer = await tunnel_through(server, destination)
        try:
            snapshot = await ask(control.paths[1], "metrics")
            assert snapshot["pid"] == os.getpid()
            assert set(snapshot) >= {"counters", "histograms", "gauges"}
            listed = await ask(control.paths[1], "sessions 10")
            assert [item["command"] for item in listed] == ["connect"]
            assert listed[0]["pid"] == os.getpid()
            assert await ask(control.paths[1], "sessions 0") == []
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.mark.parametrize("request_line", ["reboot", "sessions -1", "sessions many", "metrics x"])
async def test_an_unknown_request_is_answered_with_an_error(request_line: str) -> None:
    async with servers(1) as (_, control):
        with pytest.raises(ValueError, match="unknown control request"):
            await ask(control.paths[1], request_line)
        assert (await ask(control.paths[1], "metrics"))["pid"] == os.getpid()  # still serves


async def test_a_request_line_above_the_bound_gets_no_answer() -> None:
    async with servers(1) as (_, control):
        with pytest.raises(ValueError):  # nothing to decode: closed without an answer
            await ask(control.paths[1], "x" * (2 * MAX_REQUEST))


async def test_workers_source_sums_and_a_silent_worker_keeps_its_counts() -> None:
    async with servers(2) as (started, control), echo_server() as destination:
        for server in started:
            _, writer = await tunnel_through(server, destination)
            writer.close()
            await writer.wait_closed()
        source = WorkersSource(control.paths, deadline=0.5)

        async def counted() -> int:
            return sessions_total(await source.metrics())

        async with asyncio.timeout(IO_TIMEOUT):
            while await counted() != 2:
                await asyncio.sleep(0.01)  # the sessions end on the servers' side
        assert not source.draining()
        # worker 2 stops answering (a socket nobody accepts on): its counters still count
        silent = ControlSockets(1)
        try:
            source.control_paths[2] = silent.paths[1]
            merged = await source.metrics()
            assert sessions_total(merged) == 2
            assert "socks5d_sessions_active" in merged["gauges"]  # worker 1's, live
        finally:
            silent.close()
        source.begin_drain()
        assert source.draining()


async def test_workers_source_lists_sessions_oldest_first_within_the_limit() -> None:
    async with servers(2) as (started, control), echo_server() as destination:
        writers = []
        try:
            for server in [*started, *started]:
                writers.append((await tunnel_through(server, destination))[1])
            source = WorkersSource(control.paths)
            listed = await source.sessions(10)
            assert len(listed) == 4
            ages = [item["age"] for item in listed]
            assert ages == sorted(ages, reverse=True)
            assert len(await source.sessions(3)) == 3
            assert await source.sessions(0) == []
        finally:
            for writer in writers:
                writer.close()
                await writer.wait_closed()
