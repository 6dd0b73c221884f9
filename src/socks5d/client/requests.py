"""A requests transport adapter that sends every request through SOCKS proxies: urllib3
connections whose socket is a tunnel opened by `socks5d.client.sync`, pooled as urllib3 pools
any connection. Imported by name only (`import socks5d.client.requests`); needs requests and
urllib3 2.x.

session = requests.Session()
session.mount("https://", SocksAdapter(proxy="socks5h://alice:secret@127.0.0.1:1080"))
response = session.get("https://example.org/", timeout=10)

The adapter's proxy (one, or a chain) is the only route: requests' `proxies=` and the
`HTTP(S)_PROXY`/`ALL_PROXY` variables are not used by the URLs it is mounted for. TLS is
urllib3's, inside the tunnel, so `verify=` and `cert=` mean what they mean to requests.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from requests import PreparedRequest
from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE, DEFAULT_RETRIES, HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, ProxyError
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from socks5d.client import sync
from socks5d.errors import Socks5Error, TTLExpired
from socks5d.proxies import Proxy, ProxyLike, as_chain

__all__ = [
    "SocksAdapter",
    "SocksHTTPConnection",
    "SocksHTTPConnectionPool",
    "SocksHTTPSConnection",
    "SocksHTTPSConnectionPool",
    "SocksPoolManager",
]

#: The socket families whose options (`socket_options`, TCP_NODELAY by default) apply: a
#: protected (GSS-API) tunnel is a local socket pair bridged by the library, not TCP.
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class SocksHTTPConnection(HTTPConnection):
    """An urllib3 HTTP connection whose socket is a SOCKS tunnel to its host and port.

    Args:
        socks_chain: the proxies to go through, first hop first.
        *args, **kwargs: as `urllib3.connection.HTTPConnection`.
    """

    def __init__(self, *args: Any, socks_chain: list[Proxy], **kwargs: Any) -> None:
        self.socks_chain = socks_chain
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        """Open the tunnel (urllib3 calls this from `connect()`, and wraps it in TLS for
        HTTPS). The connection's timeout bounds reaching the first proxy and each handshake
        and stays set on the socket; the first proxy is dialled from `source_address`.

        Raises:
            ConnectTimeoutError: no proxy answered in time (requests: `ConnectTimeout`).
            ProxyError: a proxy could not be reached or refused the request; the message is
                ours and names the hop, `original_error` is the `Socks5Error` or `OSError`
                (requests: `ProxyError`, a `ConnectionError`).
        """
        timeout = Timeout.resolve_default_timeout(self.timeout)
        chain: list[ProxyLike] = list(self.socks_chain)
        try:
            sock = sync.create_connection(
                (self.host, self.port), timeout, self.source_address, proxy=chain
            )
        except (Socks5Error, OSError) as exc:
            # TTL expired (X'06') is the proxy's answer, not a wait of ours that ran out.
            if isinstance(exc, TimeoutError) and not isinstance(exc, TTLExpired):
                raise ConnectTimeoutError(self, f"{exc} (connect timeout={timeout})") from exc
            raise ProxyError(str(exc), exc) from exc
        try:
            if sock.family in _TCP_FAMILIES:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
        except BaseException:
            sock.close()
            raise
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


class SocksHTTPSConnection(SocksHTTPConnection, HTTPSConnection):
    """The HTTPS twin: urllib3 wraps the tunnel in TLS, verifying the certificate against the
    URL's host, as it does for a direct connection."""


class SocksHTTPConnectionPool(HTTPConnectionPool):
    """An urllib3 pool of `SocksHTTPConnection`s (give it `socks_chain=`)."""

    ConnectionCls = SocksHTTPConnection


class SocksHTTPSConnectionPool(HTTPSConnectionPool):
    """An urllib3 pool of `SocksHTTPSConnection`s (give it `socks_chain=`)."""

    ConnectionCls = SocksHTTPSConnection


class SocksPoolManager(PoolManager):
    """An urllib3 `PoolManager` whose pools reach every host through `chain`.

    Args:
        chain: the proxies, first hop first (`socks5d.proxies.as_chain`).
        num_pools, headers, **connection_pool_kw: as `urllib3.PoolManager`.
    """

    def __init__(
        self,
        chain: list[Proxy],
        num_pools: int = 10,
        headers: dict[str, str] | None = None,
        **connection_pool_kw: Any,
    ) -> None:
        super().__init__(num_pools, headers, **connection_pool_kw)
        self.chain = chain
        # A pool that is let go of (`clear()`, which `Session.close()` reaches, or one pushed
        # out by `num_pools`) closes its idle tunnels now, as urllib3 1.x did; urllib3 2.x
        # leaves them to the garbage collector, and each holds a proxy session open (and,
        # when protected, a bridge thread). In-flight connections close when released.
        self.pools.dispose_func = HTTPConnectionPool.close
        self.pool_classes_by_scheme = {
            "http": SocksHTTPConnectionPool,
            "https": SocksHTTPSConnectionPool,
        }

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        # The chain is the same for every pool of this manager, so it stays out of the pool
        # key (urllib3's PoolKey has a field per keyword it knows, none for ours).
        context = dict(self.connection_pool_kw if request_context is None else request_context)
        context["socks_chain"] = self.chain
        return super()._new_pool(scheme, host, port, context)


class SocksAdapter(HTTPAdapter):
    """A requests adapter sending every request through `proxy`:
    `session.mount("https://", SocksAdapter(proxy="socks5h://127.0.0.1:1080"))`.

    Requests' timeout (`timeout=` or its connect part) bounds reaching the first proxy and
    each SOCKS handshake; `verify=` and `cert=` apply to the TLS inside the tunnel; connections
    are kept alive and reused per host as by `HTTPAdapter`. Pool keywords such as
    `source_address` go through `init_poolmanager(..., source_address=...)` as usual.

    Args:
        proxy: a proxy URL (`socks5h://user:pass@host:port`, `?gssapi=LEVEL`), a `Proxy`,
            or a list of them: a chain, first hop first.
        pool_connections, pool_maxsize, max_retries, pool_block: as `HTTPAdapter`.

    Raises:
        TypeError, ValueError: `proxy` is not a proxy, or not a valid one.
    """

    #: what requests pickles of an adapter (a class attribute in `HTTPAdapter` too)
    __attrs__ = [*HTTPAdapter.__attrs__, "chain"]  # noqa: RUF012

    def __init__(
        self,
        *,
        proxy: ProxyLike | list[ProxyLike],
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int = DEFAULT_POOLSIZE,
        max_retries: int | Retry = DEFAULT_RETRIES,
        pool_block: bool = DEFAULT_POOLBLOCK,
    ) -> None:
        #: the proxies every request goes through, first hop first
        self.chain = as_chain(proxy)
        super().__init__(pool_connections, pool_maxsize, max_retries, pool_block)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **pool_kwargs: Any
    ) -> None:
        """Build the `SocksPoolManager` (requests calls this; as `HTTPAdapter`'s)."""
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = SocksPoolManager(
            self.chain, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )

    def get_connection_with_tls_context(
        self,
        request: PreparedRequest,
        verify: bool | str,
        proxies: dict[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> HTTPConnectionPool:
        """The pool for `request`, always one of ours: `proxies` (which requests fills from
        the environment too) would send the request around the adapter's proxy."""
        return super().get_connection_with_tls_context(request, verify, None, cert)

    def request_url(self, request: PreparedRequest, proxies: dict[str, str] | None) -> str:
        """The request target: the path, as to an origin (the tunnel ends at it)."""
        return super().request_url(request, None)
