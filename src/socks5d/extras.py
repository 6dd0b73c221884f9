"""The optional extras (pyproject's `[project.optional-dependencies]`) and how to install one.

socks5d is installed from a checkout, not from a package index, so a hint names the checkout
form, `pip install '.[fast]'`, which works where `pip install 'socks5d[fast]'` would not.
"""

from __future__ import annotations

#: What each extra adds.
EXTRAS: dict[str, str] = {
    "fast": "uvloop, the faster event loop",
    "gssapi": "python-gssapi, for GSS-API (Kerberos) authentication",
    "metrics": "prometheus-client, for the /metrics endpoint",
}


def install_hint(extra: str) -> str:
    """How to install `extra`: "pip install '.[fast]' in a socks5d checkout"."""
    return f"pip install '.[{extra}]' in a socks5d checkout"
