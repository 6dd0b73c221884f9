"""Socket addresses <-> protocol addresses and log text."""

from __future__ import annotations

import ipaddress
from typing import Any

from socks5d.proto import Address


def format_peer(address: Any) -> str:
    """`host:port` of a socket address, IPv6 in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unmapped(
    host: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), else `host`."""
    if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
        return host.ipv4_mapped
    return host


def address_of(sockaddr: Any) -> Address:
    """A socket address as a protocol `Address`; IPv4-mapped IPv6 addresses become IPv4."""
    return Address(unmapped(ipaddress.ip_address(sockaddr[0].partition("%")[0])), sockaddr[1])
