"""Access rules without sockets: `RuleSet` decisions, and how `[[client]]`, `[[socks]]`,
`[rules]` and `[groups]` are read from the configuration.

Rules are written the way an operator writes them (TOML, through `build_config`), so each test
also proves the field is parsed; a few build `Rule`s by hand where the object is the point.
"""

from __future__ import annotations

import ipaddress
import textwrap
import tomllib
from pathlib import Path

import pytest

from socks5d.cli import main
from socks5d.config import build_config
from socks5d.errors import ConfigError
from socks5d.names import canonical_name
from socks5d.net import unmapped as unmap
from socks5d.proto import Command
from socks5d.rules import (
    Decision,
    DomainPattern,
    PortRange,
    Request,
    Rule,
    RuleSet,
    parse_network,
    private_destinations_rule,
)

LISTENER = "127.0.0.1:1080"


def rules_from(toml: str) -> RuleSet:
    """The `RuleSet` the server builds from this configuration text (without the preset)."""
    rules = build_config(tomllib.loads(textwrap.dedent(toml))).rules
    return RuleSet(
        rules.client,
        rules.socks,
        client_default=rules.client_default,
        socks_default=rules.socks_default,
        groups=dict(rules.groups),
    )


def request(
    to: str | None = "203.0.113.7",
    port: int | None = 80,
    *,
    resolved: str | None = None,
    client: str = "127.0.0.1",
    listener: str = LISTENER,
    user: str | None = None,
    command: Command = Command.CONNECT,
) -> Request:
    """A request to `to` (an IP literal, or a name, then `resolved` is what it resolved to);
    `to=None` is a UDP ASSOCIATE request, which names no destination."""
    name = address = None
    if to is not None:
        try:
            address = ipaddress.ip_address(to)
        except ValueError:
            name = to
            address = ipaddress.ip_address(resolved) if resolved is not None else None
    return Request(
        ipaddress.ip_address(client),
        listener,
        user,
        command,
        name,
        address,
        port,
        has_destination=to is not None,
    )


def blocked(rules: RuleSet, req: Request) -> str | None:
    """The name of the rule that refused `req` ("default" for the default); None: allowed."""
    decision = rules.check_request(req)
    if decision.allowed:
        return None
    return decision.rule or "default"


# --- order and defaults ---------------------------------------------------------------------------


def test_first_matching_rule_wins_and_later_rules_are_not_consulted() -> None:
    rules = rules_from(
        """
        [[socks]]
        action = "block"
        to = ["127.0.0.1/32"]
        [[socks]]
        action = "pass"
        to = ["127.0.0.0/8"]
        [[socks]]
        action = "block"
        to = ["0/0"]
        """
    )
    assert rules.check_request(request("127.0.0.1")) == Decision(False, "socks[0]")
    assert rules.check_request(request("127.0.0.2")) == Decision(True, "socks[1]")
    assert rules.check_request(request("10.0.0.1")) == Decision(False, "socks[2]")


def test_without_rules_both_lists_pass_and_no_rule_is_named() -> None:
    rules = rules_from("")
    assert rules.check_request(request()) == Decision(True, None)
    assert rules.check_client(ipaddress.ip_address("127.0.0.1"), LISTENER) == Decision(True, None)


def test_defaults_decide_when_no_rule_matches_in_each_list() -> None:
    rules = rules_from(
        """
        [rules]
        client_default = "block"
        socks_default = "block"
        [[client]]
        action = "pass"
        from = ["127.0.0.1/32"]
        [[socks]]
        action = "pass"
        port = ["443"]
        """
    )
    assert rules.check_client(ipaddress.ip_address("127.0.0.1"), LISTENER) == Decision(
        True, "client[0]"
    )
    assert rules.check_client(ipaddress.ip_address("127.0.0.2"), LISTENER) == Decision(False, None)
    assert rules.check_request(request(port=443)) == Decision(True, "socks[0]")
    assert rules.check_request(request(port=80)) == Decision(False, None)


