"""The checks a setting's value goes through, and the list that gathers their errors.

A check is `check(value, key) -> value`: it returns the value as the configuration holds it,
or raises a `ConfigError` whose message starts with `key` (the TOML key path, or the flag's
spelling when the value came from the command line), e.g.
`timeouts.idle: must be a positive number, got -1`. No I/O, no knowledge of which option uses
which check: that is `options.py`.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from socks5d.config.schema import AUTH_METHODS, ListenAddress
from socks5d.constants import AuthMethod, ProtectionLevel
from socks5d.errors import ConfigError
from socks5d.gss import LEVEL_NAMES
from socks5d.rules import IPNetwork, parse_network

#: `check(value, key)`: the checked value, or a `ConfigError` naming `key`.
Check = Callable[[Any, str], Any]


class ErrorList:
    """The errors found in one configuration, in the order they were found: all of them are
    reported at once, one per line, so that one run of `check-config` shows every fix needed.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Run the block; a `ConfigError` it raises is recorded instead of propagated."""
        try:
            yield
        except ConfigError as exc:
            self.messages.extend(str(exc).splitlines())

    def raise_if_any(self) -> None:
        """Raises:
        ConfigError: every recorded message, one per line, when there is any.
        """
        if self.messages:
            raise ConfigError("\n".join(self.messages))


def parse_listen(text: str, key: str = "listen") -> ListenAddress:
    """Parse `HOST:PORT` or `[IPV6]:PORT`."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or (text.startswith("[") and not host.endswith("]")):
        raise ConfigError(f'{key}: "{text}" is not HOST:PORT')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f'{key}: "{text}": {host} is not an IPv6 address') from None
    elif ":" in host:
        raise ConfigError(f'{key}: "{text}": write IPv6 addresses in brackets, [::1]:1080')
    if not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(f'{key}: "{text}": port is not a number')
    port = int(port_text)
    if not 0 <= port <= 0xFFFF:
        raise ConfigError(f'{key}: "{text}": port out of range')
    return ListenAddress(host, port)


def string_list(value: Any, key: str) -> list[str]:
    """A string or a non-empty list of strings, as a list."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: must be a list of strings")
    if not value:
        raise ConfigError(f"{key}: must not be empty")
    return value


def listen_address(value: Any, key: str) -> ListenAddress:
    """One `HOST:PORT` (`admin.listen`)."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be HOST:PORT")
    return parse_listen(value, key)


def account_name(value: Any, key: str) -> str:
    """A user or group name (or number) of this system, checked to exist in `load.py`."""
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise ConfigError(f"{key}: must be a user or group name")
    return str(value)


def listen_addresses(value: Any, key: str) -> tuple[ListenAddress, ...]:
    """`listen`: one address or a list of them, each `HOST:PORT`."""
    return tuple(
        parse_listen(text, f"{key}[{i}]") for i, text in enumerate(string_list(value, key))
    )


def parse_entries(value: Any, key: str, parse: Callable[[str], Any]) -> tuple[Any, ...]:
    """A string or a non-empty list of strings, each through `parse`; a `ValueError` of
    `parse` names the entry (`key[1]: "text": why`)."""
    entries = []
    for index, text in enumerate(string_list(value, key)):
        try:
            entries.append(parse(text))
        except ValueError as exc:
            raise ConfigError(f'{key}[{index}]: "{text}": {exc}') from None
    return tuple(entries)


def networks(value: Any, key: str) -> tuple[IPNetwork, ...]:
    """A list of networks or addresses (`10.0.0.0/8`, `::1`), maybe empty; a string is a
    list of one."""
    if isinstance(value, list) and not value:
        return ()
    return parse_entries(value, key, parse_network)


def choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def one_of(choices: tuple[str, ...]) -> Check:
    """The check that `value` is one of `choices`."""

    def check(value: Any, key: str) -> str:
        return choice(value, key, choices)

    return check


def positive(value: Any, key: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{key}: must be a positive number, got {value!r}")
    return float(value)


def not_negative(value: Any, key: str) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return positive(value, key)


def auth_methods(value: Any, key: str) -> tuple[AuthMethod, ...]:
    """Method names in order of preference; a repeated name counts once."""
    methods: list[AuthMethod] = []
    for index, name in enumerate(string_list(value, key)):
        if name not in AUTH_METHODS:
            choices = ", ".join(AUTH_METHODS)
            raise ConfigError(f'{key}[{index}]: unknown method "{name}" (one of {choices})')
        if AUTH_METHODS[name] not in methods:
            methods.append(AUTH_METHODS[name])
    return tuple(methods)


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false")
    return value


def ip_address(value: Any, key: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an IP address") from None


def port_range(value: Any, key: str) -> tuple[int, int]:
    first, _, last = str(value).partition("-")
    first, last = first.strip(), (last or first).strip()
    if not all(p.isascii() and p.isdigit() for p in (first, last)):
        raise ConfigError(f'{key}: "{value}" is not a port range like "40000-40999"')
    low, high = int(first), int(last)
    if not 1 <= low <= high <= 0xFFFF:
        raise ConfigError(f'{key}: "{value}" must be 1 <= first <= last <= 65535')
    return low, high


def workers(value: Any, key: str) -> int:
    """A number of worker processes, or "auto" (0: one per CPU)."""
    if value == "auto":
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ConfigError(f'{key}: must be "auto" or a number of processes, got {value!r}')
    return value


def count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: must be a positive integer, got {value!r}")
    return value


def integer_in(low: int, high: int) -> Check:
    """The check that `value` is an integer from `low` to `high`."""

    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{key}: must be an integer from {low} to {high}, got {value!r}")
        return value

    return check


def hash_threads(value: Any, key: str) -> int:
    """A number of hashing threads, or "auto" (0: 2, or 1 on a single CPU)."""
    if value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ConfigError(f'{key}: must be "auto" or a number of threads, got {value!r}')
    return value


def no_longer_used(reason: str) -> Check:
    """A removed setting: an error that says so, so that no file silently means something
    else than it says."""

    def refuse(value: Any, key: str) -> Any:
        raise ConfigError(f"{key}: no longer used: {reason}; remove it")

    return refuse


def service_name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "@/ \t"):
        raise ConfigError(f'{key}: must be a service name such as "rcmd", got {value!r}')
    return value


def levels(value: Any, key: str) -> frozenset[ProtectionLevel]:
    """RFC 1961 protection levels: a list of names, or one comma-separated string."""
    names = value.split(",") if isinstance(value, str) else string_list(value, key)
    found = set()
    for name in names:
        level = LEVEL_NAMES.get(name.strip().lower())
        if level is None:
            raise ConfigError(f"{key}: unknown level {name!r} (one of {', '.join(LEVEL_NAMES)})")
        found.add(level)
    if not found:
        raise ConfigError(f"{key}: at least one level is needed")
    return frozenset(found)


def path(value: Any, key: str) -> str:
    """A non-empty file name."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a path")
    return value


def any_path(value: Any, key: str) -> str:
    """A file name, which the file's folder stands for when empty (`users`)."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a path")
    return value
