"""The rule tables of the file: `[groups]`, `[[client]]` and `[[socks]]` -> `rules.Rule`s.

What the rules mean and how they match is `socks5d.rules`; this module only reads the tables,
and names the entry at fault: `socks[2].to[0]: "10.0.0.0/33": ...`. Every rule is checked, and
every field of each, so that one run reports all that is wrong.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from socks5d.config.checks import ErrorList, choice, parse_entries, parse_listen, string_list
from socks5d.constants import Command
from socks5d.errors import ConfigError
from socks5d.rules import (
    ACTIONS,
    COMMANDS,
    Destination,
    DomainPattern,
    PortRange,
    Rule,
    parse_network,
)

#: The file's lists (top-level keys that are not settings), with their meaning.
TABLES: dict[str, str] = {
    "groups": "`NAME = [users]`: groups that `[[socks]]` rules name in `group` (see *Rules*)",
    "client": "`[[client]]` rules: who may talk to the server at all; fields `action`, `from`, "
    "`listener` (see *Rules*)",
    "socks": "`[[socks]]` rules: which requests may go through; fields `action`, `from`, "
    "`listener`, `user`, `group`, `command`, `to`, `port` (see *Rules*)",
    "route": "`[[route]]` tables: where requests go out, `direct` or through upstream proxies; "
    "the fields of `[[socks]]` but `action`, and `via`, `strategy`, `upstream_retry` (see "
    "*Routing through upstream proxies*)",
}

_RULE_FIELDS = {
    "client": ("action", "from", "listener"),
    "socks": ("action", "from", "listener", "user", "group", "command", "to", "port"),
    "route": ("from", "listener", "user", "group", "command", "to", "port"),
}


def _destination(text: str) -> Destination:
    try:
        return parse_network(text)
    except ValueError:
        if text.strip().lower().startswith("::ffff:"):
            raise  # parse_network says what is wrong with an IPv4-mapped network
        if any(c in text for c in "/:") or text.replace(".", "").isdigit():
            raise ValueError("not a network (like 10.0.0.0/8) or a domain") from None
        return DomainPattern.parse(text)


def _listener(text: str) -> str:
    """A `listener` entry: an IP, or IP:PORT as the log writes it ([::1]:1080)."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        address = parse_listen(text, "listener")
        ipaddress.ip_address(address.host)  # a name would never match: refuse it
        return str(address)


def _command(text: str) -> Command:
    if text not in COMMANDS:
        raise ValueError(f"not one of {', '.join(COMMANDS)}")
    return COMMANDS[text]


#: How each field's entries are parsed.
_PARSERS: dict[str, Callable[[str], Any]] = {
    "from": parse_network,
    "listener": _listener,
    "user": str,
    "group": str,
    "command": _command,
    "to": _destination,
    "port": PortRange.parse,
}


def parse_rule(table: Any, kind: str, index: int, extra: tuple[str, ...] = ()) -> Rule:
    """One rule; every field at fault is reported, in one `ConfigError` of one line each.
    `extra`: further keys the table may have (read by the caller); a `[[route]]` has no
    `action` (it is a pass).
    """
    key = f"{kind}[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: must be a table")
    errors = ErrorList()
    for field_name in table:
        if field_name not in _RULE_FIELDS[kind] and field_name not in extra:
            errors.messages.append(f"{key}.{field_name}: unknown field")
    action = "pass"
    if "action" in _RULE_FIELDS[kind]:
        with errors.collect():
            action = choice(table.get("action"), f"{key}.action", ACTIONS)
    fields: dict[str, tuple[Any, ...] | None] = {}
    for name, parse in _PARSERS.items():
        fields[name] = None
        if name in table and name in _RULE_FIELDS[kind]:
            with errors.collect():
                fields[name] = parse_entries(table[name], f"{key}.{name}", parse)
    errors.raise_if_any()

    def unordered(name: str) -> frozenset[Any] | None:
        entries = fields[name]
        return frozenset(entries) if entries is not None else None

    return Rule(
        name=key,
        action=action,
        clients=fields["from"],
        listeners=fields["listener"],
        users=unordered("user"),
        groups=unordered("group"),
        commands=unordered("command"),
        destinations=fields["to"],
        ports=fields["port"],
    )


def _groups(data: Mapping[str, Any], errors: ErrorList) -> dict[str, tuple[str, ...]] | None:
    """`[groups]`, or None when it is not a table (then no group reference is checked)."""
    table = data.get("groups", {})
    if not isinstance(table, dict):
        errors.messages.append("groups: must be a table of name = [users]")
        return None
    groups: dict[str, tuple[str, ...]] = {}
    for name, members in table.items():
        groups[name] = ()
        with errors.collect():
            groups[name] = tuple(string_list(members, f"groups.{name}"))
    return groups


def parse_rule_tables(
    data: Mapping[str, Any], errors: ErrorList
) -> tuple[tuple[Rule, ...], tuple[Rule, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The `[[client]]` rules, the `[[socks]]` rules and the groups of file contents `data`.

    Errors go to `errors`; a rule at fault is left out of what is returned.
    """
    groups = _groups(data, errors)
    lists: dict[str, list[Rule]] = {}
    for kind in ("client", "socks"):
        lists[kind] = []
        tables = data.get(kind, [])
        if not isinstance(tables, list):
            errors.messages.append(f"{kind}: must be an array of tables, [[{kind}]]")
            continue
        for index, table in enumerate(tables):
            with errors.collect():
                lists[kind].append(parse_rule(table, kind, index))
    for rule in lists["socks"]:
        for group in sorted(rule.groups or ()):
            if groups is not None and group not in groups:
                errors.messages.append(f'{rule.name}.group: no group "{group}" in [groups]')
    return tuple(lists["client"]), tuple(lists["socks"]), tuple((groups or {}).items())