def test_pass_defaults_let_unmatched_requests_through() -> None:
    rules = rules_from(
        """
        [rules]
        client_default = "pass"
        socks_default = "pass"
        [[client]]
        action = "block"
        from = ["10.0.0.0/8"]
        [[socks]]
        action = "block"
        port = ["25"]
        """
    )
    assert rules.check_client(ipaddress.ip_address("127.0.0.1"), LISTENER) == Decision(True, None)
    assert rules.check_request(request(port=80)) == Decision(True, None)


def test_a_rule_matches_only_when_every_field_does_and_a_field_when_any_entry_does() -> None:
    rules = rules_from(
        """
        [[socks]]
        action = "block"
        from = ["10.0.0.0/8", "192.168.0.0/16"]
        port = ["22", "23"]
        """
    )
    assert blocked(rules, request(client="10.1.1.1", port=22)) == "socks[0]"
    assert blocked(rules, request(client="192.168.1.1", port=23)) == "socks[0]"
    assert blocked(rules, request(client="10.1.1.1", port=80)) is None  # port differs
    assert blocked(rules, request(client="172.16.0.1", port=22)) is None  # client differs


# --- fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("10.1.2.3", "socks[0]"),
        ("11.0.0.1", None),
        ("fd00::1", "socks[0]"),
        ("fe80::1", None),
        ("::ffff:10.1.2.3", "socks[0]"),  # IPv4-mapped: the IPv4 address, for rules
    ],
)
def test_from_matches_ipv4_and_ipv6_networks(client: str, expected: str | None) -> None:
    rules = rules_from(
        """
        [[socks]]
        action = "block"
        from = ["10.0.0.0/8", "fd00::/8"]
        """
    )
    assert blocked(rules, request(client=client)) == expected


@pytest.mark.parametrize("client", ["127.0.0.1", "203.0.113.9"])
def test_from_zero_zero_matches_every_ipv4_client(client: str) -> None:
    rules = rules_from('[[client]]\naction = "block"\nfrom = ["0/0"]\n')
    assert rules.check_client(ipaddress.ip_address(client), LISTENER) == Decision(
        False, "client[0]"
    )


@pytest.mark.parametrize("client", ["::1", "2001:db8::1"])
def test_from_zero_zero_matches_every_ipv6_client_too(client: str) -> None:
    rules = rules_from('[[client]]\naction = "block"\nfrom = ["0/0"]\n')
    assert rules.check_client(ipaddress.ip_address(client), "[::1]:1080") == Decision(
        False, "client[0]"
    )


@pytest.mark.parametrize(
    ("entry", "listener", "matches"),
    [
        ("127.0.0.1:1080", "127.0.0.1:1080", True),
        ("127.0.0.1:1080", "127.0.0.1:1081", False),
        ("127.0.0.1", "127.0.0.1:1080", True),
        ("127.0.0.1", "127.0.0.1:1081", True),
        ("127.0.0.1", "127.0.0.2:1080", False),
        ("[::1]:1080", "[::1]:1080", True),
        ("::1", "[::1]:1080", True),
        ("::1", "127.0.0.1:1080", False),
    ],
)
def test_listener_matches_as_ip_port_or_as_ip_alone(
    entry: str, listener: str, matches: bool
) -> None:
    rules = rules_from(
        f"""
        [[client]]
        action = "block"
        listener = ["{entry}"]
        [[socks]]
        action = "block"
        listener = ["{entry}"]
        """
    )
    client = ipaddress.ip_address("127.0.0.1")
    assert rules.check_client(client, listener).allowed is not matches
    assert (blocked(rules, request(listener=listener)) is not None) is matches


