"""httpx through socks5d's transports (`socks5d.client.httpx`) to socks5d with GSS-API
(RFC 1961): HTTPS to the test origin over a tunnel protected at confidentiality (a URL,
the blocking transport) and at integrity (a `Proxy` with `GssapiOptions`, the async
transport under asyncio and trio), the certificate checked against the test CA, the
requests pooled on one tunnel. The server's access record says who passed, how protected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from conftest import RunningServer
from interop.tls_origin import HELLO_BODY, TlsOrigin, tls_origin  # noqa: F401  (a fixture)
from socks5d.client.httpx import AsyncSocksTransport, SocksTransport
from socks5d.proto import ProtectionLevel
from socks5d.proxies import GssapiOptions, Proxy

from .dante import LEVELS
from .realm import KerberosRealm
from .traffic import ALICE, CLIENT_TIMEOUT, gssapi_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(start_server: Callable[..., RunningServer], krb5_realm: KerberosRealm) -> RunningServer:
    """socks5d on 127.0.0.1, GSSAPI only (service rcmd), every level allowed."""
    return start_server(
        auth=["gssapi"],
        gssapi={"keytab": str(krb5_realm.service_keytab), "levels": list(LEVELS)},
    )


def assert_passed(server: RunningServer, origin: TlsOrigin, level: str) -> None:
    """One CONNECT session to the origin (by name), authenticated as alice at `level`."""
    [record] = server.wait_records(1)
    assert (record["command"], record["reply"]) == ("connect", "succeeded"), record
    assert record["destination"] == f"localhost:{origin.port}", record
    assert (record["auth"], record["user"]) == (f"gssapi/{level}", ALICE), record
    assert record["bytes_up"] > 0 and record["bytes_down"] > 2 * len(HELLO_BODY), record


def test_sync_transport_through_a_confidentiality_protected_tunnel(
    server: RunningServer,
    tls_origin: TlsOrigin,  # noqa: F811  (the fixture imported above)
) -> None:
    transport = SocksTransport(
        gssapi_url(server.port, "confidentiality"), verify=tls_origin.client_context()
    )
    with httpx.Client(transport=transport, timeout=CLIENT_TIMEOUT) as client:
        responses = [client.get(tls_origin.url("/hello")) for _ in range(2)]

    assert [(r.status_code, r.content) for r in responses] == [(200, HELLO_BODY)] * 2
    assert tls_origin.connections() == 1  # both requests over the one protected tunnel
    assert_passed(server, tls_origin, "confidentiality")


@pytest.mark.parametrize("face", ["asyncio", "trio"])
def test_async_transport_with_gssapi_options_at_integrity(
    face: str,
    server: RunningServer,
    tls_origin: TlsOrigin,  # noqa: F811
) -> None:
    proxy = Proxy("127.0.0.1", server.port, gssapi=GssapiOptions(level=ProtectionLevel.INTEGRITY))

    async def main() -> list[Any]:
        transport = AsyncSocksTransport(proxy, verify=tls_origin.client_context())
        async with httpx.AsyncClient(transport=transport, timeout=CLIENT_TIMEOUT) as client:
            return [(await client.get(tls_origin.url("/hello"))).content for _ in range(2)]

    bodies = trio.run(main) if face == "trio" else asyncio.run(main())

    assert bodies == [HELLO_BODY] * 2
    assert tls_origin.connections() == 1
    assert_passed(server, tls_origin, "integrity")
