"""Server configuration: a TOML file and command-line overrides -> one frozen `ServerConfig`.

Every option is declared once in `OPTIONS` (TOML key, type check, default); the `serve` flags
override the file. Errors are `ConfigError`s that name the offending key, e.g.
`timeouts.idle: must be a positive number, got -1`.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from socks5d.errors import ConfigError
from socks5d.gss import DEFAULT_SERVICE, INSTALL_HINT, LEVEL_NAMES
from socks5d.proto.constants import AuthMethod, Command, ProtectionLevel
from socks5d.rules import (
    ACTIONS,
    DomainPattern,
    PortRange,
    Rule,
    parse_network,
)
from socks5d.rules import (
    COMMANDS as RULE_COMMANDS,
)
from socks5d.rules import (
    Destination as Destination,
)

DEFAULT_PORT = 1080
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

#: `--auth` / `auth` spellings and the RFC 1928 method each means.
AUTH_METHODS: dict[str, AuthMethod] = {
    "none": AuthMethod.NO_AUTHENTICATION_REQUIRED,
    "userpass": AuthMethod.USERNAME_PASSWORD,
    "gssapi": AuthMethod.GSSAPI,
}


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One address the server listens on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can reach the address."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines in seconds."""

    #: from accept to the SOCKS request being read (RFC 1928 leaves it to the server)
    handshake: float = 10.0
    #: resolving and connecting to the destination
    connect: float = 10.0
    #: a tunnel with no traffic either way for this long is closed
    idle: float = 3600.0


#: `event_loop` and `relay` spellings.
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
RELAY_ENGINES = ("auto", "splice", "portable")


@dataclass(frozen=True, slots=True)
class Performance:
    """How the server uses the machine; none of it changes what clients see."""

    #: processes accepting on the same addresses (SO_REUSEPORT); 0 means one per CPU
    workers: int = 1
    #: "uvloop" when installed for "auto"
    event_loop: str = "auto"
    #: "splice" (zero-copy, Linux) for "auto", else "portable"
    relay: str = "auto"
    #: seconds a verified username/password is accepted without the slow hash; 0: never
    password_cache_ttl: float = 600.0
    #: threads that run the slow password hashes; 0 ("auto"): 2, or 1 on a single CPU
    hash_threads: int = 0
    #: password checks that may wait for a hashing thread; a login finding them all taken is
    #: refused at once
    hash_queue: int = 64


