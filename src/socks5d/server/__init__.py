"""The asyncio SOCKS server: listeners, sessions, authentication, outbound connects, relay.

Names are imported on first use, so that `socks5d.config` can use the pure `rules` module
without pulling in the whole server.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Server": "socks5d.server.listen",
    "PortableEngine": "socks5d.relay.portable",
    "RelayEngine": "socks5d.relay",
    "RelayResult": "socks5d.relay",
    "select_engine": "socks5d.relay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
