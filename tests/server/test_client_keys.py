"""Per-client counts are per network: `client_key` maps a client IP to the network it is
counted as (`[limits] client_prefix_v4`, 32, and `client_prefix_v6`, 64), and `Slots` counts
per key. Pure bookkeeping: IPv6 hosts of one /64 need no real interface here (::1 is a single
address), so the addresses are handed in directly.
"""

from __future__ import annotations

import ipaddress

import pytest

from socks5d.server.limits import Slots, client_key, describe_client

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address


def ip(text: str) -> IPv4 | IPv6:
    return ipaddress.ip_address(text)


# --- client_key -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2::2"),
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"),
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped: counted as its IPv4 address
        ("::ffff:192.0.2.7", "192.0.2.7"),
    ],
)
def test_addresses_of_one_network_have_one_key(first: str, second: str) -> None:
    assert client_key(ip(first), 32, 64) == client_key(ip(second), 32, 64)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:3::1"),  # the next /64
        ("127.0.0.1", "127.0.0.2"),  # IPv4 counts per address by default
        ("0.0.0.1", "::1"),  # the same integer, not the same family
        ("::ffff:127.0.0.1", "::127.0.0.1"),  # IPv4-compatible is plain IPv6
    ],
)
def test_addresses_of_different_networks_have_different_keys(first: str, second: str) -> None:
    assert client_key(ip(first), 32, 64) != client_key(ip(second), 32, 64)


def test_the_prefixes_choose_the_network() -> None:
    assert client_key(ip("10.1.2.3"), 24, 64) == client_key(ip("10.1.2.200"), 24, 64)
    assert client_key(ip("10.1.2.3"), 24, 64) != client_key(ip("10.1.3.3"), 24, 64)
    assert client_key(ip("2001:db8::1"), 32, 128) != client_key(ip("2001:db8::2"), 32, 128)
    assert client_key(ip("2001:db8:1::1"), 32, 32) == client_key(ip("2001:db8:2::1"), 32, 32)
    # A mapped address takes the IPv4 prefix, not the IPv6 one.
    assert client_key(ip("::ffff:10.1.2.3"), 24, 128) == client_key(ip("10.1.2.9"), 24, 128)


@pytest.mark.parametrize(
    ("address", "prefix_v4", "prefix_v6", "text"),
    [
        ("127.0.0.1", 32, 64, "127.0.0.1"),
        ("127.0.0.77", 24, 64, "127.0.0.0/24"),
        ("2001:db8:1:2::99", 32, 64, "2001:db8:1:2::/64"),
        ("2001:db8::1", 32, 128, "2001:db8::1"),
        ("::ffff:192.0.2.7", 32, 64, "192.0.2.7"),
    ],
)
def test_a_key_is_described_as_its_address_or_network(
    address: str, prefix_v4: int, prefix_v6: int, text: str
) -> None:
    assert describe_client(client_key(ip(address), prefix_v4, prefix_v6)) == text


# --- Slots ----------------------------------------------------------------------------------------


def test_one_ipv6_host_takes_its_per_client_slots_once_for_its_whole_64() -> None:
    slots = Slots(total=100, per_client=2)
    assert slots.acquire(ip("2001:db8:1:2::1")) is None
    assert slots.acquire(ip("2001:db8:1:2::2")) is None
    assert slots.acquire(ip("2001:db8:1:2::3")) == "limit of 2 per client reached"
    assert slots.acquire(ip("2001:db8:1:3::1")) is None  # another /64
    slots.release(ip("2001:db8:1:2::1"))
    assert slots.acquire(ip("2001:db8:1:2::3")) is None
    assert slots.count == 3


def test_ipv4_clients_count_per_address_unless_told_a_prefix() -> None:
    per_address = Slots(total=100, per_client=1)
    assert per_address.acquire(ip("127.0.0.2")) is None
    assert per_address.acquire(ip("127.0.0.3")) is None
    per_24 = Slots(total=100, per_client=1, prefix_v4=24)
    assert per_24.acquire(ip("127.0.0.2")) is None
    assert per_24.acquire(ip("127.0.0.3")) == "limit of 1 per client reached"


def test_a_mapped_client_shares_the_slots_of_its_ipv4_address() -> None:
    slots = Slots(total=100, per_client=1)
    assert slots.acquire(ip("192.0.2.7")) is None
    assert slots.acquire(ip("::ffff:192.0.2.7")) == "limit of 1 per client reached"


def test_new_prefixes_recount_the_slots_held_and_release_stays_exact() -> None:
    slots = Slots(total=100, per_client=2)
    held = [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
    for address in held:
        assert slots.acquire(address) is None
    slots.set_prefixes(24, 64)  # a reload: the three now share one network's limit of 2
    assert slots.acquire(ip("10.0.0.4")) == "limit of 2 per client reached"
    for address in held:
        slots.release(address)
    assert slots.count == 0
    assert not slots.in_use
    assert slots.acquire(ip("10.0.0.4")) is None
