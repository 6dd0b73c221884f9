"""Every setting, declared once: its TOML key, its check, its help, and its `serve` flag if any.

`OPTIONS` is the single list the loader (`load.py`), the `serve` flags (`add_flags`, read back
by `flag_values`) and the README's table of options (`table.markdown_table`) are all derived
from; a
setting's default is not repeated here but read from the dataclass that holds it (`schema.py`).
The rule tables (`[groups]`, `[[client]]`, `[[socks]]`) are lists, not settings: they are
parsed by `rules_table.py` and only named in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from socks5d.config import checks
from socks5d.config.checks import Check
from socks5d.config.rules_table import TABLES
from socks5d.config.schema import (
    AUTH_METHODS,
    EVENT_LOOPS,
    LOG_FORMATS,
    LOG_LEVELS,
    RELAY_ENGINES,
    ServerConfig,
)
from socks5d.extras import install_hint
from socks5d.gss import LEVEL_NAMES
from socks5d.rules import ACTIONS


@dataclass(frozen=True, slots=True)
class Option:
    """One setting of the configuration file, and the `serve` flag that overrides it."""

    #: the TOML key path: `listen`, `timeouts.idle` (the `[timeouts]` table's `idle`)
    key: str
    #: `check(value, key)` -> the value the configuration holds
    check: Check
    #: one line for the README's table of options
    help: str
    #: the `serve` flag that overrides the file, if any
    flag: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    #: the flag may be repeated; its values form the list the setting holds
    repeat: bool = False
    #: a flag without a value, setting the option to this
    switch: bool | None = None
    #: the flag's `--help` text, when it is not `help`
    flag_help: str | None = None
    #: a file name; in the file, relative to the file's folder
    is_path: bool = False
    #: the default as the README states it, when the dataclass's value does not say it all
    default_text: str | None = None
    #: the dataclass field holding the value, when it is not named as the key
    field: str | None = None
    #: False for a removed setting, still declared so that its use is refused with a reason
    listed: bool = True

    @property
    def section(self) -> str:
        """The `[table]` the setting is in; "" at the top level."""
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        """The key inside its table."""
        return self.key.rpartition(".")[2]

    @property
    def attribute(self) -> str:
        """The field of `ServerConfig` (or of its section's dataclass) that holds the value."""
        return self.field or self.name

    @property
    def default(self) -> Any:
        """The value when neither the file nor a flag gives one, from `schema.py`."""
        defaults = ServerConfig()
        holder = getattr(defaults, self.section) if self.section else defaults
        return getattr(holder, self.attribute)


#: Why the delay before answering a failed login is gone.
_NO_DELAY = (
    "failed logins are answered at once (a delay on failures only told a guesser the answer"
    " early, and did not slow one that stopped waiting); auth_failures_before_block limits"
    " the logins one client may have failed or being checked"
)
_LEVELS = ",".join(LEVEL_NAMES)

OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        checks.listen_addresses,
        "addresses to listen on, `HOST:PORT` or `[IPV6]:PORT`; port 0 picks a free port",
        flag="--listen",
        metavar="HOST:PORT",
        repeat=True,
        flag_help="address to listen on, repeatable; [::1]:1080 for IPv6 (default 127.0.0.1:1080)",
    ),
    Option(
        "auth",
        checks.auth_methods,
        "accepted methods in the server's order of preference: `none`, `userpass`, `gssapi`; "
        '`["userpass"]` when `users` is given and `auth` is not',
        flag="--auth",
        choices=tuple(AUTH_METHODS),
        repeat=True,
        flag_help="accepted method, repeatable, in order of preference "
        "(default: none, or userpass alone when --users is given)",
    ),
    Option(
        "users",
        checks.any_path,
        "the users file for `userpass` (see `socks5d passwd`)",
        flag="--users",
        metavar="FILE",
        is_path=True,
        flag_help="users file (see `socks5d passwd`)",
        field="users_file",
    ),
    Option(
        "log_format",
        checks.one_of(LOG_FORMATS),
        "log line format: `text` or `json`",
        flag="--log-format",
        choices=LOG_FORMATS,
        flag_help="log line format (default text)",
    ),
    Option(
        "allow_open_proxy",
        checks.boolean,
        "allow no-auth on a non-loopback address (an open proxy)",
        flag="--allow-open-proxy",
        switch=True,
    ),
    Option(
        "log_level",
        checks.one_of(LOG_LEVELS),
        "least severe level logged: `debug`, `info`, `warning`, `error`",
        flag="--log-level",
        choices=LOG_LEVELS,
        flag_help="least severe level logged (default info)",
    ),
    Option(
        "log_file",
        checks.path,
        "log to this file instead of standard error; reopened on SIGUSR1 (logrotate)",
        flag="--log-file",
        metavar="FILE",
        is_path=True,
    ),
    Option(
        "user",
        checks.account_name,
        "when started as root: the user to serve as, once the listeners and the log file are open",
        flag="--user",
        metavar="NAME",
    ),
    Option(
        "group",
        checks.account_name,
        "with `user`: the group to serve as; unset: the user's own group",
        flag="--group",
        metavar="NAME",
    ),
    Option(
        "socks4",
        checks.boolean,
        "serve SOCKS4/4a on the same listeners (only while `none` is accepted)",
        flag="--no-socks4",
        switch=False,
        flag_help="do not serve SOCKS4/4a clients (served by default while no-auth is allowed)",
    ),
    Option("timeouts.handshake", checks.positive, "seconds from accept to the request being read"),
    Option(
        "timeouts.connect", checks.positive, "seconds to resolve and connect to the destination"
    ),
    Option(
        "timeouts.idle", checks.positive, "seconds without traffic either way that close a tunnel"
    ),
    Option(
        "timeouts.drain",
        checks.positive,
        "seconds open tunnels may go on after SIGTERM (see *Operations*)",
    ),
    Option(
        "bind.address",
        checks.ip_address,
        "the address BIND listens on; unset: the one this host would use to reach DST.ADDR "
        "(see *BIND*)",
    ),
    Option(
        "bind.ports",
        checks.port_range,
        'the ports BIND listens on, `"40000-40999"`; unset: any free port',
    ),
    Option("bind.timeout", checks.positive, "seconds to wait for the incoming connection"),
    Option(
        "udp.address",
        checks.ip_address,
        "the address relay sockets are bound to; unset: the wildcard, IPv6 and IPv4",
    ),
    Option(
        "udp.advertise_address",
        checks.ip_address,
        "the BND.ADDR given to clients; unset: see *UDP ASSOCIATE*",
    ),
    Option(
        "udp.idle_timeout",
        checks.positive,
        "seconds without a datagram either way that end an association",
    ),
    Option(
        "limits.max_sessions", checks.count, "sessions (handshakes and tunnels) at once, in all"
    ),
    Option("limits.max_sessions_per_client", checks.count, "sessions at once from one client"),
    Option("limits.max_handshakes", checks.count, "handshakes in progress at once, in all"),
    Option(
        "limits.max_handshakes_per_client",
        checks.count,
        "handshakes in progress at once from one client",
    ),
    Option(
        "limits.max_udp_associations_per_client",
        checks.count,
        "UDP associations at once from one client",
    ),
    Option(
        "limits.max_bind_listeners_per_client",
        checks.count,
        "BIND listeners at once from one client",
    ),
    Option(
        "limits.auth_failures_before_block",
        checks.count,
        "logins failed or being checked within `auth_failure_window` beyond which a client "
        "is blocked",
    ),
    Option(
        "limits.auth_failure_window",
        checks.positive,
        "seconds over which a client's failed logins are counted",
    ),
    Option(
        "limits.auth_block_time",
        checks.positive,
        "seconds a blocked client is refused (closed before the greeting)",
    ),
    Option(
        "limits.client_prefix_v4",
        checks.integer_in(1, 32),
        "prefix length counted as one IPv4 client",
    ),
    Option(
        "limits.client_prefix_v6",
        checks.integer_in(1, 128),
        "prefix length counted as one IPv6 client",
    ),
    Option("limits.auth_failure_delay", checks.no_longer_used(_NO_DELAY), "", listed=False),
    Option("limits.auth_max_delay", checks.no_longer_used(_NO_DELAY), "", listed=False),
    Option(
        "rules.client_default",
        checks.one_of(ACTIONS),
        "what happens to a client no `[[client]]` rule matches: `pass` or `block`",
    ),
    Option(
        "rules.socks_default",
        checks.one_of(ACTIONS),
        "what happens to a request no `[[socks]]` rule matches: `pass` or `block`",
    ),
    Option(
        "rules.block_private_destinations",
        checks.boolean,
        "refuse private, loopback and link-local destinations before the rules",
    ),
    Option(
        "performance.workers",
        checks.workers,
        'processes accepting on the same addresses (SO_REUSEPORT); `"auto"`: one per CPU',
        flag="--workers",
        metavar="N",
        flag_help='worker processes sharing the listeners (SO_REUSEPORT); "auto": one per CPU '
        "(default 1)",
    ),
    Option(
        "performance.event_loop",
        checks.one_of(EVENT_LOOPS),
        "`auto` (uvloop when installed), `asyncio` or `uvloop`",
        flag="--loop",
        choices=EVENT_LOOPS,
        flag_help=f"event loop; auto: uvloop when installed ({install_hint('fast')}) "
        "(default auto)",
    ),
    Option(
        "performance.relay",
        checks.one_of(RELAY_ENGINES),
        "relay engine: `auto` (splice on Linux), `splice` or `portable`",
        flag="--relay",
        choices=RELAY_ENGINES,
        flag_help="relay engine; auto: splice (zero-copy) on Linux, else portable (default auto)",
    ),
    Option(
        "performance.password_cache_ttl",
        checks.not_negative,
        "seconds a verified password is accepted without the slow hash; 0: never",
    ),
    Option(
        "performance.hash_threads",
        checks.hash_threads,
        'threads running the slow password hashes; `"auto"`: 2, or 1 on a single CPU',
        default_text='`"auto"`',
    ),
    Option(
        "performance.hash_queue",
        checks.integer_in(0, 10_000),
        "password checks that may wait for a hashing thread; beyond, a login is refused at once",
    ),
    Option(
        "gssapi.keytab",
        checks.path,
        "keytab with the service's key; unset: `KRB5_KTNAME`, else the system's keytab",
        flag="--gssapi-keytab",
        metavar="FILE",
        is_path=True,
        flag_help="keytab with the GSS-API service key (default: KRB5_KTNAME, else the system's)",
    ),
    Option(
        "gssapi.service",
        checks.service_name,
        "the service part of the principal clients ask for (`NAME/<proxy host>`)",
        flag="--gssapi-service",
        metavar="NAME",
        flag_help="GSS-API service name; clients ask for NAME/<proxy host> (default rcmd)",
    ),
    Option(
        "gssapi.levels",
        checks.levels,
        f"protection levels granted, from `{_LEVELS}` (a list, or one comma-separated string)",
        flag="--gssapi-levels",
        metavar="LIST",
        flag_help=f"protection levels granted, comma-separated from {_LEVELS} "
        "(default integrity,confidentiality)",
    ),
    Option(
        "gssapi.accept_unwrapped_level",
        checks.boolean,
        "accept the level octet unwrapped (NEC's implementation, `curl --socks5-gssapi-nec`), "
        "and answer in kind",
    ),
    Option(
        "gssapi.answer_clear",
        checks.boolean,
        'answer every level request with "clear" (for curl); needs `clear` in `levels`',
    ),
    Option(
        "admin.listen",
        checks.listen_address,
        "HTTP endpoint for `/metrics`, `/healthz`, `/sessions` (see *Operations*); unset: none",
        flag="--admin-listen",
        metavar="HOST:PORT",
        flag_help="serve /metrics, /healthz and /sessions over HTTP here (default: off)",
    ),
    Option(
        "admin.allow_remote_admin",
        checks.boolean,
        "allow `admin.listen` on a non-loopback address (anyone reaching it sees the sessions)",
    ),
    Option(
        "proxy_protocol.from",
        checks.networks,
        "load balancers (networks, addresses): connections from them must begin with a PROXY "
        "protocol header, v1 or v2, naming the client; from anywhere else none may "
        "(see *Running many instances*)",
        flag="--proxy-protocol-from",
        metavar="CIDR",
        repeat=True,
        flag_help="a load balancer's network or address whose connections begin with a PROXY "
        "protocol header, repeatable (default: none)",
        field="sources",
    ),
)

#: Each option by its key path.
BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}
#: The `[tables]` of settings, in the order of `OPTIONS`.
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(o.section for o in OPTIONS if o.section))
#: Every key a file may have at its top level.
TOP_KEYS: frozenset[str] = frozenset(
    {o.key for o in OPTIONS if not o.section} | set(SECTIONS) | set(TABLES)
)
