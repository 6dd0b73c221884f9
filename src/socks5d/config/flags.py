"""The `serve` flags, derived from `options.OPTIONS`: each option with a `flag` becomes one
argparse argument (its spelling, metavar, choices and help as declared), and what argparse
parsed goes back to the loader by option key (`flag_values`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from socks5d.config.options import OPTIONS


def _flags_of(section: str) -> dict[str, str]:
    return {o.name: o.flag for o in OPTIONS if o.section == section and o.flag is not None}


#: `serve` flags that set a `[performance]` setting, by setting.
PERFORMANCE_FLAGS: dict[str, str] = _flags_of("performance")
#: `serve` flags that set a `[gssapi]` setting, by setting.
GSSAPI_FLAGS: dict[str, str] = _flags_of("gssapi")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flag of every option that has one to `parser` (the `serve` command); a flag
    not given is None, so the file's value (or the default) applies."""
    for option in OPTIONS:
        if option.flag is None:
            continue
        if option.switch is not None:
            parser.add_argument(
                option.flag,
                dest=option.key,
                action="store_true" if option.switch else "store_false",
                default=None,
                help=option.flag_help or option.help,
            )
            continue
        parser.add_argument(
            option.flag,
            dest=option.key,
            action="append" if option.repeat else "store",
            choices=list(option.choices) if option.choices is not None else None,
            metavar=option.metavar,
            help=option.flag_help or option.help,
        )


def flag_values(args: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The flags given, by option key, from what `add_flags`' arguments parsed into."""
    values = args if isinstance(args, Mapping) else vars(args)
    return {
        option.key: values[option.key]
        for option in OPTIONS
        if option.flag is not None and values.get(option.key) not in (None, [])
    }
