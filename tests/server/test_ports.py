"""PortReservations: the `--workers` supervisor's reserved ports follow the configuration."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from socks5d.config import ListenAddress
from socks5d.errors import ConfigError
from socks5d.server.ports import PortReservations


@pytest.fixture
def reservations() -> Iterator[PortReservations]:
    held = PortReservations()
    yield held
    held.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def joins(port: int) -> bool:
    """True when a SO_REUSEPORT listener can join the reservation on `port` (as a worker)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return True


def test_port_zero_becomes_one_real_port_that_workers_can_join(
    reservations: PortReservations,
) -> None:
    (shared,) = reservations.update([ListenAddress("127.0.0.1", 0)])
    assert shared.port != 0
    assert reservations.shared([ListenAddress("127.0.0.1", 0)]) == (shared,)
    assert joins(shared.port)
    with socket.socket() as other, pytest.raises(OSError):  # no one else takes it
        other.bind(("127.0.0.1", shared.port))


def test_a_reload_reserves_added_addresses_and_releases_removed_ones(
    reservations: PortReservations,
) -> None:
    (first,) = reservations.update([ListenAddress("127.0.0.1", 0)])
    added = ListenAddress("127.0.0.1", free_port())
    assert reservations.update([added]) == (added,)
    assert len(reservations.sockets()) == 1
    assert joins(added.port)
    with socket.socket() as other:  # the removed port is free again
        other.bind(("127.0.0.1", first.port))


def test_a_reload_cannot_add_port_zero(reservations: PortReservations) -> None:
    kept = ListenAddress("127.0.0.1", free_port())
    reservations.update([kept])
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1:0 \(port 0\) cannot be added"):
        reservations.update([kept, ListenAddress("127.0.0.1", 0)])
    assert list(reservations.held) == [kept]


def test_a_reload_with_an_address_in_use_changes_nothing(
    reservations: PortReservations,
) -> None:
    kept = ListenAddress("127.0.0.1", free_port())
    reservations.update([kept])
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = ListenAddress("127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError, match="Address already in use"):
            reservations.update([ListenAddress("127.0.0.1", free_port()), busy])
    assert list(reservations.held) == [kept]
    assert len(reservations.sockets()) == 1
