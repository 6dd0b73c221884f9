"""httpx transports through SOCKS proxies: `SocksTransport` (`httpx.Client`) and
`AsyncSocksTransport` (`httpx.AsyncClient`), for one proxy or a chain, any scheme and
authentication socks5d's client speaks (SOCKS5 with user/password or GSS-API, SOCKS4/4a,
HTTP CONNECT).

    client = httpx.Client(transport=SocksTransport(proxy="socks5h://127.0.0.1:1080"))
    client.get("https://example.org/")          # TLS to example.org inside the tunnel
    httpx.AsyncClient(transport=AsyncSocksTransport(proxy=[hop1, hop2], http2=True))

Pooling, TLS, HTTP/1.1 and HTTP/2 are httpcore's, as in httpx's own transports: its
`ConnectionPool` runs over a network backend (`SocksBackend`, `AsyncSocksBackend`: in
httpx_backend.py) whose `connect_tcp` opens a tunnel with `socks5d.client.sync.connect` /
`aio.connect` instead of a TCP connection. The async transport runs under asyncio and
trio (`socks5d.client.anyio` opens its tunnels there). Imported by name only
(`import socks5d.client.httpx`): `socks5d.client` never imports httpx.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from socks5d.client.httpx_backend import AsyncSocksBackend, SocksBackend
from socks5d.proxies import ProxyLike

__all__ = ["AsyncSocksBackend", "AsyncSocksTransport", "SocksBackend", "SocksTransport"]

#: The pool's limits when none are given: httpx's own default.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


#: httpcore's exceptions and httpx's for them, most general first (as httpx's transports).
_HTTPX_ERRORS: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's, the most specific that matches (as
    `httpx.HTTPTransport` maps them); anything else passes unchanged."""
    try:
        yield
    except Exception as exc:
        mapped: type[httpx.HTTPError] | None = None
        for theirs, ours in _HTTPX_ERRORS.items():
            if isinstance(exc, theirs) and (mapped is None or issubclass(ours, mapped)):
                mapped = ours
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


# --------------------------------------------------------------------------- streams


def _pool_options(
    verify: ssl.SSLContext | bool, http1: bool, http2: bool, limits: httpx.Limits, retries: int
) -> dict[str, Any]:
    """The pool's keyword arguments, as httpx's transports build them."""
    if not (http1 or http2):
        raise ValueError("at least one of http1 and http2 must be enabled")
    if http2:
        try:
            import h2  # noqa: F401
        except ImportError:
            raise ImportError(
                "http2=True needs the h2 package (pip install httpx[http2])"
            ) from None
    return {
        # trust_env=False: SSL_CERT_FILE/SSL_CERT_DIR are not read; pass an SSLContext instead
        "ssl_context": httpx.create_ssl_context(verify=verify, trust_env=False),
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "http1": http1,
        "http2": http2,
        "retries": retries,
    }


def _core_request(request: httpx.Request) -> httpcore.Request:
    """httpx's request as httpcore's (as `httpx.HTTPTransport` builds it)."""
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=request.stream,  # a SyncByteStream or an AsyncByteStream
        extensions=request.extensions,
    )


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            with _httpx_errors():
                self._stream.close()


class _AsyncResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            with _httpx_errors():
                await self._stream.aclose()


class SocksTransport(httpx.BaseTransport):
    """An `httpx.Client` transport through `proxy`: a URL (`socks5h://user:pass@host:port`,
    `?gssapi=LEVEL`), a `Proxy`, or a list of them (a chain, first hop first).

    Args:
        verify: an `ssl.SSLContext` for the origins' certificates, True (certifi's CAs) or
            False (no verification), as httpx's `verify`.
        http1, http2: the protocols offered (ALPN over TLS; HTTP/2 needs h2).
        limits: the pool's size and keep-alive, as httpx's `limits`.
        retries: how many times a failed connect is retried (not a proxy's refusal).

    Raises:
        TypeError, ValueError: `proxy` is not a proxy, or a URL of one.
    """

    def __init__(
        self,
        proxy: ProxyLike | list[ProxyLike],
        *,
        verify: ssl.SSLContext | bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retries: int = 0,
    ) -> None:
        self.backend = SocksBackend(proxy)
        self._pool = httpcore.ConnectionPool(
            network_backend=self.backend, **_pool_options(verify, http1, http2, limits, retries)
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` over a pooled tunnel; httpcore's errors come out as httpx's."""
        with _httpx_errors():
            response = self._pool.handle_request(_core_request(request))
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        """Close the pool and its tunnels."""
        with _httpx_errors():
            self._pool.close()


class AsyncSocksTransport(httpx.AsyncBaseTransport):
    """An `httpx.AsyncClient` transport through `proxy`; the arguments are `SocksTransport`'s.
    Runs under asyncio and trio.
    """

    def __init__(
        self,
        proxy: ProxyLike | list[ProxyLike],
        *,
        verify: ssl.SSLContext | bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retries: int = 0,
    ) -> None:
        self.backend = AsyncSocksBackend(proxy)
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=self.backend, **_pool_options(verify, http1, http2, limits, retries)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` over a pooled tunnel; httpcore's errors come out as httpx's."""
        with _httpx_errors():
            response = await self._pool.handle_async_request(_core_request(request))
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_AsyncResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close the pool and its tunnels."""
        with _httpx_errors():
            await self._pool.aclose()
