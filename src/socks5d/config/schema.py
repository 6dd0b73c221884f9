"""The configuration's shape: one frozen dataclass per `[section]`, and `ServerConfig` holding
them all, with the defaults a missing setting takes.

No parsing and no checking here: `options.py` declares how each setting is read and checked,
`load.py` builds these from a file and the command line. The defaults live only here; the
declarations and the README's table of options read them from these classes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from socks5d.constants import AuthMethod, ProtectionLevel
from socks5d.gss import DEFAULT_SERVICE
from socks5d.relay import CHOICES as RELAY_CHOICES
from socks5d.routing import Route
from socks5d.rules import IPNetwork, Rule

DEFAULT_PORT = 1080
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

#: `--auth` / `auth` spellings and the RFC 1928 method each means.
AUTH_METHODS: dict[str, AuthMethod] = {
    "none": AuthMethod.NO_AUTHENTICATION_REQUIRED,
    "userpass": AuthMethod.USERNAME_PASSWORD,
    "gssapi": AuthMethod.GSSAPI,
}


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One address the server listens on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can reach the address."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines in seconds."""

    #: from accept to the SOCKS request being read (RFC 1928 leaves it to the server)
    handshake: float = 10.0
    #: resolving and connecting to the destination
    connect: float = 10.0
    #: a tunnel with no traffic either way for this long is closed
    idle: float = 3600.0
    #: after SIGTERM, how long open tunnels and UDP associations may go on before being closed
    drain: float = 30.0


#: `event_loop` and `relay` spellings.
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
RELAY_ENGINES = RELAY_CHOICES


@dataclass(frozen=True, slots=True)
class Performance:
    """How the server uses the machine; none of it changes what clients see."""

    #: processes accepting on the same addresses (SO_REUSEPORT); 0 means one per CPU
    workers: int = 1
    #: "uvloop" when installed for "auto"
    event_loop: str = "auto"
    #: "splice" (zero-copy, Linux) for "auto", else "portable"
    relay: str = "auto"
    #: seconds a verified username/password is accepted without the slow hash; 0: never
    password_cache_ttl: float = 600.0
    #: threads that run the slow password hashes; 0 ("auto"): 2, or 1 on a single CPU
    hash_threads: int = 0
    #: password checks that may wait for a hashing thread; a login finding them all taken is
    #: refused at once
    hash_queue: int = 64


