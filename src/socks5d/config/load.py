"""Loading: a TOML file and `serve` flags -> one checked, frozen `ServerConfig`.

Each setting is read as `options.OPTIONS` declares it; a flag given overrides the file's value
(a top-level one replaces it unread; one of a `[table]` overrides it once it is checked).
Every error is collected, so one `ConfigError` lists them all, one per line, each naming its
key (or flag): `timeouts.idel: unknown setting`. The checks of the whole (`_check_whole`:
settings that must agree, what the machine must have) run once every setting is valid on its
own. No other module reads the file.
"""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from socks5d.config.checks import ErrorList
from socks5d.config.options import BY_KEY, OPTIONS, SECTIONS, TOP_KEYS, Option
from socks5d.config.routes_table import parse_route_tables
from socks5d.config.rules_table import TABLES, parse_rule_tables
from socks5d.config.schema import ListenAddress, ServerConfig
from socks5d.constants import AuthMethod, ProtectionLevel
from socks5d.errors import ConfigError
from socks5d.extras import install_hint
from socks5d.gss import INSTALL_HINT


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML file; syntax errors become `ConfigError`s."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _legacy_flags(
    given: dict[str, Any], sections: Mapping[str, Mapping[str, Any] | None], **top: Any
) -> None:
    """Add the `build_config(listen=..., performance={...})` spellings of flags to `given`."""
    for key, value in top.items():
        if value is not None and value != []:
            given[key] = value
    for section, values in sections.items():
        for name, value in (values or {}).items():
            if value is not None:
                given[f"{section}.{name}"] = value


def _file_value(option: Option, value: Any, key: str, base_dir: Path | None) -> Any:
    checked = option.check(value, key)
    if option.is_path:
        checked = Path(checked)
        if base_dir is not None and not checked.is_absolute():
            checked = base_dir / checked
    return checked


def _read_file(
    data: Mapping[str, Any], base_dir: Path | None, given: Mapping[str, Any], errors: ErrorList
) -> dict[str, Any]:
    """The file's settings, checked, by option key.

    A top-level setting whose flag is `given` is not read from the file: the flag replaces it.
    The settings of a `[table]` are read and checked either way, then a flag overrides one.
    """
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in TOP_KEYS:
            errors.messages.append(f"{key}: unknown setting")
        elif key in BY_KEY and key not in given:
            with errors.collect():
                values[key] = _file_value(BY_KEY[key], value, key, base_dir)
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            errors.messages.append(f"{section}: must be a table")
            continue
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in BY_KEY:
                errors.messages.append(f"{key}: unknown setting")
                continue
            with errors.collect():
                values[key] = _file_value(BY_KEY[key], value, key, base_dir)
    return values


def build_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    listen: list[str] | None = None,
    auth: list[str] | None = None,
    users: str | None = None,
    log_format: str | None = None,
    allow_open_proxy: bool | None = None,
    socks4: bool | None = None,
    performance: Mapping[str, Any] | None = None,
    gssapi: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Check file contents `data`, apply command-line overrides, and check the whole.

    Args:
        data: the parsed TOML document (may be empty).
        base_dir: relative paths in the file are relative to this folder (the file's own).
        flags: command-line values by option key (`options.flag_values`); a flag not given is
            absent or None, so the file's value (or the default) applies.
        listen, auth, users, log_format, allow_open_proxy, socks4: the same, by name.
        performance, gssapi: `[performance]` and `[gssapi]` settings from the command line
            (`PERFORMANCE_FLAGS`, `GSSAPI_FLAGS`), the same way.

    Raises:
        ConfigError: one line per error, each naming the key (or flag) at fault.
    """
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    _legacy_flags(
        given,
        {"performance": performance, "gssapi": gssapi},
        listen=listen,
        auth=auth,
        users=users,
        log_format=log_format,
        allow_open_proxy=allow_open_proxy,
        socks4=socks4,
    )
    errors = ErrorList()
    values = _read_file(data, base_dir, given, errors)
    for key, value in given.items():
        option = BY_KEY[key]
        with errors.collect():
            checked = option.check(value, option.flag or key)
            values[key] = Path(checked) if option.is_path else checked
    tables = {name: data[name] for name in TABLES if name in data}
    client, socks, groups = parse_rule_tables(tables, errors)
    routes = parse_route_tables(tables, errors)
    errors.raise_if_any()

    if "auth" not in values and values.get("users") is not None:
        values["auth"] = (AuthMethod.USERNAME_PASSWORD,)
    config = ServerConfig()
    sections: dict[str, Any] = {}
    for section in SECTIONS:
        settings = {
            o.attribute: values[o.key] for o in OPTIONS if o.section == section and o.key in values
        }
        sections[section] = replace(getattr(config, section), **settings)
    sections["rules"] = replace(
        sections["rules"], client=client, socks=socks, groups=groups, routes=routes
    )
    top = {o.attribute: values[o.key] for o in OPTIONS if not o.section and o.key in values}
    config = replace(config, **top, **sections)
    _check_whole(config)
    return config


def _check_whole(config: ServerConfig) -> None:
    """What single settings cannot tell: settings that must agree, and what this machine has.

    Raises:
        ConfigError: one line per problem found.
    """
    problems: list[str] = []
    performance = config.performance
    if performance.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        problems.append(f"performance.event_loop: uvloop is not installed ({install_hint('fast')})")
    if performance.relay == "splice" and not (
        sys.platform.startswith("linux") and hasattr(os, "splice")
    ):
        problems.append("performance.relay: splice needs Linux")
    if AuthMethod.GSSAPI in config.auth and importlib.util.find_spec("gssapi") is None:
        problems.append(f"auth: {INSTALL_HINT}")
    if config.gssapi.answer_clear and ProtectionLevel.CLEAR not in config.gssapi.levels:
        problems.append('gssapi.answer_clear: needs "clear" in gssapi.levels')
    if AuthMethod.USERNAME_PASSWORD in config.auth and config.users_file is None:
        problems.append("users: required when auth includes userpass")
    refusal = open_proxy_refusal(config, config.listen)
    if refusal is not None:
        problems.append(f"listen: {refusal}")
    admin = config.admin
    if admin.listen is not None and not admin.listen.is_loopback and not admin.allow_remote_admin:
        problems.append(
            f"admin.listen: {admin.listen} is not a loopback address: anyone reaching it reads "
            "the metrics and every open session. Set admin.allow_remote_admin = true if that is "
            "really intended"
        )
    problems.extend(_account_problems(config))
    if problems:
        raise ConfigError("\n".join(problems))


def _account_problems(config: ServerConfig) -> list[str]:
    """`user` and `group` must name accounts of this system."""
    problems = []
    if config.group is not None and config.user is None:
        problems.append("group: needs user")
    for key, name, lookup in (
        ("user", config.user, pwd.getpwnam),
        ("group", config.group, grp.getgrnam),
    ):
        if name is None or name.isdigit():
            continue
        try:
            lookup(name)
        except KeyError:
            problems.append(f"{key}: no such {key} {name!r} on this system")
    return problems


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


def load_config(
    path: Path | None, flags: Mapping[str, Any] | None = None, **overrides: Any
) -> ServerConfig:
    """Read `path` (if any) and build the configuration with command-line `flags` (by option
    key, `options.flag_values`) or `overrides` (`build_config`'s keyword spellings)."""
    data = read_config_file(path) if path is not None else {}
    return build_config(data, base_dir=path.parent if path else None, flags=flags, **overrides)
