"""httpcore network backends that open SOCKS tunnels instead of TCP connections, for the
httpx transports (`socks5d.client.httpx`): `SocksBackend` (blocking, `sync.connect`) and
`AsyncSocksBackend` (asyncio: `aio.connect`; trio: `socks5d.client.anyio.connect`), and the
stream each tunnel is wrapped in, with socks5d's and the streams' errors as httpcore's.

    pool = httpcore.ConnectionPool(network_backend=SocksBackend(as_chain(proxy)))
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.streams.tls
import httpcore

from socks5d.client import aio, sync
from socks5d.client import anyio as anyio_client
from socks5d.client.wire import DEFAULT_TIMEOUT
from socks5d.errors import ProxyTimeout, Socks5Error
from socks5d.proxies import Proxy, ProxyLike, as_chain

__all__ = ["AsyncSocksBackend", "SocksBackend"]

#: What a closed or broken stream raises, besides OSError (ssl.SSLError is one).
_BROKEN = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)


# --------------------------------------------------------------------------- errors


@contextmanager
def _tunnel_errors() -> Iterator[None]:
    """socks5d's errors while opening a tunnel, as httpcore's (httpx maps those in turn).

    As httpcore's own SOCKS proxy does: a proxy that refuses (a reply other than X'00', a
    failed authentication) is a `ProxyError`; a proxy that cannot be reached a `ConnectError`;
    no answer in time a `ConnectTimeout`. The message is socks5d's; the socks5d error is the
    httpcore error's cause (its context once httpcore's pool re-raises it `from None`).
    """
    try:
        yield
    except ProxyTimeout as exc:
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except Socks5Error as exc:  # TTLExpired too: a TimeoutError, but the proxy's answer
        raise httpcore.ProxyError(str(exc)) from exc
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc


@contextmanager
def _stream_errors(timed_out: type[Exception], broken: type[Exception]) -> Iterator[None]:
    """I/O errors on a tunnel's stream as httpcore's: `timed_out` or `broken`."""
    try:
        yield
    except TimeoutError as exc:
        raise timed_out(str(exc) or "timed out") from exc
    except _BROKEN as exc:
        raise broken(str(exc) or type(exc).__name__) from exc


def _readable(sock: socket.socket | None) -> bool:
    """Whether `sock` has bytes or EOF waiting: how the pool sees that the server closed an
    idle connection (httpcore's "is_readable")."""
    if sock is None or sock.fileno() == -1:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)


class _TunnelStream(httpcore.NetworkStream):
    """A blocking tunnel (or the TLS over it) as httpcore's network stream."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _stream_errors(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _stream_errors(httpcore.WriteTimeout, httpcore.WriteError):
            self._sock.settimeout(timeout)
            self._sock.sendall(buffer)

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # A failed handshake (a certificate that does not verify) is a ConnectError.
        with _stream_errors(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                self._sock.settimeout(timeout)
                tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
            except BaseException:
                self.close()
                raise
        return _TunnelStream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":  # the pool asks it for the ALPN protocol (h2)
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return _readable(self._sock)
        return None


class _AsyncTunnelStream(httpcore.AsyncNetworkStream):
    """A tunnel as an anyio byte stream (a socket stream, or TLS over one), as httpcore's
    async network stream."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _stream_errors(httpcore.ReadTimeout, httpcore.ReadError), anyio.fail_after(timeout):
            try:
                return await self._stream.receive(max_bytes)
            except anyio.EndOfStream:
                return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _stream_errors(httpcore.WriteTimeout, httpcore.WriteError), anyio.fail_after(timeout):
            await self._stream.send(buffer)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _stream_errors(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                with anyio.fail_after(timeout):
                    tls = await anyio.streams.tls.TLSStream.wrap(
                        self._stream,
                        server_side=False,
                        hostname=server_hostname,
                        ssl_context=ssl_context,
                        standard_compatible=False,  # HTTP frames its own end (as httpcore)
                    )
            except BaseException:
                await anyio.aclose_forcefully(self._stream)
                raise
        return _AsyncTunnelStream(tls)

    def get_extra_info(self, info: str) -> Any:
        attributes = anyio.abc.SocketAttribute
        if info == "ssl_object":
            return self._stream.extra(anyio.streams.tls.TLSAttribute.ssl_object, None)
        if info == "client_addr":
            return self._stream.extra(attributes.local_address, None)
        if info == "server_addr":
            return self._stream.extra(attributes.remote_address, None)
        if info == "socket":
            return self._stream.extra(attributes.raw_socket, None)
        if info == "is_readable":
            return _readable(self._stream.extra(attributes.raw_socket, None))
        return None


# --------------------------------------------------------------------------- backends


class SocksBackend(httpcore.NetworkBackend):
    """httpcore's blocking network backend through `proxy` (a URL, a `Proxy`, or a chain):
    every `connect_tcp` is a tunnel, opened with `socks5d.client.sync.connect`.
    """

    def __init__(self, proxy: ProxyLike | list[ProxyLike]) -> None:
        #: the proxies, first hop first
        self.chain: list[Proxy] = as_chain(proxy)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """A tunnel to `host`:`port`; `timeout` (httpx's connect timeout, or socks5d's
        default) bounds reaching the first proxy and each handshake. `local_address` and
        `socket_options` are not used (the transports' pools never set them)."""
        with _tunnel_errors():
            sock = sync.connect(host, port, proxy=[*self.chain], timeout=_bound(timeout))
        return _TunnelStream(sock)


class AsyncSocksBackend(httpcore.AsyncNetworkBackend):
    """httpcore's async network backend through `proxy`: every `connect_tcp` is a tunnel,
    opened with `socks5d.client.aio.connect` under asyncio (`socks5d.client.anyio.connect`
    under trio), as an anyio socket stream.
    """

    def __init__(self, proxy: ProxyLike | list[ProxyLike]) -> None:
        #: the proxies, first hop first
        self.chain: list[Proxy] = as_chain(proxy)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A tunnel to `host`:`port`, as `SocksBackend.connect_tcp`."""
        with _tunnel_errors():
            return _AsyncTunnelStream(await self._tunnel(host, port, _bound(timeout)))

    async def _tunnel(self, host: str, port: int, timeout: float) -> anyio.abc.ByteStream:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): the anyio driver of the same walk
            return await anyio_client.connect(host, port, proxy=[*self.chain], timeout=timeout)
        sock = await aio.connect(host, port, proxy=[*self.chain], timeout=timeout)
        try:
            return await anyio.abc.SocketStream.from_socket(sock)
        except BaseException:
            sock.close()
            raise

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


def _bound(timeout: float | None) -> float:
    """The handshake's time limit: httpx's connect timeout, or ours when httpx has none."""
    return DEFAULT_TIMEOUT if timeout is None else timeout


# --------------------------------------------------------------------------- transports