@dataclass(frozen=True, slots=True)
class BindSettings:
    """The BIND command (RFC 1928 §6)."""

    #: the address BIND listeners use; None: the local address this host would use to reach
    #: the expected peer (DST.ADDR), or that of the client's connection when DST.ADDR is zero
    address: str | None = None
    #: (first, last) port to listen on, inclusive; None: any free port
    ports: tuple[int, int] | None = None
    #: seconds to wait for the incoming connection
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class UdpSettings:
    """The UDP ASSOCIATE command (RFC 1928 §6, §7)."""

    #: the address relay sockets are bound to; None: the wildcard (IPv6 and IPv4)
    address: str | None = None
    #: the address sent in BND.ADDR; None: the local address of the client's TCP connection
    #: when `address` is a wildcard, else `address`
    advertise_address: str | None = None
    #: seconds without a datagram either way after which an association ends
    idle_timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits and the throttling of password guessing.

    "Per client" is per client network: the first `client_prefix_v4` or `client_prefix_v6`
    bits of its address (an IPv4-mapped IPv6 address counts as its IPv4 address).
    """

    #: sessions (handshakes and tunnels) at once, in all
    max_sessions: int = 10000
    #: sessions at once from one client
    max_sessions_per_client: int = 1000
    #: handshakes in progress at once, in all, and from one client
    max_handshakes: int = 2048
    max_handshakes_per_client: int = 128
    #: UDP associations and BIND listeners at once per client
    max_udp_associations_per_client: int = 64
    max_bind_listeners_per_client: int = 64
    #: logins failed or being checked, from one client within `auth_failure_window` seconds,
    #: beyond which its logins are refused unchecked; as many failures block it
    auth_failures_before_block: int = 10
    auth_failure_window: float = 600.0
    #: how long such a client is refused (closed before the greeting)
    auth_block_time: float = 300.0
    #: the network prefix one client is counted as: the whole IPv4 address, an IPv6 /64
    client_prefix_v4: int = 32
    client_prefix_v6: int = 64


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """The access rules as configured (the server adds its own addresses to the preset)."""

    client: tuple[Rule, ...] = ()
    socks: tuple[Rule, ...] = ()
    client_default: str = "pass"
    socks_default: str = "pass"
    block_private_destinations: bool = False
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: the `[[route]]` tables, in order (none: everything goes direct)
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class GssapiSettings:
    """GSS-API (RFC 1961): the server's key, and the protection levels it grants."""

    #: keytab holding the service's key; None: `KRB5_KTNAME`, else the system's keytab
    keytab: Path | None = None
    #: the service part of the principal clients ask for (`rcmd/<host>` is Dante's default)
    service: str = DEFAULT_SERVICE
    #: levels granted when asked for; a level asked for and not here aborts the negotiation
    levels: frozenset[ProtectionLevel] = frozenset(
        {ProtectionLevel.INTEGRITY, ProtectionLevel.CONFIDENTIALITY}
    )
    #: accept the level octet unwrapped (NEC's reference implementation, curl
    #: --socks5-gssapi-nec), and answer in kind
    accept_unwrapped_level: bool = False
    #: answer every level request with "clear": for clients that ask for protection but speak
    #: clear whatever they are granted (curl); needs "clear" in `levels`
    answer_clear: bool = False


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The operations endpoint: HTTP `/metrics`, `/healthz`, `/sessions` (off when unset)."""

    #: where the endpoint listens; None: no endpoint
    listen: ListenAddress | None = None
    #: the operator's explicit consent to an endpoint on a non-loopback address
    allow_remote_admin: bool = False


@dataclass(frozen=True, slots=True)
class ProxyProtocolSettings:
    """Load balancers that name the client in a PROXY protocol header (`send-proxy-v2`)."""

    #: connections from these networks must begin with a header; from anywhere else, none may
    sources: tuple[IPNetwork, ...] = ()

    def trusts(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether a connection from `address` begins with a header."""
        return any(address in network for network in self.sources)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `socks5d serve` needs, validated."""

    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", DEFAULT_PORT),)
    #: methods in the server's order of preference
    auth: tuple[AuthMethod, ...] = (AuthMethod.NO_AUTHENTICATION_REQUIRED,)
    users_file: Path | None = None
    #: the operator's explicit consent to no-auth on a non-loopback address
    allow_open_proxy: bool = False
    log_format: str = "text"
    log_level: str = "info"
    #: log to this file (reopened on SIGUSR1) instead of standard error
    log_file: Path | None = None
    #: when started as root: the user and group to serve as, once listeners and log are open
    user: str | None = None
    group: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: serve SOCKS4/4a on the same listeners (only while no-auth is allowed)
    socks4: bool = True
    bind: BindSettings = field(default_factory=BindSettings)
    udp: UdpSettings = field(default_factory=UdpSettings)
    limits: Limits = field(default_factory=Limits)
    rules: RulesConfig = field(default_factory=RulesConfig)
    performance: Performance = field(default_factory=Performance)
    gssapi: GssapiSettings = field(default_factory=GssapiSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    proxy_protocol: ProxyProtocolSettings = field(default_factory=ProxyProtocolSettings)

    @property
    def serves_socks4(self) -> bool:
        """SOCKS4 carries no password: served only when enabled and no-auth is accepted."""
        return self.socks4 and AuthMethod.NO_AUTHENTICATION_REQUIRED in self.auth
