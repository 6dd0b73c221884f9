"""Fixtures of the server tests: destinations to connect to, and servers built by hand.

`start_server` (tests/conftest.py) covers configuration; `start_server_with_resolver` also
injects the resolver, so DNS outcomes need no real DNS. `on_record` runs a check on the
server's thread at the moment a session is logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import START_TIMEOUT, RunningServer
from socks5d.config import build_config
from socks5d.server import Server
from socks5d.server.accesslog import ACCESS_LOGGER
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
    """Factory: `start_server_with_resolver(resolver, event_loop=..., timeouts={...})`,
    no-auth, loopback."""
    running: list[RunningServer] = []

    def start(resolver: Resolver, event_loop: str = "asyncio", **settings: Any) -> RunningServer:
        config = build_config(settings, listen=["127.0.0.1:0"])
        server = RunningServer(Server(config, resolver=resolver), event_loop).start()
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


class _RecordHook(logging.Handler):
    def __init__(self, running: RunningServer, callback: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(logging.DEBUG)
        self.running = running
        self.callback = callback
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if fields and fields.get("listener") in self.running.listener_names:
            try:
                self.callback(dict(fields))
            except BaseException as exc:  # logging would swallow it: the test re-raises it
                self.errors.append(exc)


@pytest.fixture
def on_record() -> Iterator[Callable[[RunningServer, Callable[[dict[str, Any]], None]], None]]:
    """`on_record(server, callback)`: run `callback(fields)` on the server's own thread the
    moment each access record of `server` is logged, before its event loop runs any further.

    For checking what holds *when* a session is logged; the callback must not block.
    Exceptions it raises fail the test at teardown.
    """
    hooks: list[_RecordHook] = []

    def install(running: RunningServer, callback: Callable[[dict[str, Any]], None]) -> None:
        hook = _RecordHook(running, callback)
        logging.getLogger(ACCESS_LOGGER).addHandler(hook)
        hooks.append(hook)

    yield install
    for hook in hooks:
        logging.getLogger(ACCESS_LOGGER).removeHandler(hook)
    for hook in hooks:
        for error in hook.errors:
            raise error