def test_user_matches_the_authenticated_name_only() -> None:
    rules = rules_from(
        """
        [[socks]]
        action = "block"
        user = ["bob", "carol"]
        """
    )
    assert blocked(rules, request(user="bob")) == "socks[0]"
    assert blocked(rules, request(user="carol")) == "socks[0]"
    assert blocked(rules, request(user="alice")) is None
    assert blocked(rules, request(user="Bob")) is None  # names are exact
    assert blocked(rules, request(user=None)) is None  # no login: no user to match


def test_group_matches_members_listed_in_groups() -> None:
    rules = rules_from(
        """
        [rules]
        socks_default = "block"
        [groups]
        staff = ["alice", "bob"]
        admins = ["root"]
        [[socks]]
        action = "pass"
        group = ["staff", "admins"]
        """
    )
    for member in ("alice", "bob", "root"):
        assert rules.check_request(request(user=member)) == Decision(True, "socks[0]")
    assert blocked(rules, request(user="mallory")) == "default"
    assert blocked(rules, request(user=None)) == "default"


@pytest.mark.parametrize(
    ("spelling", "command"),
    [
        ("connect", Command.CONNECT),
        ("bind", Command.BIND),
        ("udp", Command.UDP_ASSOCIATE),
        ("udpassociate", Command.UDP_ASSOCIATE),
        ("udp_associate", Command.UDP_ASSOCIATE),
    ],
)
def test_command_spellings_match_their_command_and_no_other(
    spelling: str, command: Command
) -> None:
    rules = rules_from(f'[[socks]]\naction = "block"\ncommand = ["{spelling}"]\n')
    for other in Command:
        assert (blocked(rules, request(command=other)) is not None) is (other == command)


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("10.1.2.3", "socks[0]"),
        ("11.1.2.3", None),
        ("::1", "socks[0]"),
        ("::2", None),
        ("2001:db8:1::5", "socks[0]"),
        ("2001:db9::5", None),
    ],
)
def test_to_matches_ipv4_and_ipv6_networks(to: str, expected: str | None) -> None:
    rules = rules_from(
        """
        [[socks]]
        action = "block"
        to = ["10.0.0.0/8", "::1/128", "2001:db8::/32"]
        """
    )
    assert blocked(rules, request(to)) == expected


@pytest.mark.parametrize(
    "req",
    [
        request("203.0.113.7"),
        request("2001:db8::7"),
        request("example.com"),  # a name, before it is resolved
        request("example.com", resolved="2001:db8::7"),
    ],
    ids=["ipv4", "ipv6", "name", "resolved-name"],
)
def test_to_zero_zero_matches_every_destination(req: Request) -> None:
    rules = rules_from('[[socks]]\naction = "block"\nto = ["0/0"]\n')
    assert blocked(rules, req) == "socks[0]"


def test_udp_associate_without_destination_is_not_refused_by_block_rules_with_to_or_port() -> None:
    # README: "block rules with `to` or `port` do not refuse it"; its datagrams are checked.
    rules = rules_from(
        """
        [[socks]]
        action = "block"
        to = ["0/0"]
        [[socks]]
        action = "block"
        port = ["0-65535"]
        """
    )
    assert blocked(rules, request(None, None, command=Command.UDP_ASSOCIATE)) is None


def test_udp_associate_is_allowed_by_a_pass_rule_that_could_let_a_datagram_through() -> None:
    rules = rules_from(
        """
        [rules]
        socks_default = "block"
        [[socks]]
        action = "block"
        to = ["127.0.0.0/8"]
        [[socks]]
        action = "pass"
        command = ["udp"]
        to = ["198.51.100.0/24"]
        port = ["53"]
        """
    )
    association = request(None, None, command=Command.UDP_ASSOCIATE)
    assert rules.check_request(association) == Decision(True, "socks[1]")
    # the rule's other fields still count: a CONNECT is no UDP association
    assert blocked(rules, request(None, None, command=Command.CONNECT)) == "default"
    # and each datagram is checked with every field
    assert blocked(rules, request("198.51.100.1", 53, command=Command.UDP_ASSOCIATE)) is None
    assert blocked(rules, request("198.51.100.1", 54, command=Command.UDP_ASSOCIATE)) == "default"
    assert blocked(rules, request("127.0.0.1", 53, command=Command.UDP_ASSOCIATE)) == "socks[0]"


