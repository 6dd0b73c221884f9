"""Access rules: ordered lists, first match wins (pure: no I/O, no asyncio).

Two lists, after Dante's `client pass` / `socks pass`:

- `[[client]]` rules decide whether an address may talk to the server at all (checked at
  accept, before the greeting): fields `from`, `listener`;
- `[[socks]]` rules decide whether a request may go through: fields `from`, `listener`, `user`,
  `group`, `command`, `to`, `port`.

A field left out matches anything; a field given matches when any of its entries does; a
rule matches when all its fields do. `to` entries are networks (`10.0.0.0/8`, `::1/128`,
`0/0`) or domain patterns (`example.com` exactly, `.example.com` the domain and its
subdomains, `*.example.com` subdomains only). A domain destination is checked twice: by its
name before it is resolved (only patterns and `0/0` can match then), and with every address it
resolves to (patterns match the name, networks the address), so a name resolving to a blocked
address is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from socks5d.names import BadDestinationName, canonical_name
from socks5d.proto import Command
from socks5d.rules_index import DestinationIndex, NetworkIndex

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ACTIONS = ("pass", "block")
#: `command` spellings
COMMANDS: dict[str, Command] = {
    "connect": Command.CONNECT,
    "bind": Command.BIND,
    "udp": Command.UDP_ASSOCIATE,
    "udpassociate": Command.UDP_ASSOCIATE,
    "udp_associate": Command.UDP_ASSOCIATE,
}

#: `block_private_destinations`: where a proxy on the internet must not lead.
PRIVATE_NETWORKS: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, including the cloud metadata service 169.254.169.254
    "172.16.0.0/12",  # RFC 1918
    "192.168.0.0/16",  # RFC 1918
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
    "::/128",  # unspecified
    "::1/128",  # loopback
    # (IPv4-mapped ::ffff:0:0/96 needs no entry: mapped addresses are matched as IPv4 ones)
    "64:ff9b::/96",  # NAT64 to IPv4
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
)


#: ::ffff:0:0/96, where IPv6 spells IPv4 addresses (RFC 4291 §2.5.5.2)
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_network(text: str) -> IPNetwork:
    """`10.0.0.0/8`, `::1`, and Dante's `0/0` for everything.

    A network in IPv4-mapped form (`::ffff:127.0.0.0/104`) is its IPv4 network (127.0.0.0/8):
    addresses are unmapped before they are matched, so the mapped form would never match.
    """
    if text.strip() == "0/0":
        return ipaddress.IPv4Network("0.0.0.0/0")
    network = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        if network.prefixlen == _IPV4_MAPPED.prefixlen:  # 0.0.0.0/0 would mean both families
            raise ValueError("an IPv4-mapped network is matched as IPv4: write the IPv4 network")
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


@dataclass(frozen=True, slots=True)
class DomainPattern:
    """`example.com` (exactly), `.example.com` (it and below), `*.example.com` (below only)."""

    suffix: str
    exact: bool
    include_self: bool

    @classmethod
    def parse(cls, text: str) -> DomainPattern:
        """Parse a pattern; its name is put in canonical form (`socks5d.names`), so that
        `bücher.example` and `Bücher.Example.` match what clients send for it.

        Raises:
            ValueError: not a domain name or pattern.
        """
        text = text.strip()
        prefix = next((p for p in ("*.", ".") if text.startswith(p)), "")
        try:
            name = canonical_name(text[len(prefix) :])
        except BadDestinationName as exc:
            raise ValueError(
                f"not a domain name or pattern (example.com, .example.com, *.example.com):"
                f" {exc.why}"
            ) from None
        if prefix == "*.":
            return cls(f".{name}", exact=False, include_self=False)
        if prefix == ".":
            return cls(f".{name}", exact=False, include_self=True)
        return cls(name, exact=True, include_self=True)

    def matches(self, host: str) -> bool:
        """Whether the domain name `host`, in canonical form, is covered."""
        if self.exact:
            return host == self.suffix
        return host.endswith(self.suffix) or (self.include_self and host == self.suffix[1:])


_PORT_FORMS: list[tuple[re.Pattern[str], Callable[[int, int], tuple[int, int, bool]]]] = [
    (re.compile(r"^(\d+)$"), lambda a, b: (a, a, False)),
    (re.compile(r"^(\d+)\s*-\s*(\d+)$"), lambda a, b: (a, b, False)),
    (re.compile(r"^(?:eq|==?)\s*(\d+)$"), lambda a, b: (a, a, False)),
    (re.compile(r"^(?:ne|!=)\s*(\d+)$"), lambda a, b: (a, a, True)),
    (re.compile(r"^(?:ge|>=)\s*(\d+)$"), lambda a, b: (a, 0xFFFF, False)),
    (re.compile(r"^(?:gt|>)\s*(\d+)$"), lambda a, b: (a + 1, 0xFFFF, False)),
    (re.compile(r"^(?:le|<=)\s*(\d+)$"), lambda a, b: (0, a, False)),
    (re.compile(r"^(?:lt|<)\s*(\d+)$"), lambda a, b: (0, a - 1, False)),
]


@dataclass(frozen=True, slots=True)
class PortRange:
    """`80`, `1-1023`, `>= 1024`, `> 1023`, `<= 1023`, `< 1024`, `eq 22`, `!= 25`."""

    low: int
    high: int
    negated: bool = False

    @classmethod
    def parse(cls, text: str) -> PortRange:
        for pattern, build in _PORT_FORMS:
            if match := pattern.match(text.strip()):
                numbers = [int(n) for n in match.groups()] + [0]
                low, high, negated = build(numbers[0], numbers[1])
                if not 0 <= low <= high <= 0xFFFF:
                    break
                return cls(low, high, negated)
        raise ValueError(f"{text!r} is not a port, range or comparison (80, 1-1023, >= 1024)")

    def matches(self, port: int) -> bool:
        return (self.low <= port <= self.high) != self.negated


Destination = IPNetwork | DomainPattern


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule; None in a field means "any"."""

    #: "client[0]", "socks[3]", "block_private_destinations": named in logs
    name: str
    action: str
    clients: tuple[IPNetwork, ...] | None = None
    listeners: tuple[str, ...] | None = None
    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    commands: frozenset[Command] | None = None
    destinations: tuple[Destination, ...] | None = None
    ports: tuple[PortRange, ...] | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """What a rule is matched against."""

    client: IPAddress
    #: the listening address, "127.0.0.1:1080"
    listener: str
    #: the authenticated user (RFC 1929), or None
    user: str | None = None
    command: Command | None = None
    #: the destination's name, if it is one
    name: str | None = None
    #: the destination's address (resolved, or given as an address)
    address: IPAddress | None = None
    port: int | None = None
    #: False for a UDP ASSOCIATE request, which names no destination: its datagrams do
    has_destination: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome: `allowed`, and the rule that decided (None: the default)."""

    allowed: bool
    rule: str | None


#: What an unspecified destination address of each IP version connects to: this host.
_THIS_HOST: dict[int, IPAddress] = {
    4: ipaddress.IPv4Address("127.0.0.1"),
    6: ipaddress.IPv6Address("::1"),
}


def _listener_matches(entries: tuple[str, ...], listener: str) -> bool:
    host = listener.rpartition(":")[0].strip("[]")
    return listener in entries or host in entries


class RuleSet:
    """Both rule lists, their defaults and the groups; `check_*` decide."""

    def __init__(
        self,
        client_rules: Iterable[Rule] = (),
        socks_rules: Iterable[Rule] = (),
        *,
        client_default: str = "pass",
        socks_default: str = "pass",
        groups: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.client_rules = tuple(client_rules)
        self.socks_rules = tuple(socks_rules)
        #: each rule's entry lists indexed (`rules_index`), in the rules' order
        self._client_indexes = tuple(_RuleIndex(rule) for rule in self.client_rules)
        self._socks_indexes = tuple(_RuleIndex(rule) for rule in self.socks_rules)
        self.client_default = client_default
        self.socks_default = socks_default
        self.groups = {name: frozenset(members) for name, members in (groups or {}).items()}

    def _matches(self, rule: Rule, index: _RuleIndex, request: Request) -> bool:
        if not request.has_destination and (
            rule.destinations is not None or rule.ports is not None
        ):
            # A UDP association is allowed when a pass rule could let some datagram through;
            # block rules with a destination act on the datagrams themselves.
            return rule.action == "pass" and self._matches_apart_from_destination(
                rule, index, request
            )
        if rule.ports is not None and (
            request.port is None or not any(p.matches(request.port) for p in rule.ports)
        ):
            return False
        return self._matches_apart_from_destination(rule, index, request) and (
            index.destinations is None or _destination_matches(index.destinations, request)
        )

    def _matches_apart_from_destination(
        self, rule: Rule, index: _RuleIndex, request: Request
    ) -> bool:
        if index.clients is not None and not index.clients.contains(request.client):
            return False
        if rule.listeners is not None and not _listener_matches(rule.listeners, request.listener):
            return False
        if rule.users is not None and request.user not in rule.users:
            return False
        if rule.groups is not None and not any(
            request.user in self.groups.get(group, ()) for group in rule.groups
        ):
            return False
        return rule.commands is None or request.command in rule.commands

    def _decide(
        self,
        rules: tuple[Rule, ...],
        indexes: tuple[_RuleIndex, ...],
        default: str,
        request: Request,
    ) -> Decision:
        for rule, index in zip(rules, indexes, strict=True):
            if self._matches(rule, index, request):
                return Decision(rule.action == "pass", rule.name)
        return Decision(default == "pass", None)

    def check_client(self, client: IPAddress, listener: str) -> Decision:
        """May `client` talk to the server on `listener` at all?"""
        request = Request(client, listener)
        return self._decide(self.client_rules, self._client_indexes, self.client_default, request)

    def check_request(self, request: Request) -> Decision:
        """May this request (or datagram, or incoming BIND peer) go through?"""
        return self._decide(self.socks_rules, self._socks_indexes, self.socks_default, request)


class _RuleIndex:
    """A rule's `from` and `to` lists indexed (`rules_index`): the same answers as scanning
    them, at a cost that does not grow with their length."""

    __slots__ = ("clients", "destinations")

    def __init__(self, rule: Rule) -> None:
        self.clients = NetworkIndex(rule.clients) if rule.clients is not None else None
        self.destinations = (
            DestinationIndex(rule.destinations) if rule.destinations is not None else None
        )


def _destination_matches(index: DestinationIndex, request: Request) -> bool:
    addresses: tuple[IPAddress, ...] = ()
    if request.address is not None:
        addresses = (request.address,)
        if request.address.is_unspecified and request.command != Command.BIND:
            # Connecting to 0.0.0.0 reaches 127.0.0.1, to :: reaches ::1 (Linux): each is
            # matched as that loopback address too, so a rule that blocks loopback blocks it,
            # and a pass rule passes exactly the address it reaches. (BIND's all-zeros
            # DST.ADDR names no destination, but "any peer".)
            addresses += (_THIS_HOST[request.address.version],)
    return index.matches(request.name, addresses)


def private_destinations_rule(own_addresses: Iterable[IPAddress] = ()) -> Rule:
    """The ready-made `block_private_destinations` rule, plus the server's own addresses."""
    networks = [parse_network(n) for n in PRIVATE_NETWORKS]
    networks += [ipaddress.ip_network(a) for a in own_addresses]
    return Rule("block_private_destinations", "block", destinations=tuple(networks))
