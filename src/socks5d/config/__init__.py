"""Server configuration: a TOML file and command-line overrides -> one frozen `ServerConfig`.

- `schema.py`: the frozen dataclasses and their defaults (`ServerConfig`, `Timeouts`, ...);
- `options.py`: every setting declared once (`OPTIONS`: key, check, help, `serve` flag), from
  which the loader, the `serve` flags and the README's table of options are derived;
- `checks.py`: the checks a value goes through; `rules_table.py`: `[[client]]`/`[[socks]]`;
- `load.py`: reading the file, applying flags, checking the whole (`build_config`).

Errors are `ConfigError`s, one line per error, each naming the offending key, e.g.
`timeouts.idle: must be a positive number, got -1`.
"""

from __future__ import annotations

from socks5d.config.checks import parse_listen
from socks5d.config.flags import GSSAPI_FLAGS, PERFORMANCE_FLAGS, add_flags, flag_values
from socks5d.config.load import build_config, load_config, open_proxy_refusal, read_config_file
from socks5d.config.options import OPTIONS, Option
from socks5d.config.schema import (
    AUTH_METHODS,
    DEFAULT_PORT,
    EVENT_LOOPS,
    LOG_FORMATS,
    LOG_LEVELS,
    RELAY_ENGINES,
    AdminSettings,
    BindSettings,
    GssapiSettings,
    Limits,
    ListenAddress,
    Performance,
    ProxyProtocolSettings,
    RulesConfig,
    ServerConfig,
    Timeouts,
    UdpSettings,
)
from socks5d.config.table import markdown_table
from socks5d.rules import Destination

__all__ = [
    "AUTH_METHODS",
    "DEFAULT_PORT",
    "EVENT_LOOPS",
    "GSSAPI_FLAGS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "OPTIONS",
    "PERFORMANCE_FLAGS",
    "RELAY_ENGINES",
    "AdminSettings",
    "BindSettings",
    "Destination",
    "GssapiSettings",
    "Limits",
    "ListenAddress",
    "Option",
    "Performance",
    "ProxyProtocolSettings",
    "RulesConfig",
    "ServerConfig",
    "Timeouts",
    "UdpSettings",
    "add_flags",
    "build_config",
    "flag_values",
    "load_config",
    "markdown_table",
    "open_proxy_refusal",
    "parse_listen",
    "read_config_file",
]