def test_a_block_rule_without_to_or_port_refuses_the_udp_association_itself() -> None:
    rules = rules_from('[[socks]]\naction = "block"\ncommand = ["udp"]\n')
    association = request(None, None, command=Command.UDP_ASSOCIATE)
    assert rules.check_request(association) == Decision(False, "socks[0]")


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("example.com", "example.com", True),
        ("example.com", "www.example.com", False),
        ("example.com", "badexample.com", False),
        (".example.com", "example.com", True),
        (".example.com", "www.example.com", True),
        (".example.com", "a.b.example.com", True),
        (".example.com", "badexample.com", False),
        (".example.com", "example.com.evil", False),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        # case-insensitive, and a trailing dot (the root) on either side is the same name, once
        # both are in canonical form (the session canonicalises DST.ADDR, parse the pattern)
        ("Example.COM", "eXample.com", True),
        ("example.com.", "example.com", True),
        ("example.com", "EXAMPLE.COM.", True),
        (".Example.Com.", "WWW.example.com.", True),
        ("*.EXAMPLE.com", "www.Example.COM.", True),
    ],
)
def test_domain_patterns(pattern: str, host: str, matches: bool) -> None:
    host = canonical_name(host)
    assert DomainPattern.parse(pattern).matches(host) is matches
    rules = rules_from(f'[[socks]]\naction = "block"\nto = ["{pattern}"]\n')
    assert (blocked(rules, request(host)) is not None) is matches


@pytest.mark.parametrize(
    ("form", "matching", "not_matching"),
    [
        ("80", [80], [79, 81, 8080]),
        ("1-1023", [1, 512, 1023], [0, 1024, 65535]),
        ("1 - 1023", [1, 1023], [0, 1024]),
        (">= 1024", [1024, 65535], [1023, 0]),
        ("> 1023", [1024, 65535], [1023]),
        ("<= 1023", [0, 1023], [1024]),
        ("< 1024", [0, 1023], [1024]),
        ("eq 22", [22], [21, 23]),
        ("!= 25", [0, 24, 26, 65535], [25]),
        ("  443  ", [443], [444]),
    ],
)
def test_port_forms(form: str, matching: list[int], not_matching: list[int]) -> None:
    port_range = PortRange.parse(form)
    rules = rules_from(f'[[socks]]\naction = "block"\nport = ["{form}"]\n')
    for port in matching:
        assert port_range.matches(port), port
        assert blocked(rules, request(port=port)) == "socks[0]", port
    for port in not_matching:
        assert not port_range.matches(port), port
        assert blocked(rules, request(port=port)) is None, port


@pytest.mark.parametrize(
    "form", ["", "http", "65536", "80-22", "1-", "-5", "< 0", "> 65535", "=> 80", "80, 443"]
)
def test_bad_port_forms_are_refused(form: str) -> None:
    with pytest.raises(ValueError):
        PortRange.parse(form)


# --- names, before and after resolving ----------------------------------------------------------


def test_a_name_before_resolving_matches_only_domain_patterns_and_zero_zero() -> None:
    rules = rules_from(
        """
        [[socks]]
        action = "block"
        to = ["127.0.0.0/8", "::/128"]
        [[socks]]
        action = "block"
        to = [".example.com"]
        """
    )
    # the networks cannot judge a name before it is resolved
    assert blocked(rules, request("localhost")) is None
    assert blocked(rules, request("www.example.com")) == "socks[1]"