@dataclass(frozen=True, slots=True)
class BindSettings:
    """The BIND command (RFC 1928 §6)."""

    #: the address BIND listeners use; None: the local address this host would use to reach
    #: the expected peer (DST.ADDR), or that of the client's connection when DST.ADDR is zero
    address: str | None = None
    #: (first, last) port to listen on, inclusive; None: any free port
    ports: tuple[int, int] | None = None
    #: seconds to wait for the incoming connection
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class UdpSettings:
    """The UDP ASSOCIATE command (RFC 1928 §6, §7)."""

    #: the address relay sockets are bound to; None: the wildcard (IPv6 and IPv4)
    address: str | None = None
    #: the address sent in BND.ADDR; None: the local address of the client's TCP connection
    #: when `address` is a wildcard, else `address`
    advertise_address: str | None = None
    #: seconds without a datagram either way after which an association ends
    idle_timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits and the throttling of password guessing.

    "Per client" is per client network: the first `client_prefix_v4` or `client_prefix_v6`
    bits of its address (an IPv4-mapped IPv6 address counts as its IPv4 address).
    """

    #: sessions (handshakes and tunnels) at once, in all
    max_sessions: int = 10000
    #: sessions at once from one client
    max_sessions_per_client: int = 1000
    #: handshakes in progress at once, in all, and from one client
    max_handshakes: int = 2048
    max_handshakes_per_client: int = 128
    #: UDP associations and BIND listeners at once per client
    max_udp_associations_per_client: int = 64
    max_bind_listeners_per_client: int = 64
    #: logins failed or being checked, from one client within `auth_failure_window` seconds,
    #: beyond which its logins are refused unchecked; as many failures block it
    auth_failures_before_block: int = 10
    auth_failure_window: float = 600.0
    #: how long such a client is refused (closed before the greeting)
    auth_block_time: float = 300.0
    #: the network prefix one client is counted as: the whole IPv4 address, an IPv6 /64
    client_prefix_v4: int = 32
    client_prefix_v6: int = 64


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """The access rules as configured (the server adds its own addresses to the preset)."""

    client: tuple[Rule, ...] = ()
    socks: tuple[Rule, ...] = ()
    client_default: str = "pass"
    socks_default: str = "pass"
    block_private_destinations: bool = False
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class GssapiSettings:
    """GSS-API (RFC 1961): the server's key, and the protection levels it grants."""

    #: keytab holding the service's key; None: `KRB5_KTNAME`, else the system's keytab
    keytab: Path | None = None
    #: the service part of the principal clients ask for (`rcmd/<host>` is Dante's default)
    service: str = DEFAULT_SERVICE
    #: levels granted when asked for; a level asked for and not here aborts the negotiation
    levels: frozenset[ProtectionLevel] = frozenset(
        {ProtectionLevel.INTEGRITY, ProtectionLevel.CONFIDENTIALITY}
    )
    #: accept the level octet unwrapped (NEC's reference implementation, curl
    #: --socks5-gssapi-nec), and answer in kind
    accept_unwrapped_level: bool = False
    #: answer every level request with "clear": for clients that ask for protection but speak
    #: clear whatever they are granted (curl); needs "clear" in `levels`
    answer_clear: bool = False


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `socks5d serve` needs, validated."""

    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", DEFAULT_PORT),)
    #: methods in the server's order of preference
    auth: tuple[AuthMethod, ...] = (AuthMethod.NO_AUTHENTICATION_REQUIRED,)
    users_file: Path | None = None
    #: the operator's explicit consent to no-auth on a non-loopback address
    allow_open_proxy: bool = False
    log_format: str = "text"
    log_level: str = "info"
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: serve SOCKS4/4a on the same listeners (only while no-auth is allowed)
    socks4: bool = True
    bind: BindSettings = field(default_factory=BindSettings)
    udp: UdpSettings = field(default_factory=UdpSettings)
    limits: Limits = field(default_factory=Limits)
    rules: RulesConfig = field(default_factory=RulesConfig)
    performance: Performance = field(default_factory=Performance)
    gssapi: GssapiSettings = field(default_factory=GssapiSettings)

    @property
    def serves_socks4(self) -> bool:
        """SOCKS4 carries no password: served only when enabled and no-auth is accepted."""
        return self.socks4 and AuthMethod.NO_AUTHENTICATION_REQUIRED in self.auth


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


def _string_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: must be a list of strings")
    if not value:
        raise ConfigError(f"{key}: must not be empty")
    return value


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _positive(value: Any, key: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{key}: must be a positive number, got {value!r}")
    return float(value)


def _auth_methods(names: list[str], key: str) -> tuple[AuthMethod, ...]:
    methods = []
    for index, name in enumerate(names):
        if name not in AUTH_METHODS:
            choices = ", ".join(AUTH_METHODS)
            raise ConfigError(f'{key}[{index}]: unknown method "{name}" (one of {choices})')
        if AUTH_METHODS[name] not in methods:
            methods.append(AUTH_METHODS[name])
    return tuple(methods)


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false")
    return value


def _ip_address(value: Any, key: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an IP address") from None


def _port_range(value: Any, key: str) -> tuple[int, int]:
    first, _, last = str(value).partition("-")
    first, last = first.strip(), (last or first).strip()
    if not all(p.isascii() and p.isdigit() for p in (first, last)):
        raise ConfigError(f'{key}: "{value}" is not a port range like "40000-40999"')
    low, high = int(first), int(last)
    if not 1 <= low <= high <= 0xFFFF:
        raise ConfigError(f'{key}: "{value}" must be 1 <= first <= last <= 65535')
    return low, high


def _not_negative(value: Any, key: str) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return _positive(value, key)


def _workers(value: Any, key: str) -> int:
    """A number of worker processes, or "auto" (0: one per CPU)."""
    if value == "auto":
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ConfigError(f'{key}: must be "auto" or a number of processes, got {value!r}')
    return value


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: must be a positive integer, got {value!r}")
    return value


def _integer_in(low: int, high: int) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{key}: must be an integer from {low} to {high}, got {value!r}")
        return value

    return check


def _hash_threads(value: Any, key: str) -> int:
    """A number of hashing threads, or "auto" (0: 2, or 1 on a single CPU)."""
    if value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ConfigError(f'{key}: must be "auto" or a number of threads, got {value!r}')
    return value


def _no_longer_used(reason: str) -> Callable[[Any, str], Any]:
    """A removed setting: an error that says so, so that no file silently means something
    else than it says."""

    def refuse(value: Any, key: str) -> Any:
        raise ConfigError(f"{key}: no longer used: {reason}; remove it")

    return refuse


#: Why the delay before answering a failed login is gone.
_NO_DELAY = (
    "failed logins are answered at once (a delay on failures only told a guesser the answer"
    " early, and did not slow one that stopped waiting); auth_failures_before_block limits"
    " the logins one client may have failed or being checked"
)


Validator = Callable[[Any, str], Any]

#: [section] -> setting -> validator; each becomes a field of the section's dataclass.
_SECTIONS: dict[str, tuple[type, dict[str, Validator]]] = {
    "timeouts": (Timeouts, {"handshake": _positive, "connect": _positive, "idle": _positive}),
    "bind": (BindSettings, {"address": _ip_address, "ports": _port_range, "timeout": _positive}),
    "udp": (
        UdpSettings,
        {"address": _ip_address, "advertise_address": _ip_address, "idle_timeout": _positive},
    ),
    "limits": (
        Limits,
        {
            "max_sessions": _count,
            "max_sessions_per_client": _count,
            "max_handshakes": _count,
            "max_handshakes_per_client": _count,
            "max_udp_associations_per_client": _count,
            "max_bind_listeners_per_client": _count,
            "auth_failures_before_block": _count,
            "auth_failure_window": _positive,
            "auth_block_time": _positive,
            "client_prefix_v4": _integer_in(1, 32),
            "client_prefix_v6": _integer_in(1, 128),
            "auth_failure_delay": _no_longer_used(_NO_DELAY),
            "auth_max_delay": _no_longer_used(_NO_DELAY),
        },
    ),
    "performance": (
        Performance,
        {
            "workers": _workers,
            "event_loop": lambda value, key: _choice(value, key, EVENT_LOOPS),
            "relay": lambda value, key: _choice(value, key, RELAY_ENGINES),
            "password_cache_ttl": _not_negative,
            "hash_threads": _hash_threads,
            "hash_queue": _integer_in(0, 10_000),
        },
    ),
}
#: `serve` flags that set a `[gssapi]` setting.
GSSAPI_FLAGS = {
    "keytab": "--gssapi-keytab",
    "service": "--gssapi-service",
    "levels": "--gssapi-levels",
}
#: `serve` flags that set a `[performance]` setting.
PERFORMANCE_FLAGS = {"workers": "--workers", "event_loop": "--loop", "relay": "--relay"}
_TOP_KEYS = {
    "listen",
    "auth",
    "users",
    "allow_open_proxy",
    "log_format",
    "log_level",
    "socks4",
    "rules",
    "groups",
    "client",
    "socks",
    "gssapi",
    *_SECTIONS,
}


def _section(data: Mapping[str, Any], name: str) -> Any:
    settings_type, validators = _SECTIONS[name]
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table")
    values = {}
    for key, value in table.items():
        if key not in validators:
            raise ConfigError(f"{name}.{key}: unknown setting")
        values[key] = validators[key](value, f"{name}.{key}")
    return settings_type(**values)


def _performance(data: Mapping[str, Any], flags: Mapping[str, Any]) -> Performance:
    settings: Performance = _section(data, "performance")
    validators = _SECTIONS["performance"][1]
    given = {
        key: validators[key](value, PERFORMANCE_FLAGS[key])
        for key, value in flags.items()
        if value is not None
    }
    return replace(settings, **given)


def _service_name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "@/ \t"):
        raise ConfigError(f'{key}: must be a service name such as "rcmd", got {value!r}')
    return value


def _levels(value: Any, key: str) -> frozenset[ProtectionLevel]:
    names = value.split(",") if isinstance(value, str) else _string_list(value, key)
    levels = set()
    for name in names:
        level = LEVEL_NAMES.get(name.strip().lower())
        if level is None:
            raise ConfigError(f"{key}: unknown level {name!r} (one of {', '.join(LEVEL_NAMES)})")
        levels.add(level)
    if not levels:
        raise ConfigError(f"{key}: at least one level is needed")
    return frozenset(levels)


def _path(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a path")
    return value


_GSSAPI_VALIDATORS: dict[str, Validator] = {
    "keytab": _path,
    "service": _service_name,
    "levels": _levels,
    "accept_unwrapped_level": _boolean,
    "answer_clear": _boolean,
}


def _gssapi(
    data: Mapping[str, Any], flags: Mapping[str, Any], base_dir: Path | None
) -> GssapiSettings:
    table = data.get("gssapi", {})
    if not isinstance(table, dict):
        raise ConfigError("gssapi: must be a table")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _GSSAPI_VALIDATORS:
            raise ConfigError(f"gssapi.{key}: unknown setting")
        values[key] = _GSSAPI_VALIDATORS[key](value, f"gssapi.{key}")
    if "keytab" in values:
        keytab = Path(values["keytab"])
        if base_dir is not None and not keytab.is_absolute():
            keytab = base_dir / keytab
        values["keytab"] = keytab
    for key, value in flags.items():
        if value is not None:
            checked = _GSSAPI_VALIDATORS[key](value, GSSAPI_FLAGS[key])
            values[key] = Path(checked) if key == "keytab" else checked
    return GssapiSettings(**values)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML file; syntax errors become `ConfigError`s."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def build_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    listen: list[str] | None = None,
    auth: list[str] | None = None,
    users: str | None = None,
    log_format: str | None = None,
    allow_open_proxy: bool | None = None,
    socks4: bool | None = None,
    performance: Mapping[str, Any] | None = None,
    gssapi: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Validate file contents `data`, apply command-line overrides, and check the whole.

    Args:
        data: the parsed TOML document (may be empty).
        base_dir: relative paths in the file are relative to this folder (the file's own).
        listen, auth, users, log_format, allow_open_proxy, socks4: command-line values; None
            means "not given", so the file's value (or the default) applies.
        performance: `[performance]` settings from the command line (`PERFORMANCE_FLAGS`);
            None values are not given.
        gssapi: `[gssapi]` settings from the command line (`GSSAPI_FLAGS`), the same way.

    Raises:
        ConfigError: naming the key at fault.
    """
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{key}: unknown setting")
    config = ServerConfig()

    listen_texts = listen or (_string_list(data["listen"], "listen") if "listen" in data else None)
    if listen_texts:
        key = "--listen" if listen else "listen"
        config = replace(
            config,
            listen=tuple(parse_listen(t, f"{key}[{i}]") for i, t in enumerate(listen_texts)),
        )

    users_path: Path | None = None
    if users is not None:
        users_path = Path(users)
    elif "users" in data:
        if not isinstance(data["users"], str):
            raise ConfigError("users: must be a path")
        users_path = Path(data["users"])
        if base_dir is not None and not users_path.is_absolute():
            users_path = base_dir / users_path
    config = replace(config, users_file=users_path)

    if auth:
        methods = _auth_methods(auth, "--auth")
    elif "auth" in data:
        methods = _auth_methods(_string_list(data["auth"], "auth"), "auth")
    elif users_path is not None:
        methods = (AuthMethod.USERNAME_PASSWORD,)
    else:
        methods = (AuthMethod.NO_AUTHENTICATION_REQUIRED,)
    config = replace(config, auth=methods)

    if log_format is not None:
        config = replace(config, log_format=_choice(log_format, "--log-format", LOG_FORMATS))
    elif "log_format" in data:
        config = replace(config, log_format=_choice(data["log_format"], "log_format", LOG_FORMATS))
    if "log_level" in data:
        config = replace(config, log_level=_choice(data["log_level"], "log_level", LOG_LEVELS))

    if allow_open_proxy is not None:
        config = replace(config, allow_open_proxy=allow_open_proxy)
    elif "allow_open_proxy" in data:
        config = replace(
            config, allow_open_proxy=_boolean(data["allow_open_proxy"], "allow_open_proxy")
        )
    if socks4 is not None:
        config = replace(config, socks4=socks4)
    elif "socks4" in data:
        config = replace(config, socks4=_boolean(data["socks4"], "socks4"))

    config = replace(
        config,
        timeouts=_section(data, "timeouts"),
        bind=_section(data, "bind"),
        udp=_section(data, "udp"),
        limits=_section(data, "limits"),
        rules=_rules(data),
        performance=_performance(data, performance or {}),
        gssapi=_gssapi(data, gssapi or {}, base_dir),
    )
    _check_whole(config)
    return config


