"""aiohttp through SOCKS proxies with `socks5d.client.aiohttp.SocksConnector`, against socks5d
and Dante's sockd (the `proxy` fixture): HTTPS to the TLS origin with its certificate checked
against the test CA through the tunnel (and refused by a context that does not trust it),
`ssl=False`, fingerprints, pooling of two requests over one tunnel, chains, user/password,
GSS-API with protection (a bridged socket), and how the proxy's refusals surface.

aiohttp is asyncio-only, so these tests run under asyncio alone. Every proof of passage is
the proxy's own (`proxy.connected`), waited for once the session has closed its tunnels.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from conftest import RunningServer
from rfc1961.realm import KerberosRealm
from socks5d.client import Proxy, aio
from socks5d.client.aiohttp import SocksConnector
from socks5d.errors import AuthFailed, ConnectionRefused, ProxyTimeout

from .conftest import Endpoint, crossed_proxy
from .proxies import Crossing, ProxyUnderTest
from .tls_origin import HELLO_BODY, TlsOrigin

pytestmark = pytest.mark.timeout(60)

#: Seconds for a whole request (connect, TLS, response); the tests finish far within it.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=10)


def socks5h(proxy: ProxyUnderTest | RunningServer, user: str = "", password: str = "") -> str:
    """The proxy's URL with remote name resolution (and credentials, when given)."""
    credentials = f"{user}:{password}@" if user else ""
    return f"socks5h://{credentials}{proxy.host}:{proxy.port}"


def by_name(origin: TlsOrigin) -> Endpoint:
    """The origin as a socks5h tunnel names it: "localhost", as the URL does, unresolved."""
    return Endpoint("localhost", origin.port)


async def get(connector: SocksConnector, url: str, **request: Any) -> tuple[int, bytes]:
    """GET `url` in a session of its own over `connector`; status and body. The session (and
    every tunnel it pooled) is closed on return."""
    async with (
        aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session,
        session.get(url, **request) as response,
    ):
        return response.status, await response.read()


async def proof(proxy: ProxyUnderTest, origin: TlsOrigin) -> Crossing:
    """`proxy.connected(...)` for a tunnel to `origin` named "localhost", waited for off the
    event loop (it blocks). socks5d's record names the destination as the request did (the
    proof that the name crossed unresolved); Dante logs the address it resolved it to.
    """
    destination = by_name(origin) if proxy.name == "socks5d" else origin.endpoint
    return await asyncio.to_thread(proxy.connected, destination)


# --------------------------------------------------------------------------- TLS through the tunnel


