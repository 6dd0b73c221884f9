"""The rule indexes (`socks5d.rules_index`) against the linear matching they replace: for any
networks, domain patterns, names and addresses, hypothesis finds no answer that differs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st

from socks5d.rules import Destination, DomainPattern, IPAddress, IPNetwork
from socks5d.rules_index import DestinationIndex, NetworkIndex


def linear_in_networks(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """The scan the index replaces (rules.py before it): ::ffff:a.b.c.d is a.b.c.d, and a /0
    is everything, of either family."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(
        net.prefixlen == 0 or (address.version == net.version and address in net)
        for net in networks
    )


def linear_matches(
    entries: Iterable[Destination], name: str | None, addresses: tuple[IPAddress, ...]
) -> bool:
    """The scan of a `to` list the index replaces (`RuleSet._destination_matches` before)."""
    for entry in entries:
        if isinstance(entry, DomainPattern):
            covered = name is not None and entry.matches(name)
        elif entry.prefixlen == 0:
            covered = name is not None or bool(addresses)  # 0/0: any destination, a name too
        else:
            covered = any(linear_in_networks(address, (entry,)) for address in addresses)
        if covered:
            return True
    return False


# Few values, so that the random entries and requests meet often.
v4 = st.builds(
    ipaddress.IPv4Address,
    st.sampled_from([0, 1, 0x0A000001, 0x7F000001, 0xC0A80101, 0xFFFFFFFF])
    | st.integers(0, 2**32 - 1),
)
v6 = st.builds(
    ipaddress.IPv6Address,
    st.sampled_from([1, 2**128 - 1, 0x20010DB8 << 96]) | st.integers(0, 2**128 - 1),
)
mapped = v4.map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}"))
addresses = st.one_of(v4, v6, mapped)
networks = st.one_of(
    st.tuples(v4, st.integers(0, 32)).map(
        lambda t: ipaddress.IPv4Network((t[0], t[1]), strict=False)
    ),
    st.tuples(v6, st.integers(0, 128)).map(
        lambda t: ipaddress.IPv6Network((t[0], t[1]), strict=False)
    ),
)
labels = st.sampled_from(["a", "b", "example", "com", "corp", "x-y"])
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
patterns = st.tuples(st.sampled_from(["", ".", "*."]), names).map(
    lambda t: DomainPattern.parse(t[0] + t[1])
)
entries = st.lists(st.one_of(networks, patterns), max_size=30)


@given(nets=st.lists(networks, max_size=30), address=addresses)
def test_network_index_answers_as_the_scan(nets: list[IPNetwork], address: IPAddress) -> None:
    assert NetworkIndex(nets).contains(address) == linear_in_networks(address, nets)


@given(
    destinations=entries,
    name=st.none() | names,
    found=st.lists(addresses, max_size=2).map(tuple),
)
def test_destination_index_answers_as_the_scan(
    destinations: list[Destination], name: str | None, found: tuple[IPAddress, ...]
) -> None:
    index = DestinationIndex(destinations)
    assert index.matches(name, found) == linear_matches(destinations, name, found)


def test_a_hundred_thousand_entries_are_one_index() -> None:
    """The index is built once per rule: its lookups do not scan."""
    nets = [ipaddress.IPv4Network((i << 8, 24)) for i in range(100_000)]
    index = NetworkIndex(nets)
    assert index.contains(ipaddress.IPv4Address((99_999 << 8) + 7))
    assert not index.contains(ipaddress.IPv4Address((100_000 << 8) + 7))
