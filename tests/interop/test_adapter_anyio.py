"""`socks5d.client.anyio` against both proxies (socks5d and Dante's sockd), under asyncio and
trio: HTTPS to the TLS origin, its certificate verified against the test CA inside the tunnel,
and refused without it. Each backend runs through `anyio.run(..., backend=...)` from a plain
test, so no pytest plugin picks the loop; the proxy's own record proves the passage.
"""

from __future__ import annotations

import ssl
from typing import Any

import anyio
import pytest
import sniffio
from anyio.streams.tls import TLSStream

from socks5d.client import anyio as socks

from .conftest import Endpoint
from .tls_origin import HELLO_BODY, TlsOrigin

pytestmark = pytest.mark.timeout(60)

BACKENDS = ["asyncio", "trio"]


def through(proxy: Any) -> str:
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    return f"socks5h://{host}:{proxy.port}"


def crossed(proxy: Any, port: int) -> Any:
    """The proxy's record of a tunnel to localhost:`port` (socks5d logs the name, Dante the
    address it resolved it to)."""
    return proxy.connected(Endpoint("localhost" if proxy.name == "socks5d" else "127.0.0.1", port))


async def _get(proxy_url: str, origin: TlsOrigin, context: ssl.SSLContext, backend: str) -> bytes:
    assert sniffio.current_async_library() == backend
    stream = await socks.connect("localhost", origin.port, proxy=proxy_url, timeout=10)
    try:
        # not standard_compatible: the origin (Python's ssl) hangs up without close_notify
        tls = await TLSStream.wrap(
            stream, hostname="localhost", ssl_context=context, standard_compatible=False
        )
    except BaseException:
        await stream.aclose()
        raise
    try:
        await tls.send(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = b""
        with anyio.fail_after(10):
            while True:
                try:
                    response += await tls.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        return response
    finally:
        await tls.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_https_through_the_proxy_verifies_the_origin(
    proxy: Any, tls_origin: TlsOrigin, backend: str
) -> None:
    response = anyio.run(
        _get, through(proxy), tls_origin, tls_origin.client_context(), backend, backend=backend
    )
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(HELLO_BODY)
    assert crossed(proxy, tls_origin.port).bytes_down > len(HELLO_BODY)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_origin_the_context_does_not_trust_is_refused(
    proxy: Any, tls_origin: TlsOrigin, backend: str
) -> None:
    untrusting = ssl.create_default_context()  # the system's CAs: not the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        anyio.run(_get, through(proxy), tls_origin, untrusting, backend, backend=backend)
    assert crossed(proxy, tls_origin.port).bytes_down > 0  # the certificate came down the tunnel