def test_after_resolving_patterns_match_the_name_and_networks_the_address() -> None:
    rules = rules_from(
        """
        [rules]
        socks_default = "block"
        [[socks]]
        action = "block"
        to = ["10.0.0.0/8"]
        [[socks]]
        action = "pass"
        to = [".example.com"]
        """
    )
    # before resolving, only the pattern can speak: passed
    assert rules.check_request(request("a.example.com")) == Decision(True, "socks[1]")
    # resolved into 10/8: the earlier block rule wins (DNS rebinding)
    assert rules.check_request(request("a.example.com", resolved="10.1.2.3")) == Decision(
        False, "socks[0]"
    )
    # resolved elsewhere: the pattern still matches the name
    assert rules.check_request(request("a.example.com", resolved="203.0.113.7")) == Decision(
        True, "socks[1]"
    )
    # another name resolving to the same address matches no pattern: the default
    assert rules.check_request(request("other.test", resolved="203.0.113.7")) == Decision(
        False, None
    )


# --- block_private_destinations ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "ff02::1",
        "64:ff9b::a01:203",
        "::ffff:127.0.0.1",  # IPv4-mapped: the IPv4 loopback spelled in IPv6
        "::ffff:169.254.169.254",
    ],
)
def test_private_preset_blocks_private_loopback_and_ipv4_mapped_addresses(address: str) -> None:
    rules = RuleSet(socks_rules=[private_destinations_rule()])
    assert rules.check_request(request(address)) == Decision(False, "block_private_destinations")
    # and a name resolving there
    assert rules.check_request(request("rebind.test", resolved=address)) == Decision(
        False, "block_private_destinations"
    )


@pytest.mark.parametrize("address", ["203.0.113.7", "2001:db8::7"])
def test_private_preset_passes_public_addresses_and_names_before_resolving(address: str) -> None:
    rules = RuleSet(socks_rules=[private_destinations_rule()])
    assert rules.check_request(request(address)) == Decision(True, None)
    assert rules.check_request(request("localhost")) == Decision(True, None)


def test_private_preset_also_blocks_the_given_own_addresses() -> None:
    own = [ipaddress.ip_address("198.51.100.5"), ipaddress.ip_address("2001:db8::5")]
    rules = RuleSet(socks_rules=[private_destinations_rule(own)])
    assert blocked(rules, request("198.51.100.5")) == "block_private_destinations"
    assert blocked(rules, request("2001:db8::5")) == "block_private_destinations"
    assert blocked(rules, request("198.51.100.6")) is None


def test_ipv4_rules_also_match_ipv4_mapped_destinations() -> None:
    rules = RuleSet(
        socks_rules=[Rule("socks[0]", "block", destinations=(parse_network("127.0.0.0/8"),))]
    )
    assert blocked(rules, request("::ffff:127.0.0.1")) == "socks[0]"


# --- configuration ------------------------------------------------------------------------------


def test_the_style_guide_example_is_parsed_into_rules() -> None:
    config = build_config(
        tomllib.loads(
            textwrap.dedent(
                """
                [groups]
                staff = ["alice"]
                [[client]]
                action = "pass"
                from = ["10.0.0.0/8", "127.0.0.0/8"]
                listener = ["127.0.0.1:1080"]
                [[socks]]
                action = "block"
                to = ["169.254.0.0/16", ".internal.example"]
                [[socks]]
                action = "pass"
                from = ["10.0.0.0/8"]
                to = ["0/0"]
                port = ["80", "443", ">= 1024"]
                command = ["connect", "udpassociate"]
                user = ["alice"]
                group = ["staff"]
                """
            )
        )
    )
    rules = config.rules
    assert rules.client == (
        Rule(
            "client[0]",
            "pass",
            clients=(parse_network("10.0.0.0/8"), parse_network("127.0.0.0/8")),
            listeners=("127.0.0.1:1080",),
        ),
    )
    assert rules.socks[0] == Rule(
        "socks[0]",
        "block",
        destinations=(parse_network("169.254.0.0/16"), DomainPattern.parse(".internal.example")),
    )
    assert rules.socks[1] == Rule(
        "socks[1]",
        "pass",
        clients=(parse_network("10.0.0.0/8"),),
        users=frozenset({"alice"}),
        groups=frozenset({"staff"}),
        commands=frozenset({Command.CONNECT, Command.UDP_ASSOCIATE}),
        destinations=(parse_network("0/0"),),
        ports=(PortRange(80, 80), PortRange(443, 443), PortRange(1024, 65535)),
    )
    assert (rules.client_default, rules.socks_default) == ("pass", "pass")
    assert rules.block_private_destinations is False
    assert rules.groups == (("staff", ("alice",)),)


