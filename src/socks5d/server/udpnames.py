"""The resolved names of UDP destinations, cached per association: resolving the name of
every datagram would cost more than relaying it. Bounded in size and age.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from socks5d.net import Target
from socks5d.proto import DomainName
from socks5d.server.context import Resolver


class NameCache:
    """A small cache of resolved names for UDP destinations (resolving per datagram is slow)."""

    def __init__(self, resolver: Resolver, size: int = 256, ttl: float = 60.0) -> None:
        self.resolver = resolver
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[tuple[str, int], tuple[float, list[Target]]] = OrderedDict()

    def get(self, name: DomainName, port: int) -> list[Target] | None:
        """The cached addresses, or None when not cached or expired."""
        entry = self._entries.get((name, port))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def resolve(self, name: DomainName, port: int) -> list[Target]:
        """Resolve through the cache."""
        cached = self.get(name, port)
        if cached is not None:
            return cached
        targets = await self.resolver(name, port)
        self._entries[(name, port)] = (time.monotonic() + self.ttl, targets)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return targets
