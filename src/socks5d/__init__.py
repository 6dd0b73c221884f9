"""socks5d: a SOCKS5 proxy server and client library (RFC 1928, RFC 1929, RFC 1961, SOCKS4/4a)."""

from socks5d import proto
from socks5d.errors import (
    AddressTypeNotSupported,
    AuthFailed,
    CommandNotSupported,
    ConfigError,
    ConnectionRefused,
    HostUnreachable,
    LocalProtocolError,
    NetworkUnreachable,
    NotAllowed,
    ProtocolError,
    ProxyTimeout,
    RequestRejected,
    Socks5Error,
    TTLExpired,
)

__version__ = "0.1.0"

__all__ = [
    "AddressTypeNotSupported",
    "AuthFailed",
    "CommandNotSupported",
    "ConfigError",
    "ConnectionRefused",
    "HostUnreachable",
    "LocalProtocolError",
    "NetworkUnreachable",
    "NotAllowed",
    "ProtocolError",
    "ProxyTimeout",
    "RequestRejected",
    "Socks5Error",
    "TTLExpired",
    "__version__",
    "proto",
]