def test_a_single_string_is_a_one_entry_list() -> None:
    rules = rules_from('[[socks]]\naction = "block"\nto = "10.0.0.0/8"\nport = "22"\n')
    assert blocked(rules, request("10.0.0.1", 22)) == "socks[0]"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[[socks]]\naction = "block"\nto = ["10.0.0.0/33"]',
            'socks[0].to[0]: "10.0.0.0/33": ',
        ),
        (
            '[[socks]]\naction = "block"\nto = ["example.com", "10.0.0.1/8/8"]',
            'socks[0].to[1]: "10.0.0.1/8/8": ',
        ),
        (
            '[[socks]]\naction = "pass"\n[[socks]]\naction = "block"\nport = ["http"]',
            'socks[1].port[0]: "http": ',
        ),
        (
            '[[socks]]\naction = "block"\nport = ["80", "70000"]',
            'socks[0].port[1]: "70000": ',
        ),
        ('[[client]]\nfrom = ["10.0.0.0/8"]', "client[0].action: must be one of pass, block"),
        ('[[client]]\naction = "allow"', "client[0].action: must be one of pass, block"),
        ('[[client]]\naction = "block"\nfrom = ["bad"]', 'client[0].from[0]: "bad": '),
        ('[[client]]\naction = "block"\nto = ["0/0"]', "client[0].to: unknown field"),
        (
            '[[socks]]\naction = "block"\ndestination = ["0/0"]',
            "socks[0].destination: unknown field",
        ),
        (
            '[[socks]]\naction = "block"\ncommand = ["associate"]',
            'socks[0].command[0]: "associate": not one of',
        ),
        ('[[socks]]\naction = "block"\nto = []', "socks[0].to: must not be empty"),
        ('[[socks]]\naction = "block"\nuser = [1]', "socks[0].user: must be a list of strings"),
        ('[[socks]]\naction = "pass"\ngroup = ["staff"]', 'socks[0].group: no group "staff"'),
        (
            '[groups]\nstaff = ["alice"]\n[[socks]]\naction = "pass"\ngroup = ["staf"]',
            'socks[0].group: no group "staf"',
        ),
        ('[rules]\nsocks_default = "deny"', "rules.socks_default: must be one of pass, block"),
        ('[rules]\nclient_default = "allow"', "rules.client_default: must be one of pass, block"),
        ('[rules]\nblock_private_destinations = "yes"', "rules.block_private_destinations: "),
        ('[rules]\ndefault = "block"', "rules.default: unknown setting"),
        ('socks = {action = "block"}', "socks: must be an array of tables"),
        ('groups = ["alice"]', "groups: must be a table"),
    ],
)
def test_config_errors_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(tomllib.loads(toml))
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize("entry", ["", "exa mple.com"])
def test_to_refuses_entries_that_are_neither_network_nor_domain(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"^socks\[0\]\.to\[0\]: "):
        build_config({"socks": [{"action": "block", "to": [entry]}]})


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_check_config_accepts_a_file_with_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "socks5d.toml",
        """
        listen = ["127.0.0.1:1080"]
        [rules]
        socks_default = "block"
        block_private_destinations = true
        [groups]
        staff = ["alice"]
        [[client]]
        action = "pass"
        from = ["127.0.0.0/8"]
        [[socks]]
        action = "pass"
        to = ["0/0", ".example.com", "*.example.org"]
        port = ["80", "1 - 1023", ">= 1024", "!= 25"]
        command = ["connect", "udp"]
        group = ["staff"]
        """,
    )
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: OK (listen 127.0.0.1:1080)"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('to = ["10.0.0.0/33"]', 'socks[0].to[0]: "10.0.0.0/33": '),
        ('port = ["> 65535"]', 'socks[0].port[0]: "> 65535": '),
        ('group = ["nobody"]', 'socks[0].group: no group "nobody"'),
    ],
)
def test_check_config_of_bad_rules_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str, message: str
) -> None:
    path = write(tmp_path / "socks5d.toml", f'[[socks]]\naction = "pass"\n{rule}\n')
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"socks5d: {message}"), captured.err


