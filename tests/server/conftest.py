"""Fixtures of the server tests: destinations to connect to, and servers built by hand.

`start_server` (tests/conftest.py) covers configuration; `start_server_with_resolver` also
injects the resolver, so DNS outcomes need no real DNS.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import START_TIMEOUT, RunningServer
from socks5d.config import build_config
from socks5d.server import Server
from socks5d.server.connect import Resolver

#: Loop rounds a finished session needs before `Server.active_sessions` forgets it: its
#: record is logged in the task's `finally`, the set is updated by a done-callback later.
SETTLE_ROUNDS = 100


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A destination listening on 127.0.0.1 with an ephemeral port."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(START_TIMEOUT)
        yield sock


@pytest.fixture
def start_server_with_resolver() -> Iterator[Callable[..., RunningServer]]:
    """Factory: `start_server_with_resolver(resolver, timeouts={...})`, no-auth, loopback."""
    running: list[RunningServer] = []

    def start(resolver: Resolver, **settings: Any) -> RunningServer:
        config = build_config(settings, listen=["127.0.0.1:0"])
        server = RunningServer(Server(config, resolver=resolver)).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def settled_active_sessions() -> Callable[[RunningServer], int]:
    """`settled_active_sessions(server)`: `active_sessions`, asked on the server's own loop
    once finished sessions had their done-callbacks run."""

    def count(running: RunningServer) -> int:
        async def settle() -> int:
            for _ in range(SETTLE_ROUNDS):
                if running.server.active_sessions == 0:
                    break
                await asyncio.sleep(0)
            return running.server.active_sessions

        loop = running._loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(settle(), loop).result(START_TIMEOUT)

    return count
