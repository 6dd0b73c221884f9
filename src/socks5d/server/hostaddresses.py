"""This host's own addresses, which `block_private_destinations` keeps clients from reaching
through the proxy, and the rule set with that preset in front (`access_rules`). Read from the
system (names, /proc); no socket is opened.
"""

from __future__ import annotations

import ipaddress
import socket
from itertools import pairwise

from socks5d.config import ServerConfig
from socks5d.rules import RuleSet, private_destinations_rule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def own_addresses(config: ServerConfig) -> set[IPAddress]:
    """This host's addresses (for `block_private_destinations`): the listen addresses, the
    host name's addresses and every interface address the kernel lists.
    """
    found: set[IPAddress] = set()
    names = [a.host for a in config.listen] + [socket.gethostname()]
    for name in names:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        found.update(ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos)
    try:  # IPv6 interface addresses: one hex address per line
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            for line in table:
                found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
    except OSError:
        pass
    try:  # IPv4 interface addresses
        with open("/proc/net/fib_trie", encoding="ascii") as trie:
            lines = trie.read().splitlines()
        for previous, line in pairwise(lines):
            if "/32 host LOCAL" in line:
                found.add(ipaddress.IPv4Address(previous.split()[-1]))
    except (OSError, ValueError):
        pass
    return {address for address in found if not address.is_unspecified}


def access_rules(config: ServerConfig) -> RuleSet:
    """The `[[client]]` and `[[socks]]` rules of `config`, with the private-destinations
    preset (and this host's addresses) in front when `block_private_destinations` is on."""
    rules = config.rules
    socks_rules = rules.socks
    if rules.block_private_destinations:
        socks_rules = (private_destinations_rule(own_addresses(config)), *socks_rules)
    return RuleSet(
        rules.client,
        socks_rules,
        client_default=rules.client_default,
        socks_default=rules.socks_default,
        groups=dict(rules.groups),
    )
