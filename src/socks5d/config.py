"""Server configuration: a TOML file and command-line overrides -> one frozen `ServerConfig`.

Every option is declared once in `OPTIONS` (TOML key, type check, default); the `serve` flags
override the file. Errors are `ConfigError`s that name the offending key, e.g.
`timeouts.idle: must be a positive number, got -1`.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from socks5d.errors import ConfigError
from socks5d.proto.constants import AuthMethod

DEFAULT_PORT = 1080
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

#: `--auth` / `auth` spellings and the RFC 1928 method each means.
AUTH_METHODS: dict[str, AuthMethod] = {
    "none": AuthMethod.NO_AUTHENTICATION_REQUIRED,
    "userpass": AuthMethod.USERNAME_PASSWORD,
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


_TOP_KEYS = {"listen", "auth", "users", "allow_open_proxy", "log_format", "log_level", "timeouts"}
_TIMEOUT_KEYS = {"handshake", "connect", "idle"}


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
) -> ServerConfig:
    """Validate file contents `data`, apply command-line overrides, and check the whole.

    Args:
        data: the parsed TOML document (may be empty).
        base_dir: relative paths in the file are relative to this folder (the file's own).
        listen, auth, users, log_format, allow_open_proxy: command-line values; None means
            "not given", so the file's value (or the default) applies.

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
        if not isinstance(data["allow_open_proxy"], bool):
            raise ConfigError("allow_open_proxy: must be true or false")
        config = replace(config, allow_open_proxy=data["allow_open_proxy"])

    timeouts = data.get("timeouts", {})
    if not isinstance(timeouts, dict):
        raise ConfigError("timeouts: must be a table")
    for key in timeouts:
        if key not in _TIMEOUT_KEYS:
            raise ConfigError(f"timeouts.{key}: unknown setting")
    config = replace(
        config,
        timeouts=Timeouts(
            **{key: _positive(value, f"timeouts.{key}") for key, value in timeouts.items()}
        ),
    )
    _check_whole(config)
    return config


def _check_whole(config: ServerConfig) -> None:
    if AuthMethod.USERNAME_PASSWORD in config.auth and config.users_file is None:
        raise ConfigError("users: required when auth includes userpass")
    open_to_world = [str(a) for a in config.listen if not a.is_loopback]
    if (
        AuthMethod.NO_AUTHENTICATION_REQUIRED in config.auth
        and open_to_world
        and not config.allow_open_proxy
    ):
        raise ConfigError(
            f"listen: {', '.join(open_to_world)} is not a loopback address and auth allows "
            '"none": that is an open proxy. Require userpass, or set allow_open_proxy = true '
            "(--allow-open-proxy) if that is really intended"
        )


def load_config(path: Path | None, **overrides: Any) -> ServerConfig:
    """Read `path` (if any) and build the configuration with command-line `overrides`."""
    data = read_config_file(path) if path is not None else {}
    return build_config(data, base_dir=path.parent if path else None, **overrides)