async def test_https_get_verifies_the_certificate_against_the_test_ca_through_the_proxy(
    proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    connector = SocksConnector(proxy=socks5h(proxy))
    status, body = await get(connector, tls_origin.url("/hello"), ssl=tls_origin.client_context())
    assert (status, body) == (200, HELLO_BODY)
    crossing = await proof(proxy, tls_origin)  # the name crossed, unresolved
    assert crossing.bytes_up > 0 and crossing.bytes_down > len(HELLO_BODY)
    assert tls_origin.connections() == 1


async def test_a_context_that_does_not_trust_the_test_ca_fails_verification(
    proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    connector = SocksConnector(proxy=socks5h(proxy))
    untrusting = ssl.create_default_context()  # the system's CAs: not the test CA
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as caught:
        await get(connector, tls_origin.url("/hello"), ssl=untrusting)
    assert isinstance(caught.value.certificate_error, ssl.SSLCertVerificationError)
    crossing = await proof(proxy, tls_origin)
    assert crossing.bytes_down > 0  # the origin's certificate came back through the tunnel


async def test_the_connectors_own_ssl_context_is_used_for_every_request(
    proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    connector = SocksConnector(proxy=socks5h(proxy), ssl=tls_origin.client_context())
    assert await get(connector, tls_origin.url("/hello")) == (200, HELLO_BODY)
    await proof(proxy, tls_origin)


async def test_default_verification_refuses_the_test_certificate(
    proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    connector = SocksConnector(proxy=socks5h(proxy))  # ssl=True: verify with the system CAs
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(connector, tls_origin.url("/hello"))
    await proof(proxy, tls_origin)


async def test_ssl_false_skips_verification_but_still_speaks_tls(
    proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    connector = SocksConnector(proxy=socks5h(proxy))
    assert await get(connector, tls_origin.url("/hello"), ssl=False) == (200, HELLO_BODY)
    await proof(proxy, tls_origin)
    assert tls_origin.connections() == 1  # an https origin answered: TLS it was


async def test_fingerprint_of_the_origins_certificate_is_checked_inside_the_tunnel(
    socks_server: RunningServer, tls_origin: TlsOrigin
) -> None:
    url = tls_origin.url("/hello")
    _, writer = await aio.open_connection(
        "localhost", tls_origin.port, proxy=socks5h(socks_server), ssl=tls_origin.client_context()
    )
    certificate = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    right = aiohttp.Fingerprint(hashlib.sha256(certificate).digest())
    wrong = aiohttp.Fingerprint(hashlib.sha256(b"some other certificate").digest())
    assert await get(SocksConnector(proxy=socks5h(socks_server)), url, ssl=right) == (
        200,
        HELLO_BODY,
    )
    with pytest.raises(aiohttp.ServerFingerprintMismatch):
        await get(SocksConnector(proxy=socks5h(socks_server)), url, ssl=wrong)
    records = await asyncio.to_thread(socks_server.wait_records, 3)
    assert [r["destination"] for r in records] == [by_name(tls_origin).destination] * 3


# --------------------------------------------------------------------------- pooling


async def test_two_requests_share_one_pooled_tunnel(
    proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    connector = SocksConnector(proxy=socks5h(proxy), ssl=tls_origin.client_context())
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        for _ in range(2):
            async with session.get(tls_origin.url("/hello")) as response:
                assert (response.status, await response.read()) == (200, HELLO_BODY)
    assert tls_origin.connections() == 1  # keep-alive: one TCP connection, one tunnel
    crossing = await proof(proxy, tls_origin)
    assert crossing.bytes_down > 2 * len(HELLO_BODY)


async def test_force_close_opens_a_tunnel_per_request(
    socks_server: RunningServer, tls_origin: TlsOrigin
) -> None:
    connector = SocksConnector(
        proxy=socks5h(socks_server), ssl=tls_origin.client_context(), force_close=True
    )
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        for _ in range(2):
            async with session.get(tls_origin.url("/hello")) as response:
                assert await response.read() == HELLO_BODY
    assert tls_origin.connections() == 2
    records = await asyncio.to_thread(socks_server.wait_records, 2)
    assert [r["destination"] for r in records] == [by_name(tls_origin).destination] * 2


# --------------------------------------------------------------------------- proxy forms


async def test_chain_of_two_socks5d_carries_the_request_through_both(
    start_server: Callable[..., RunningServer], tls_origin: TlsOrigin
) -> None:
    first, second = start_server(), start_server()
    chain: list[str | Proxy] = [socks5h(first), Proxy(second.host, second.port)]
    connector = SocksConnector(proxy=chain, ssl=tls_origin.client_context())
    assert await get(connector, tls_origin.url("/hello")) == (200, HELLO_BODY)
    await asyncio.to_thread(crossed_proxy, second, by_name(tls_origin).destination)
    hop = await asyncio.to_thread(crossed_proxy, first, f"{second.host}:{second.port}")
    assert hop["bytes_down"] > len(HELLO_BODY)


async def test_user_and_password_in_the_url_log_in_to_the_proxy(
    start_server: Callable[..., RunningServer], tls_origin: TlsOrigin
) -> None:
    server = start_server(users={"alice": "s3cret:/@"})
    url = f"socks5h://alice:s3cret%3A%2F%40@{server.host}:{server.port}"  # percent-encoded
    connector = SocksConnector(proxy=url, ssl=tls_origin.client_context())
    assert await get(connector, tls_origin.url("/hello")) == (200, HELLO_BODY)
    record = await asyncio.to_thread(crossed_proxy, server, by_name(tls_origin).destination)
    assert (record["user"], record["auth"]) == ("alice", "userpass")


async def test_a_wrong_password_is_a_proxy_connection_error_caused_by_auth_failed(
    start_server: Callable[..., RunningServer], tls_origin: TlsOrigin
) -> None:
    server = start_server(users={"alice": "secret"})
    connector = SocksConnector(proxy=socks5h(server, "alice", "wrong"))
    with pytest.raises(aiohttp.ClientProxyConnectionError) as caught:
        await get(connector, tls_origin.url("/hello"), ssl=tls_origin.client_context())
    assert isinstance(caught.value.__cause__, AuthFailed)
    assert tls_origin.connections() == 0


async def test_a_refused_destination_is_a_proxy_connection_error_with_the_reply(
    proxy: ProxyUnderTest, closed_port: Endpoint
) -> None:
    connector = SocksConnector(proxy=socks5h(proxy))
    with pytest.raises(aiohttp.ClientProxyConnectionError) as caught:
        await get(connector, closed_port.url("/"))
    cause = caught.value.__cause__
    assert isinstance(cause, ConnectionRefused), cause
    assert "X'05'" in str(caught.value)  # the message names the proxy's reply


async def test_an_unreachable_proxy_is_a_proxy_connection_error_keeping_errno(
    closed_port: Endpoint, tls_origin: TlsOrigin
) -> None:
    connector = SocksConnector(proxy=f"socks5h://{closed_port.netloc}")
    with pytest.raises(aiohttp.ClientProxyConnectionError) as caught:
        await get(connector, tls_origin.url("/hello"))
    cause = caught.value.__cause__
    assert isinstance(cause, ConnectionRefusedError), cause
    assert caught.value.errno == cause.errno  # kept, where the client library keeps it
    assert f"could not connect to proxy {closed_port.netloc}" in str(caught.value)
    assert tls_origin.connections() == 0


def test_options_only_a_direct_connection_could_use_are_refused() -> None:
    async def construct(**options: Any) -> None:
        await SocksConnector(proxy="socks5h://127.0.0.1:1080", **options).close()

    for name, value in (("local_addr", ("127.0.0.1", 0)), ("socket_factory", print)):
        with pytest.raises(TypeError, match=f"{name} is for direct connections only"):
            asyncio.run(construct(**{name: value}))


def test_a_malformed_proxy_url_fails_when_the_connector_is_made() -> None:
    async def construct() -> None:
        SocksConnector(proxy="ftp://127.0.0.1:21")

    with pytest.raises(ValueError, match="unsupported proxy scheme 'ftp'"):
        asyncio.run(construct())


def test_importing_the_client_library_does_not_import_aiohttp() -> None:
    code = "import sys, socks5d.client, socks5d.client.sync; print('aiohttp' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- GSS-API


@pytest.fixture(scope="module")
def krb5_realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KerberosRealm]:
    """A Kerberos realm (tests/rfc1961/realm.py) for this module, alice holding a TGT."""
    with KerberosRealm(tmp_path_factory.mktemp("krb5")) as realm, realm.activate():
        realm.kinit()
        yield realm


async def test_gssapi_confidentiality_tunnel_is_a_bridged_socket_aiohttp_takes(
    start_server: Callable[..., RunningServer], krb5_realm: KerberosRealm, tls_origin: TlsOrigin
) -> None:
    server = start_server(
        auth=["gssapi"],
        gssapi={"keytab": str(krb5_realm.service_keytab), "levels": ["confidentiality"]},
    )
    url = f"socks5h://{server.host}:{server.port}?gssapi=confidentiality"
    connector = SocksConnector(proxy=url, ssl=tls_origin.client_context())
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        for _ in range(2):
            async with session.get(tls_origin.url("/hello")) as response:
                assert await response.read() == HELLO_BODY
    assert tls_origin.connections() == 1  # pooled over the bridge as over a TCP socket
    record = await asyncio.to_thread(crossed_proxy, server, by_name(tls_origin).destination)
    assert (record["auth"], record["user"]) == (
        "gssapi/confidentiality",
        krb5_realm.principal("alice"),
    )


async def test_a_silent_proxy_is_a_connection_timeout_caused_by_proxy_timeout() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody answers
    with silent:
        port = silent.getsockname()[1]
        connector = SocksConnector(proxy=f"socks5h://127.0.0.1:{port}")
        quick = aiohttp.ClientTimeout(total=20, sock_connect=0.5)
        async with aiohttp.ClientSession(connector=connector, timeout=quick) as session:
            with pytest.raises(aiohttp.ConnectionTimeoutError) as caught:
                await session.get("https://localhost:443/")
    assert isinstance(caught.value.__cause__, ProxyTimeout), caught.value.__cause__
