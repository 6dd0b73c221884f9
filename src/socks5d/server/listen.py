"""The server: listening sockets, the accept loops, and the set of live sessions.

server = Server(config)
await server.start()          # binds every listen address
...
server.reload(config, users)  # SIGHUP: new listen addresses, rules, users; all or nothing
left = await server.drain(30) # SIGTERM: stop accepting, let open sessions finish (or not)
await server.close()          # stops accepting, ends every session, frees every socket
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from socks5d.client.bridges import end_bridges
from socks5d.config import ListenAddress, ServerConfig, open_proxy_refusal
from socks5d.constants import AuthMethod
from socks5d.errors import ConfigError
from socks5d.gss import acceptor_credentials
from socks5d.net import address_of, format_peer
from socks5d.proto import Address, DomainName
from socks5d.relay import RelayEngine, select_engine
from socks5d.routing import Health, Routes
from socks5d.rules import RuleSet
from socks5d.server.admission import admit
from socks5d.server.connect import system_resolver
from socks5d.server.context import Resolver, Services
from socks5d.server.hashing import HashPool, thread_count
from socks5d.server.hostaddresses import access_rules
from socks5d.server.limits import AuthThrottle, Slots
from socks5d.server.listeners import Listeners
from socks5d.server.live import Tunnels, describe_sessions, live_snapshot
from socks5d.server.passwords import Authenticator
from socks5d.server.proxied import serve_proxied
from socks5d.server.session import Session
from socks5d.server.stats import Stats
from socks5d.users import UserDatabase

if TYPE_CHECKING:  # python-gssapi is optional: installed only where GSS-API is offered
    import gssapi

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Server:
    """A SOCKS server for one `ServerConfig`.

    What its sessions share is one `Services` value (`services`), replaced whole by `apply`;
    the attributes of the same names (`config`, `rules`, `throttle`, ...) read the current one.

    Args:
        config: validated configuration.
        users: the user database; loaded from `config.users_file` when not given.
        relay_engine: the relay engine; the one `config.performance.relay` names when not
            given.
        resolver: resolves domain-name destinations; the system's resolver when not given.
        reuse_port: listen with SO_REUSEPORT, beside other processes on the same addresses.
    """

    def __init__(
        self,
        config: ServerConfig,
        users: UserDatabase | None = None,
        relay_engine: RelayEngine | None = None,
        resolver: Resolver = system_resolver,
        *,
        reuse_port: bool = False,
    ) -> None:
        self.reuse_port = reuse_port
        performance = config.performance
        limits = config.limits
        # The parts that keep state across a reload: every `Services` holds these same ones.
        self._relay_engine = relay_engine or select_engine(performance.relay)
        self._resolver = resolver
        #: the threads and queue of the slow password hashes
        pool = HashPool(thread_count(performance.hash_threads), performance.hash_queue)
        self._authenticator = Authenticator(None, pool=pool)
        self._session_slots = Slots(limits.max_sessions, limits.max_sessions_per_client)
        self._handshake_slots = Slots(limits.max_handshakes, limits.max_handshakes_per_client)
        self._udp_slots = Slots(limits.max_sessions, limits.max_udp_associations_per_client)
        self._bind_slots = Slots(limits.max_sessions, limits.max_bind_listeners_per_client)
        self._throttle = AuthThrottle(limits)
        #: which upstreams failed lately, kept across reloads
        self._health = Health()
        #: the metrics, kept across reloads
        self.stats = Stats()
        #: True once a drain began (SIGTERM): the listeners are closed for good, `/healthz`
        #: answers "draining"
        self.draining = False
        #: what the sessions share; set by `apply`
        self.services: Services
        #: how many connections were refused before the greeting, by reason
        self.refused: Counter[str] = Counter()
        self._listeners = Listeners(self._start_session, reuse_port=reuse_port)
        self._sessions: set[asyncio.Task[None]] = set()
        #: sessions whose tunnel the relay engine runs (`Session.hand_over`)
        self.tunnels: set[Session] = Tunnels(self._sessions_changed)
        #: called whenever `active_sessions` may have changed (`watch_sessions`)
        self._watchers: list[Callable[[], None]] = []
        #: set while no session is open (`drain` waits on it)
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        #: every open session, oldest first, from its start to its end (both kinds above)
        self.live_sessions: dict[Session, None] = {}
        self.apply(config, users)

    def apply(
        self,
        config: ServerConfig,
        users: UserDatabase | None = None,
        *,
        bound: Iterable[ListenAddress] | None = None,
    ) -> None:
        """Take a new configuration: rules, users, limits and timeouts apply to new sessions
        at once; established tunnels go on. The listeners stay as they are (`reload` changes
        them too). Every login block and count of the password-guessing throttle is forgotten.
        `bound`: the addresses the open-proxy guard judges; the bound sockets' when not given.

        Raises:
            ConfigError: the users file cannot be read, the GSS-API keytab has no key for
                the service, or `config` would make a bound listener an open proxy (nothing is
                changed then).
        """
        # The sockets actually bound decide, not the file's list: a reload keeps them.
        if bound is None:
            bound = [ListenAddress(host, port) for host, port in self.addresses]
        refusal = open_proxy_refusal(config, bound)
        if refusal is not None:
            raise ConfigError(f"listening on {refusal}")
        if users is None and config.users_file is not None:
            users = UserDatabase.load(config.users_file)
        # the service's key for GSS-API (RFC 1961), read from the keytab on (re)load
        credentials = (
            acceptor_credentials(config.gssapi.service, config.gssapi.keytab)
            if AuthMethod.GSSAPI in config.auth
            else None
        )
        if AuthMethod.USERNAME_PASSWORD in config.auth and users is None:
            raise ValueError("username/password authentication needs a user database")
        rules = config.rules
        authenticator = self._authenticator
        authenticator.users = users
        performance = config.performance
        authenticator.cache_ttl = performance.password_cache_ttl
        authenticator.pool.configure(thread_count(performance.hash_threads), performance.hash_queue)
        limits = config.limits
        for slots, total, per_client in (
            (self._session_slots, limits.max_sessions, limits.max_sessions_per_client),
            (self._handshake_slots, limits.max_handshakes, limits.max_handshakes_per_client),
            (self._udp_slots, limits.max_sessions, limits.max_udp_associations_per_client),
            (self._bind_slots, limits.max_sessions, limits.max_bind_listeners_per_client),
        ):
            slots.configure(total, per_client, limits.client_prefix_v4, limits.client_prefix_v6)
        self._throttle.reset(limits)
        self.services = Services(
            config=config,
            rules=access_rules(config),
            resolver=self._resolver,
            authenticator=authenticator,
            throttle=self._throttle,
            session_slots=self._session_slots,
            handshake_slots=self._handshake_slots,
            udp_slots=self._udp_slots,
            bind_slots=self._bind_slots,
            relay_engine=self._relay_engine,
            gssapi_credentials=credentials,
            stats=self.stats,
            routes=Routes(rules.routes, groups=dict(rules.groups)),
            health=self._health,
        )

    @property
    def config(self) -> ServerConfig:
        """The configuration in force."""
        return self.services.config

    @property
    def rules(self) -> RuleSet:
        """The rules in force."""
        return self.services.rules

    @property
    def resolver(self) -> Resolver:
        """Resolves domain-name destinations."""
        return self._resolver

    @property
    def relay_engine(self) -> RelayEngine:
        """The relay engine of unprotected tunnels."""
        return self._relay_engine

    @property
    def authenticator(self) -> Authenticator:
        """The RFC 1929 password checker."""
        return self._authenticator

    @property
    def hash_pool(self) -> HashPool:
        """The threads and queue of the slow password hashes."""
        return self._authenticator.pool

    @property
    def throttle(self) -> AuthThrottle:
        """The password-guessing throttle."""
        return self._throttle

    @property
    def session_slots(self) -> Slots:
        """Sessions, in all and per client."""
        return self._session_slots

    @property
    def handshake_slots(self) -> Slots:
        """Handshakes in progress, in all and per client."""
        return self._handshake_slots

    @property
    def udp_slots(self) -> Slots:
        """UDP associations, in all and per client."""
        return self._udp_slots

    @property
    def bind_slots(self) -> Slots:
        """BIND listeners, in all and per client."""
        return self._bind_slots

    @property
    def gssapi_credentials(self) -> gssapi.Credentials | None:
        """The service's GSS-API key, when GSS-API is offered."""
        return self.services.gssapi_credentials

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) each listener is bound to (real ports when 0 was asked)."""
        return self._listeners.addresses

    @property
    def active_sessions(self) -> int:
        """Sessions being served now."""
        return len(self._sessions) + len(self.tunnels)

    async def start(self) -> None:
        """Bind every listen address and start accepting.

        Raises:
            ListenError: an address cannot be bound (the message names it); none stays bound.
        """
        self._listeners.open(self.config.listen)

    def reload(self, config: ServerConfig, users: UserDatabase | None = None) -> None:
        """Take a new configuration, listen addresses included, as one step: addresses added
        are bound, removed ones closed (their sessions go on), unchanged ones keep their
        socket; then as `apply`. If any part fails nothing changes.

        Raises:
            ListenError: a new address cannot be bound.
            ConfigError, ValueError: as `apply`; the open-proxy guard judges the sockets
                that would be bound after the reload.
        """
        change = self._listeners.prepare(config.listen)
        try:
            self.apply(config, users, bound=change.bound)
        except BaseException:
            change.abort()
            raise
        change.commit()

    def rebind(self, listen: Iterable[ListenAddress]) -> None:
        """Listen on `listen` from now on, the rest of the configuration unchanged (`reload`)."""
        self.reload(replace(self.config, listen=tuple(listen)), self.authenticator.users)

    def watch_sessions(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (on the event loop) whenever `active_sessions` may have changed."""
        self._watchers.append(callback)

    def _sessions_changed(self) -> None:
        if self.active_sessions:
            self._no_sessions.clear()
        else:
            self._no_sessions.set()
        for callback in self._watchers:
            callback()

    async def drain(self, timeout: float) -> int:
        """Stop accepting (the listeners are closed: connecting is refused), let the open
        sessions (tunnels, handshakes in progress, UDP associations, BIND waits) go on for up
        to `timeout` seconds, then end what is left (`outcome=server closing`).

        Returns:
            How many sessions were still open at the deadline (0 when all ended before).
        """
        self.draining = True
        self._listeners.close()
        log.info(
            "draining: %d sessions open, closing what is left in %gs",
            self.active_sessions,
            timeout,
            extra={"fields": {"sessions": self.active_sessions, "deadline": timeout}},
        )
        try:
            async with asyncio.timeout(timeout):
                await self._no_sessions.wait()
        except TimeoutError:
            pass
        left = self.active_sessions
        if left:
            log.info(
                "drain deadline: %d sessions left, closing them",
                left,
                extra={"fields": {"sessions": left}},
            )
        await self._end_sessions()
        return left

    def _start_session(self, client: socket.socket, peer: Any, name: str) -> None:
        address = address_of(peer)
        client_ip = address.host
        assert not isinstance(client_ip, DomainName)
        if self.services.config.proxy_protocol.trusts(client_ip):  # a balancer: header first
            refusal = self.services.handshake_slots.reserve()
            if refusal is None:
                self._run(
                    client,
                    serve_proxied(
                        self.services, client, address, name, self.admit, self._proxied_session
                    ),
                )
                return
            refusal = f"handshakes in progress: {refusal}"
            self.refused[refusal] += 1
            self.stats.limit_refusal("handshakes")
        else:
            refusal = self.admit(client_ip, name)
        if refusal is not None:
            log.info(
                "refused %s on %s: %s",
                format_peer(peer),
                name,
                refusal,
                extra={"fields": {"client": format_peer(peer), "listener": name}},
            )
            client.close()
            return
        self._run(client, self._session(client, peer, name, address).run())

    def _session(self, client: socket.socket, peer: Any, name: str, address: Address) -> Session:
        return Session(
            self.services, self.tunnels, client, peer, name, address, live=self.live_sessions
        )

    def _proxied_session(
        self, client: socket.socket, address: Address, name: str, started: float
    ) -> Session:
        """The session of the client a PROXY header named (`proxied.serve_proxied`)."""
        session = self._session(client, (str(address.host), address.port), name, address)
        session.started = started
        return session

    def _run(self, client: socket.socket, serve: Coroutine[Any, Any, None]) -> None:
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.create_task(serve)
        self._sessions.add(task)
        task.add_done_callback(self._session_done)
        self._sessions_changed()

    def _session_done(self, task: asyncio.Task[None]) -> None:
        self._sessions.discard(task)
        self._sessions_changed()

    def admit(self, client: IPAddress, listener: str) -> str | None:
        """None when `client` may start a session (`admission.admit`), else why not, counted
        in `refused`."""
        refusal = admit(self.services, client, listener)
        if refusal is not None:
            self.refused[refusal] += 1
        return refusal

    def metrics_snapshot(self) -> dict[str, Any]:
        """`stats.snapshot()` with the live values (`live_snapshot`); on the server's loop."""
        blocked = self._throttle.blocked_count(time.monotonic())
        return live_snapshot(self.stats, self.live_sessions, blocked, self.draining)

    def session_list(self, limit: int) -> list[dict[str, Any]]:
        """The open sessions, oldest first, at most `limit` (`describe_sessions`); on the
        server's loop."""
        return describe_sessions(self.live_sessions, limit)

    async def close(self) -> None:
        """Stop accepting, end every session and close every socket."""
        self._listeners.close()
        await self._end_sessions()
        self._relay_engine.close()
        self.hash_pool.close()

    async def _end_sessions(self) -> None:
        """End every open session now (`outcome=server closing`) and wait until they are."""
        sessions = list(self._sessions)
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        tunnels = [session.tunnel for session in self.tunnels if session.tunnel is not None]
        for tunnel in tunnels:
            tunnel.abort()
        await asyncio.gather(*(tunnel.wait() for tunnel in tunnels))
        await end_bridges()  # routed through a protected upstream (GSS-API)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