_RULE_FIELDS = {
    "client": {"action", "from", "listener"},
    "socks": {"action", "from", "listener", "user", "group", "command", "to", "port"},
}


def _parse_entries(value: Any, key: str, parse: Callable[[str], Any]) -> tuple[Any, ...]:
    entries = []
    for index, text in enumerate(_string_list(value, key)):
        try:
            entries.append(parse(text))
        except ValueError as exc:
            raise ConfigError(f'{key}[{index}]: "{text}": {exc}') from None
    return tuple(entries)


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
    if text not in RULE_COMMANDS:
        raise ValueError(f"not one of {', '.join(RULE_COMMANDS)}")
    return RULE_COMMANDS[text]


def _rule(table: Any, kind: str, index: int) -> Rule:
    key = f"{kind}[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: must be a table")
    for field_name in table:
        if field_name not in _RULE_FIELDS[kind]:
            raise ConfigError(f"{key}.{field_name}: unknown field")
    action = _choice(table.get("action"), f"{key}.action", ACTIONS)

    def entries(name: str, parse: Callable[[str], Any]) -> tuple[Any, ...] | None:
        return _parse_entries(table[name], f"{key}.{name}", parse) if name in table else None

    users = entries("user", str)
    groups = entries("group", str)
    commands = entries("command", _command)
    return Rule(
        name=key,
        action=action,
        clients=entries("from", parse_network),
        listeners=entries("listener", _listener),
        users=frozenset(users) if users is not None else None,
        groups=frozenset(groups) if groups is not None else None,
        commands=frozenset(commands) if commands is not None else None,
        destinations=entries("to", _destination),
        ports=entries("port", PortRange.parse),
    )


