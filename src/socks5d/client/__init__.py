"""SOCKS client library: CONNECT, BIND and UDP ASSOCIATE through SOCKS5/SOCKS4 proxies and
chains of them, asyncio first (`socks5d.client`) with a blocking twin (`socks5d.client.sync`)
that has the same names. Built on the same sans-I/O protocol package as the server.
"""

from socks5d.client.aio import Binding, UdpEndpoint, connect, open_bind, open_connection, open_udp
from socks5d.client.handshake import ClientAuth, Gssapi, NoAuthentication, UsernamePassword
from socks5d.constants import ProtectionLevel
from socks5d.proxies import GssapiOptions, Proxy

__all__ = [
    "Binding",
    "ClientAuth",
    "Gssapi",
    "GssapiOptions",
    "NoAuthentication",
    "ProtectionLevel",
    "Proxy",
    "UdpEndpoint",
    "UsernamePassword",
    "connect",
    "open_bind",
    "open_connection",
    "open_udp",
]
