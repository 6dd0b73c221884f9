"""NotifyRelay: what the `--workers` supervisor tells the service manager, checked on a
datagram socket the test owns as the service manager's."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from socks5d.server.notify import Notifier, parse_message
from socks5d.server.notifyrelay import NotifyRelay, Phase


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """The service manager's socket: what it receives is what the supervisor said."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.setblocking(False)
        yield sock


def received(sock: socket.socket) -> list[dict[str, str]]:
    """Every datagram waiting (a local datagram socket delivers at once)."""
    found = []
    while True:
        try:
            found.append(parse_message(sock.recv(4096)))
        except BlockingIOError:
            return found


@pytest.fixture
def relay(manager: socket.socket) -> Iterator[NotifyRelay]:
    notifier = Notifier(manager.getsockname())
    yield NotifyRelay(notifier, 2)
    notifier.close()


def test_ready_is_sent_once_when_every_worker_is_ready(
    relay: NotifyRelay, manager: socket.socket
) -> None:
    relay.worker_message(1, {"READY": "1", "SESSIONS": "0"})
    assert not [m for m in received(manager) if "READY" in m]
    relay.worker_message(2, {"READY": "1", "SESSIONS": "0"})
    assert received(manager) == [{"READY": "1", "STATUS": "0 sessions open, 2 workers"}]
    # a replacement worker's READY=1 says nothing new to the service manager
    relay.worker_gone(1)
    relay.worker_message(1, {"READY": "1"})
    assert not [m for m in received(manager) if "READY" in m]
    assert relay.phase is Phase.READY


def test_a_reload_is_reloading_then_ready_once_every_worker_reloaded(
    relay: NotifyRelay, manager: socket.socket
) -> None:
    for number in (1, 2):
        relay.worker_message(number, {"READY": "1"})
    received(manager)
    relay.reloading()
    (reloading,) = received(manager)
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    relay.worker_message(2, {"READY": "1"})
    assert received(manager) == []
    relay.worker_message(1, {"READY": "1"})
    assert [m["READY"] for m in received(manager)] == ["1"]


def test_a_refused_reload_is_ready_at_once(relay: NotifyRelay, manager: socket.socket) -> None:
    for number in (1, 2):
        relay.worker_message(number, {"READY": "1"})
    relay.reloading()
    relay.reload_refused()
    messages = received(manager)
    assert [next(iter(m)) for m in messages[-2:]] == ["RELOADING", "READY"]


def test_a_reload_while_starting_keeps_the_one_first_ready(
    relay: NotifyRelay, manager: socket.socket
) -> None:
    relay.worker_message(1, {"READY": "1"})
    relay.reloading()
    relay.worker_message(2, {"READY": "1"})
    messages = received(manager)
    assert not [m for m in messages if "RELOADING" in m]
    assert [m for m in messages if "READY" in m] == [
        {"READY": "1", "STATUS": "0 sessions open, 2 workers"}
    ]


def test_status_sums_the_workers_sessions_and_forgets_a_dead_one(
    relay: NotifyRelay, manager: socket.socket
) -> None:
    relay.worker_message(1, {"READY": "1", "SESSIONS": "3"})
    relay.worker_message(2, {"READY": "1", "SESSIONS": "4"})
    relay.worker_message(2, {"SESSIONS": "5"})
    relay.worker_message(2, {"SESSIONS": "5"})  # unchanged: nothing sent
    relay.worker_message(1, {"SESSIONS": "many"})  # not a number: ignored
    relay.worker_gone(1)
    statuses = [m["STATUS"] for m in received(manager)]
    assert statuses == [
        "3 sessions open, 2 workers",
        "7 sessions open, 2 workers",
        "8 sessions open, 2 workers",
        "5 sessions open, 2 workers",
    ]


def test_stopping_is_sent_once_and_ends_reloads(relay: NotifyRelay, manager: socket.socket) -> None:
    for number in (1, 2):
        relay.worker_message(number, {"READY": "1", "SESSIONS": "1"})
    received(manager)
    relay.stopping()
    relay.stopping()
    relay.reloading()
    relay.worker_message(1, {"READY": "1"})
    assert received(manager) == [{"STOPPING": "1", "STATUS": "2 sessions open, 2 workers"}]


def test_without_a_service_manager_the_bookkeeping_goes_on() -> None:
    relay = NotifyRelay(None, 1)
    relay.worker_message(1, {"READY": "1", "SESSIONS": "2"})
    assert relay.phase is Phase.READY
    assert relay.status_text() == "2 sessions open, 1 workers"
