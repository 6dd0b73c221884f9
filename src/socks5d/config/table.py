"""The README's table of every setting, derived from `options.OPTIONS`: key, default as one
writes it in the file, `serve` flag, meaning.
"""

from __future__ import annotations

from typing import Any

from socks5d.config.options import OPTIONS
from socks5d.config.rules_table import TABLES
from socks5d.config.schema import AUTH_METHODS
from socks5d.constants import AuthMethod, ProtectionLevel
from socks5d.gss import LEVEL_NAMES

#: The file's spelling of enum values (by type: IntEnums of equal value are equal).
_NAMES: dict[type, dict[Any, str]] = {
    AuthMethod: {method: name for name, method in AUTH_METHODS.items()},
    ProtectionLevel: {level: name for name, level in LEVEL_NAMES.items()},
}


def _toml(value: Any) -> str:
    """A default as one writes it in the file."""
    if type(value) in _NAMES:
        return f'"{_NAMES[type(value)][value]}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}"
    if isinstance(value, tuple | frozenset):
        items = sorted(value) if isinstance(value, frozenset) else value
        return "[" + ", ".join(_toml(item) for item in items) + "]"
    return f'"{value}"'


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The README's table of every setting: key, default, `serve` flag, meaning."""
    lines = ["| setting | default | flag | meaning |", "| --- | --- | --- | --- |"]
    for option in OPTIONS:
        if not option.listed:
            continue
        if option.default_text is not None:
            default = option.default_text
        elif option.default is None:
            default = "unset"
        else:
            default = f"`{_toml(option.default)}`"
        flag = f"`{option.flag}`" if option.flag else ""
        lines.append(f"| `{option.key}` | {default} | {flag} | {_cell(option.help)} |")
    for key, meaning in TABLES.items():
        lines.append(f"| `{key}` | empty | | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"
