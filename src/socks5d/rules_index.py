"""Indexes of a rule's entry lists, so that matching costs the same with 10 entries or 100,000
(pure: no I/O).

A rule's field matches when any of its entries does, so the order of entries within one field
does not matter (the order of the rules does, and stays `RuleSet`'s): an index only answers
"does any entry cover this?".

- Networks: per IP version, the set of network numbers of each prefix length present; an
  address is looked up once per length (at most 33 or 129 lookups, in practice a handful).
  `0/0` covers every address of either family.
- Domain patterns: exact names in one set, `.example.com` and `*.example.com` suffixes in
  another; a name is looked up once per label.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DomainPattern(Protocol):
    """What an index reads of `rules.DomainPattern` (rules.py builds the indexes)."""

    @property
    def suffix(self) -> str: ...

    @property
    def exact(self) -> bool: ...

    @property
    def include_self(self) -> bool: ...


Destination = IPNetwork | DomainPattern

_BITS = {4: 32, 6: 128}


class NetworkIndex:
    """Which of a list of networks contain an address."""

    __slots__ = ("_by_length", "everything")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        #: a `0/0` entry: every address, of either family
        self.everything = False
        #: IP version -> prefix length -> the networks' numbers shifted right to that length
        self._by_length: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for network in networks:
            if network.prefixlen == 0:
                self.everything = True
                continue
            shift = _BITS[network.version] - network.prefixlen
            lengths = self._by_length[network.version]
            lengths.setdefault(network.prefixlen, set()).add(int(network.network_address) >> shift)

    def contains(self, address: IPAddress) -> bool:
        """Whether a network of the list contains `address` (IPv4-mapped IPv6 is its IPv4
        address, as everywhere in the rules)."""
        if self.everything:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        number = int(address)
        bits = _BITS[address.version]
        for length, numbers in self._by_length[address.version].items():
            if number >> (bits - length) in numbers:
                return True
        return False


class NameIndex:
    """Which of a list of domain patterns cover a name (in canonical form)."""

    __slots__ = ("_below", "_exact")

    def __init__(self, patterns: Iterable[DomainPattern]) -> None:
        #: names matched as they are: `example.com`, and `.example.com` itself
        self._exact: set[str] = set()
        #: suffixes whose subdomains match: `.example.com` and `*.example.com` -> example.com
        self._below: set[str] = set()
        for pattern in patterns:
            if pattern.exact:
                self._exact.add(pattern.suffix)
                continue
            self._below.add(pattern.suffix[1:])
            if pattern.include_self:
                self._exact.add(pattern.suffix[1:])

    def covers(self, name: str) -> bool:
        if name in self._exact:
            return True
        if not self._below:
            return False
        dot = name.find(".")
        while dot >= 0:
            if name[dot + 1 :] in self._below:
                return True
            dot = name.find(".", dot + 1)
        return False


class DestinationIndex:
    """A `to` list: networks and domain patterns together."""

    __slots__ = ("names", "networks")

    def __init__(self, entries: Iterable[Destination]) -> None:
        networks: list[IPNetwork] = []
        patterns: list[DomainPattern] = []
        for entry in entries:
            if isinstance(entry, ipaddress.IPv4Network | ipaddress.IPv6Network):
                networks.append(entry)
            else:
                patterns.append(entry)
        self.networks = NetworkIndex(networks)
        self.names = NameIndex(patterns)

    def matches(self, name: str | None, addresses: Iterable[IPAddress]) -> bool:
        """Whether an entry covers the destination: its name (when it has one) by a pattern,
        one of `addresses` by a network; `0/0` covers any destination, a name too."""
        addresses = tuple(addresses)
        if self.networks.everything and (name is not None or addresses):
            return True
        if name is not None and self.names.covers(name):
            return True
        return any(self.networks.contains(address) for address in addresses)
