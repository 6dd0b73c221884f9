"""Shared fixtures: a socks5d server running in a background thread, with its access log.

    def test_something(socks_server):             # defaults: 127.0.0.1:0, no auth
        socks_server.port, socks_server.url()      # "socks5://127.0.0.1:PORT"
        socks_server.wait_records(1)               # access-log records (dicts), proof of passage

    def test_auth(start_server):
        server = start_server(users={"alice": "secret"})           # userpass only
        server = start_server(listen=["[::1]:0"], timeouts={"handshake": 0.5})
        server = start_server(event_loop="uvloop", performance={"relay": "portable"})

The thread hosts its own event loop, so blocking clients (subprocesses, requests) and asyncio
tests alike can use it. Stopping checks that no session task is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from serving import IO_TIMEOUT, Processes, serve_fixture
from socks5d.config import build_config
from socks5d.server import Server
from socks5d.server.accesslog import ACCESS_LOGGER
from socks5d.server.runtime import loop_factory
from socks5d.users import UserDatabase, hash_password

#: scrypt cost for test users: cheap, the format is what is under test
TEST_HASH_COST = (1 << 10, 8, 1)
START_TIMEOUT = 10.0


class _RecordCollector(logging.Handler):
    def __init__(self, owner: RunningServer) -> None:
        super().__init__(logging.DEBUG)
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if fields and fields.get("listener") in self.owner.listener_names:
            with self.owner.condition:
                self.owner.records.append(dict(fields))
                self.owner.condition.notify_all()


class RunningServer:
    """A `Server` on its own thread and event loop (`event_loop`: "asyncio" or "uvloop")."""

    def __init__(self, server: Server, event_loop: str = "asyncio") -> None:
        self.server = server
        self.records: list[dict[str, Any]] = []
        self.condition = threading.Condition()
        self.listener_names: set[str] = set()
        self.leftover_tasks: list[asyncio.Task[Any]] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._handler = _RecordCollector(self)
        self._event_loop = event_loop
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RunningServer:
        logging.getLogger(ACCESS_LOGGER).addHandler(self._handler)
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=loop_factory(self._event_loop)) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        for host, port in self.server.addresses:
            self.listener_names.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        self._ready.set()
        await self._stop.wait()
        await self.server.close()
        current = asyncio.current_task()
        self.leftover_tasks = [task for task in asyncio.all_tasks() if task is not current]

    def stop(self) -> None:
        """Close the server and wait for its thread; fail if a session task survived."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT)
        logging.getLogger(ACCESS_LOGGER).removeHandler(self._handler)
        assert not self._thread.is_alive(), "server thread did not stop"
        assert self.server.active_sessions == 0
        assert not self.leftover_tasks, f"tasks left running: {self.leftover_tasks}"

    @property
    def host(self) -> str:
        return self.server.addresses[0][0]

    @property
    def port(self) -> int:
        return self.server.addresses[0][1]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def url(self, scheme: str = "socks5", user: str | None = None, password: str = "") -> str:
        """A proxy URL for this server, e.g. `socks5h://alice:secret@127.0.0.1:1080`."""
        credentials = f"{user}:{password}@" if user is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{credentials}{host}:{self.port}"

    def wait_records(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least `count` access records were logged; return them all."""
        with self.condition:
            if not self.condition.wait_for(lambda: len(self.records) >= count, timeout):
                raise AssertionError(f"expected {count} access records, got {self.records}")
            return list(self.records)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: `start_server(users={...}, listen=[...], auth=[...], timeouts={...})`."""
    running: list[RunningServer] = []

    def start(
        *,
        users: dict[str, str] | None = None,
        listen: list[str] | None = None,
        auth: list[str] | None = None,
        event_loop: str = "asyncio",
        **settings: Any,
    ) -> RunningServer:
        database = None
        users_arg = None
        if users is not None:
            database = UserDatabase(
                {name: hash_password(pw, TEST_HASH_COST) for name, pw in users.items()}
            )
            users_arg = str(tmp_path / "users")  # the path only selects userpass by default
        config = build_config(
            settings, listen=listen or ["127.0.0.1:0"], auth=auth, users=users_arg
        )
        server = RunningServer(Server(config, users=database), event_loop).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def socks_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    """A no-auth server on 127.0.0.1 with default settings."""
    return start_server()


@pytest.fixture
def serve() -> Iterator[Processes]:
    """Start `socks5d serve` processes (`serving.ServeProcess`); each is killed at the end."""
    yield from serve_fixture()


@pytest.fixture
def destination() -> Iterator[socket.socket]:
    """The far end of tunnels: a listener on 127.0.0.1 the test accepts on by hand."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(IO_TIMEOUT)
        yield sock
