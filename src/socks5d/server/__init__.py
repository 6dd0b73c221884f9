"""The asyncio SOCKS server: listeners, sessions, authentication, outbound connects.

`Server` (server/listen.py) is the entry point; the relay engines are `socks5d.relay`'s.
"""

from __future__ import annotations

from socks5d.server.listen import Server

__all__ = ["Server"]
