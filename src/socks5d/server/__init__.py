"""The asyncio SOCKS server: listeners, sessions, authentication, outbound connects, relay."""

from socks5d.server.listen import Server
from socks5d.server.relay import PortableEngine, RelayEngine, RelayResult, select_engine

__all__ = ["PortableEngine", "RelayEngine", "RelayResult", "Server", "select_engine"]