def _rules(data: Mapping[str, Any]) -> RulesConfig:
    settings = data.get("rules", {})
    if not isinstance(settings, dict):
        raise ConfigError("rules: must be a table")
    for key in settings:
        if key not in {"client_default", "socks_default", "block_private_destinations"}:
            raise ConfigError(f"rules.{key}: unknown setting")
    groups = data.get("groups", {})
    if not isinstance(groups, dict):
        raise ConfigError("groups: must be a table of name = [users]")
    lists = {}
    for kind in ("client", "socks"):
        tables = data.get(kind, [])
        if not isinstance(tables, list):
            raise ConfigError(f"{kind}: must be an array of tables, [[{kind}]]")
        lists[kind] = tuple(_rule(table, kind, index) for index, table in enumerate(tables))
    for rule in lists["socks"]:
        for group in rule.groups or ():
            if group not in groups:
                raise ConfigError(f'{rule.name}.group: no group "{group}" in [groups]')
    return RulesConfig(
        client=lists["client"],
        socks=lists["socks"],
        client_default=_choice(
            settings.get("client_default", "pass"), "rules.client_default", ACTIONS
        ),
        socks_default=_choice(
            settings.get("socks_default", "pass"), "rules.socks_default", ACTIONS
        ),
        block_private_destinations=_boolean(
            settings.get("block_private_destinations", False), "rules.block_private_destinations"
        ),
        groups=tuple(
            (name, tuple(_string_list(members, f"groups.{name}")))
            for name, members in groups.items()
        ),
    )


