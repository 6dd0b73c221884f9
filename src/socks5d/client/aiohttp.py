"""An aiohttp connector that opens every connection through a SOCKS proxy or a chain of them
(`socks5d.client.aio.connect`); aiohttp itself still does TLS, pooling and keep-alive.

    connector = SocksConnector(proxy="socks5h://alice:secret@127.0.0.1:1080")  # or a list
    async with aiohttp.ClientSession(connector=connector) as session:
        body = await (await session.get("https://example.org/")).read()

asyncio only, as aiohttp is. Imported by name only: `import socks5d.client` never imports
aiohttp.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from socks5d.client import aio
from socks5d.client.wire import DEFAULT_TIMEOUT
from socks5d.errors import ProxyTimeout, Socks5Error
from socks5d.proxies import ProxyLike, as_chain

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

__all__ = ["SocksConnector"]

#: TCPConnector options about resolving names and opening sockets here: with a proxy the
#: proxy (or the client library, for `socks5://`) does both, so they would be ignored.
_LOCAL_ONLY_OPTIONS = ("resolver", "local_addr", "socket_factory")


class SocksConnector(aiohttp.TCPConnector):
    """A `TCPConnector` whose connections all go through `proxy`.

    `aiohttp.ClientSession(connector=SocksConnector(proxy="socks5h://user:pass@host:1080"))`.
    The destination is handed to the proxy as the URL names it: with `socks5h://` (and
    `socks4a://`, `http://`) the name crosses the proxy unresolved, with `socks5://` the
    client library resolves it; aiohttp's resolver and DNS cache are never asked. TLS is
    aiohttp's own, inside the tunnel: the session's or request's `ssl` (an `SSLContext`,
    False for no verification, an `aiohttp.Fingerprint`; default: verify) and
    `server_hostname` are honoured, and pooling and keep-alive work as with `TCPConnector`.

    Args:
        proxy: a proxy URL, a `Proxy`, or a chain of them (a list, first hop first). A
            GSS-API proxy with protection works too: its tunnel is a bridged socket.
        **options: `TCPConnector`'s (`ssl`, `limit`, `keepalive_timeout`, `force_close`,
            ...), except `resolver`, `local_addr` and `socket_factory`, which only a direct
            connection could use.

    Raises:
        TypeError: one of those three options is given.
        ValueError: `proxy` is not a proxy URL, or an empty chain.

    Each connection's proxy walk (reaching the first proxy, each handshake) gets the
    session's `ClientTimeout.sock_connect` seconds (30 when it is None). A proxy that
    cannot be reached or refuses the tunnel is an `aiohttp.ClientProxyConnectionError`
    whose `__cause__` is socks5d's error (`ConnectionRefused` for X'05', `AuthFailed`, ...,
    each with its `reply`); a proxy that does not answer in time is aiohttp's
    `ConnectionTimeoutError`, caused by `ProxyTimeout`.
    """

    def __init__(self, *, proxy: ProxyLike | list[ProxyLike], **options: Any) -> None:
        for name in _LOCAL_ONLY_OPTIONS:
            if options.get(name) is not None:
                raise TypeError(f"SocksConnector: {name} is for direct connections only")
        # parsed once: a wrong URL fails here, not at the first request
        self._chain: list[ProxyLike] = list(as_chain(proxy))
        super().__init__(**options)

    async def _create_direct_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,
        *,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        """The one seam: TCPConnector's connection to `req`'s host, which would resolve the
        name (`_resolve_host`) and dial its addresses, is a tunnel through the proxy here;
        aiohttp's `_wrap_existing_connection` then puts TLS and its protocol on the socket.
        Also used for an HTTP proxy given to aiohttp itself (`proxy=`): it is reached
        through the SOCKS chain.
        """
        sslcontext = self._get_ssl_context(req)
        fingerprint = self._get_fingerprint(req)
        host = req.url.raw_host
        port = req.port
        assert host is not None and port is not None
        # As TCPConnector: a fully-qualified name keeps one trailing dot (aiohttp #7364).
        if host.endswith(".."):
            host = host.rstrip(".") + "."
        sock = await self._tunnel(req, host, port, timeout)
        # As TCPConnector (aiohttp #3636); RFC 6066 §3: "The hostname is represented as a
        # byte string using ASCII encoding without a trailing dot."
        server_hostname = (req.server_hostname or host).rstrip(".") if sslcontext else None
        try:
            transport, protocol = await self._wrap_existing_connection(
                self._factory,
                timeout=timeout,
                ssl=sslcontext,
                sock=sock,
                server_hostname=server_hostname,
                req=req,
                client_error=client_error,
            )
        except BaseException:
            sock.close()  # when create_connection failed before a transport took it over
            raise
        if req.is_ssl() and fingerprint is not None:
            try:
                fingerprint.check(transport)
            except aiohttp.ServerFingerprintMismatch:
                transport.close()
                raise
        return transport, protocol

    async def _tunnel(
        self, req: ClientRequest, host: str, port: int, timeout: aiohttp.ClientTimeout
    ) -> socket.socket:
        """A socket connected to `host`:`port` through the chain, or aiohttp's error."""
        seconds = timeout.sock_connect if timeout.sock_connect is not None else DEFAULT_TIMEOUT
        try:
            return await aio.connect(host, port, proxy=self._chain, timeout=seconds)
        except ProxyTimeout:
            raise  # a deadline: the session makes it a ConnectionTimeoutError, as its own
        except (Socks5Error, OSError) as exc:
            # errno kept where there is one; the message names the hop and the refusal
            # (`strerror` of an OSError made with an errno, else the one argument).
            errno = getattr(exc, "errno", None)
            message = getattr(exc, "strerror", None) if errno is not None else None
            os_error = OSError(errno, message or str(exc.args[0] if exc.args else exc))
            raise aiohttp.ClientProxyConnectionError(req.connection_key, os_error) from exc