# --- unspecified and IPv4-mapped spellings ------------------------------------------------------


@pytest.mark.parametrize("unspecified", ["0.0.0.0", "::", "::ffff:0.0.0.0"])
def test_unspecified_destinations_are_this_host_for_a_rule_that_blocks_loopback(
    unspecified: str,
) -> None:
    # Linux connects 0.0.0.0 and :: to this host: a block of loopback must block them.
    rules = rules_from('[[socks]]\naction = "block"\nto = ["127.0.0.0/8", "::1"]\n')
    address = str(unmap(ipaddress.ip_address(unspecified)))
    assert blocked(rules, request(address)) == "socks[0]"
    assert blocked(rules, request("localhost", resolved=address)) == "socks[0]"
    assert blocked(rules, request("192.0.2.1")) is None


def test_bind_for_any_peer_is_not_taken_for_a_destination_on_this_host() -> None:
    # BIND's all-zeros DST.ADDR means "any peer" (RFC 1928 §6), not a connection to here.
    rules = rules_from('[[socks]]\naction = "block"\nto = ["127.0.0.0/8", "::1"]\n')
    assert blocked(rules, request("0.0.0.0", 0, command=Command.BIND)) is None


@pytest.mark.parametrize(
    ("written", "network"),
    [
        ("::ffff:127.0.0.0/104", "127.0.0.0/8"),
        ("::ffff:10.1.2.3", "10.1.2.3/32"),
        ("::ffff:192.168.0.0/112", "192.168.0.0/16"),
    ],
)
def test_ipv4_mapped_networks_are_loaded_as_their_ipv4_network(written: str, network: str) -> None:
    assert parse_network(written) == ipaddress.ip_network(network)
    rules = rules_from(f'[[socks]]\naction = "block"\nto = ["{written}"]\nfrom = ["{written}"]\n')
    inside = str(ipaddress.ip_network(network).network_address)
    assert blocked(rules, request(inside, client=inside)) == "socks[0]"


def test_the_whole_ipv4_mapped_range_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r'^socks\[0\]\.to\[0\]: "::ffff:0:0/96": .*IPv4'):
        rules_from('[[socks]]\naction = "block"\nto = ["::ffff:0:0/96"]\n')


def test_domain_patterns_are_canonical_names_and_internationalised_ones_match() -> None:
    rules = rules_from('[[socks]]\naction = "block"\nto = [".B\u00fccher.Example."]\n')
    assert blocked(rules, request("xn--bcher-kva.example")) == "socks[0]"
    assert blocked(rules, request("www.xn--bcher-kva.example")) == "socks[0]"
    with pytest.raises(ConfigError, match=r"to\[0\]"):
        rules_from('[[socks]]\naction = "block"\nto = ["exa\\u0000mple.com"]\n')


def test_an_unspecified_destination_is_matched_as_the_loopback_address_it_reaches() -> None:
    # 0.0.0.0 reaches 127.0.0.1 and :: reaches ::1: an allow-list of 127.0.0.1 passes the one,
    # not the other.
    rules = rules_from(
        '[rules]\nsocks_default = "block"\n[[socks]]\naction = "pass"\nto = ["127.0.0.1/32"]\n'
    )
    assert blocked(rules, request("0.0.0.0")) is None
    assert blocked(rules, request("::")) == "default"