def _check_whole(config: ServerConfig) -> None:
    performance = config.performance
    if performance.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(
            "performance.event_loop: uvloop is not installed (pip install 'socks5d[fast]')"
        )
    if performance.relay == "splice" and not (
        sys.platform.startswith("linux") and hasattr(os, "splice")
    ):
        raise ConfigError("performance.relay: splice needs Linux")
    if AuthMethod.GSSAPI in config.auth and importlib.util.find_spec("gssapi") is None:
        raise ConfigError(f"auth: {INSTALL_HINT}")
    if config.gssapi.answer_clear and ProtectionLevel.CLEAR not in config.gssapi.levels:
        raise ConfigError('gssapi.answer_clear: needs "clear" in gssapi.levels')
    if AuthMethod.USERNAME_PASSWORD in config.auth and config.users_file is None:
        raise ConfigError("users: required when auth includes userpass")
    refusal = open_proxy_refusal(config, config.listen)
    if refusal is not None:
        raise ConfigError(f"listen: {refusal}")


def open_proxy_refusal(config: ServerConfig, listening: Iterable[ListenAddress]) -> str | None:
    """Why `config` serving on `listening` would be an open proxy (no-auth on an address that
    is not loopback, without `allow_open_proxy`), or None when it would not be.

    Judged on the file's listen addresses when a configuration is loaded, and on the sockets
    actually bound when a running server takes a new configuration (`Server.apply`).
    """
    open_to_world = [str(a) for a in listening if not a.is_loopback]
    if (
        AuthMethod.NO_AUTHENTICATION_REQUIRED not in config.auth
        or not open_to_world
        or config.allow_open_proxy
    ):
        return None
    return (
        f"{', '.join(open_to_world)} is not a loopback address and auth allows "
        '"none": that is an open proxy. Require userpass, or set allow_open_proxy = true '
        "(--allow-open-proxy) if that is really intended"
    )


def load_config(path: Path | None, **overrides: Any) -> ServerConfig:
    """Read `path` (if any) and build the configuration with command-line `overrides`."""
    data = read_config_file(path) if path is not None else {}
    return build_config(data, base_dir=path.parent if path else None, **overrides)
