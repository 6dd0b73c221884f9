"""requests through `socks5d.client.requests.SocksAdapter`, against socks5d and Dante's sockd
(the `proxy` fixture): HTTPS to the test-CA origin verified through the tunnel (and refused
with a trust store that lacks the CA), two requests over one pooled tunnel, plain HTTP, chains,
RFC 1929 credentials, a client certificate, GSS-API with confidentiality (a bridged socket),
and each failure surfacing as requests' exception with our message.

Every success is proved by the proxy's own record of the tunnel (`proxy.connected`), not only
by the body: the origins are on loopback, where a client that skipped the proxy would succeed
as well.
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from urllib3.exceptions import InsecureRequestWarning
from urllib3.exceptions import ProxyError as Urllib3ProxyError

from socks5d.client import GssapiOptions, ProtectionLevel, Proxy
from socks5d.client.requests import SocksAdapter
from socks5d.errors import AuthFailed, ConnectionRefused, ProxyTimeout

from .conftest import SMALL_BODY, Endpoint, RecordingServer
from .proxies import DanteServer, ProxyUnderTest, Socks5dUnderTest
from .tls_origin import HELLO_BODY, TlsOrigin

pytestmark = pytest.mark.timeout(60)

#: requests' timeout in these tests: reaching the proxy, each handshake, each read.
REQUEST_TIMEOUT = 10.0
#: The RFC 1929 account of socks5d in the credential tests.
USER, PASSWORD = "alice", "s3cret:with@signs"
#: Environment variables through which requests would pick another proxy or trust store.
_REQUESTS_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE")


def socks5h_url(proxy: ProxyUnderTest | RecordingServer) -> str:
    """`socks5h://HOST:PORT` of a proxy under test: names cross it, it resolves them."""
    return f"socks5h://{Endpoint(proxy.host, proxy.port).netloc}"


def origin_as_recorded(proxy: ProxyUnderTest | RecordingServer, port: int) -> Endpoint:
    """The destination `localhost`:`port` as `proxy` records its tunnel: socks5d logs the name
    the client sent, Dante the address it resolved the name to (the origins are IPv4)."""
    return Endpoint("localhost" if not isinstance(proxy, DanteServer) else "127.0.0.1", port)


def session_through(proxy: Any, **adapter_options: Any) -> requests.Session:
    """A session whose http:// and https:// URLs go through one `SocksAdapter(proxy=proxy)`."""
    session = requests.Session()
    adapter = SocksAdapter(proxy=proxy, **adapter_options)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA bundle from the environment: each test sets what it means."""
    for name in _REQUESTS_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# --------------------------------------------------------------------------- HTTPS, verified


def test_https_get_verifies_the_origin_against_the_test_ca_through_the_proxy(
    proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    with session_through(socks5h_url(proxy)) as session:
        response = session.get(
            tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
        )
        assert response.status_code == 200
        assert response.content == HELLO_BODY

    crossing = proxy.connected(origin_as_recorded(proxy, tls_origin.port))
    assert crossing.bytes_down > len(HELLO_BODY)  # the body, inside TLS records


def test_https_with_the_default_trust_store_fails_certificate_verification(
    proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    with (
        session_through(socks5h_url(proxy)) as session,
        pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        session.get(tls_origin.url("/hello"), timeout=REQUEST_TIMEOUT)

    # The tunnel was made and the origin's certificate came back through it: the
    # certificate is what failed, checked at this end of the tunnel.
    crossing = proxy.connected(origin_as_recorded(proxy, tls_origin.port))
    assert crossing.bytes_down > 0


def test_verify_false_accepts_the_untrusted_certificate(
    socks_server: RecordingServer, tls_origin: TlsOrigin
) -> None:
    with (
        session_through(socks5h_url(socks_server)) as session,
        pytest.warns(InsecureRequestWarning),  # urllib3's, as for any unverified request
    ):
        response = session.get(tls_origin.url("/hello"), verify=False, timeout=REQUEST_TIMEOUT)
        assert response.content == HELLO_BODY

    Socks5dUnderTest(socks_server).connected(origin_as_recorded(socks_server, tls_origin.port))


def test_two_requests_share_one_pooled_tunnel(proxy: ProxyUnderTest, tls_origin: TlsOrigin) -> None:
    with session_through(socks5h_url(proxy)) as session:
        bodies = [
            session.get(
                tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
            ).content
            for _ in range(2)
        ]

    assert bodies == [HELLO_BODY, HELLO_BODY]
    assert tls_origin.connections() == 1
    crossing = proxy.connected(origin_as_recorded(proxy, tls_origin.port))
    assert crossing.bytes_down > 2 * len(HELLO_BODY)  # both responses rode the one tunnel


# --------------------------------------------------------------------------- plain HTTP


def test_plain_http_get_goes_through_the_proxy(
    proxy: ProxyUnderTest, origins: dict[str, Endpoint]
) -> None:
    origin = origins["127.0.0.1"]

    with session_through(socks5h_url(proxy)) as session:
        response = session.get(origin.url("/small"), timeout=REQUEST_TIMEOUT)
        assert response.status_code == 200
        assert response.content == SMALL_BODY

    proxy.connected(origin)


def test_proxies_from_the_environment_or_the_call_do_not_reroute_the_adapter(
    proxy: ProxyUnderTest,
    tls_origin: TlsOrigin,
    origins: dict[str, Endpoint],
    closed_port: Endpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # requests would hand these to the adapter as `proxies`: the request would go to a port
    # that refuses, or (plain HTTP) ask for the absolute URL, which the origin does not serve.
    nowhere = f"http://{closed_port.netloc}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, nowhere)
    origin = origins["127.0.0.1"]

    with session_through(socks5h_url(proxy)) as session:
        secure = session.get(
            tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
        )
        plain = session.get(
            origin.url("/small"), proxies={"http": nowhere}, timeout=REQUEST_TIMEOUT
        )
        assert (secure.content, plain.content) == (HELLO_BODY, SMALL_BODY)

    proxy.connected(origin_as_recorded(proxy, tls_origin.port))
    proxy.connected(origin)


def test_closing_the_session_ends_its_pooled_tunnels(
    socks_server: RecordingServer, tls_origin: TlsOrigin
) -> None:
    session = session_through(socks5h_url(socks_server))
    response = session.get(
        tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
    )

    session.close()

    # socks5d logs a tunnel when it ends; the response (which refers to its pool) lives on.
    Socks5dUnderTest(socks_server).connected(origin_as_recorded(socks_server, tls_origin.port))
    assert response.content == HELLO_BODY


# --------------------------------------------------------------------------- proxy forms


def test_chain_of_two_proxies_reaches_the_origin_through_both(
    start_server: Any, proxy: ProxyUnderTest, tls_origin: TlsOrigin
) -> None:
    first = start_server()
    # A Proxy object and a URL: both forms in one chain.
    chain: list[Proxy | str] = [Proxy(first.host, first.port), socks5h_url(proxy)]

    with session_through(chain) as session:
        response = session.get(
            tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
        )
        assert response.content == HELLO_BODY

    proxy.connected(origin_as_recorded(proxy, tls_origin.port))
    Socks5dUnderTest(first).connected(Endpoint(proxy.host, proxy.port))


def test_username_and_password_are_sent_to_the_proxy(
    start_server: Any, tls_origin: TlsOrigin
) -> None:
    server = start_server(users={USER: PASSWORD})
    credentials = Proxy(server.host, server.port, username=USER, password=PASSWORD)

    with session_through(credentials) as session:
        response = session.get(
            tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
        )
        assert response.content == HELLO_BODY

    record = Socks5dUnderTest(server).wait_record(lambda r: r["command"] == "connect")
    assert (record["user"], record["reply"]) == (USER, "succeeded"), record


def test_wrong_password_raises_proxy_error_with_auth_failed(
    start_server: Any, tls_origin: TlsOrigin
) -> None:
    server = start_server(users={USER: PASSWORD})
    url = server.url("socks5h", user=USER, password="wrong")

    with (
        session_through(url) as session,
        pytest.raises(requests.exceptions.ProxyError, match=f"proxy {server.host}") as raised,
    ):
        session.get(tls_origin.url("/hello"), timeout=REQUEST_TIMEOUT)

    assert isinstance(socks_error(raised.value), AuthFailed)
    assert tls_origin.connections() == 0


def test_source_address_is_where_the_tunnel_to_the_first_proxy_starts(
    socks_server: RecordingServer, tls_origin: TlsOrigin
) -> None:
    adapter = SocksAdapter(proxy=socks5h_url(socks_server))
    adapter.init_poolmanager(1, 1, source_address=("127.0.0.2", 0))
    with requests.Session() as session:
        session.mount("https://", adapter)
        response = session.get(
            tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
        )
        assert response.content == HELLO_BODY

    record = Socks5dUnderTest(socks_server).wait_record(lambda r: r["command"] == "connect")
    assert record["client"].startswith("127.0.0.2:"), record


def test_a_pickled_adapter_keeps_its_proxy(
    socks_server: RecordingServer, tls_origin: TlsOrigin
) -> None:
    adapter = pickle.loads(pickle.dumps(SocksAdapter(proxy=socks5h_url(socks_server))))
    with requests.Session() as session:
        session.mount("https://", adapter)
        response = session.get(
            tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
        )
        assert response.content == HELLO_BODY

    Socks5dUnderTest(socks_server).connected(origin_as_recorded(socks_server, tls_origin.port))


def test_something_that_is_not_a_proxy_is_refused_when_the_adapter_is_made() -> None:
    with pytest.raises(TypeError, match="proxy must be a proxy URL"):
        SocksAdapter(proxy=None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- failures


def socks_error(exc: requests.exceptions.RequestException) -> BaseException:
    """What our client raised under requests' exception: requests wraps urllib3's
    MaxRetryError, whose reason is the adapter's urllib3 ProxyError."""
    reason = exc.args[0].reason
    assert isinstance(reason, Urllib3ProxyError), reason
    return reason.original_error


def test_refused_destination_raises_proxy_error_naming_the_hop(
    proxy: ProxyUnderTest, closed_port: Endpoint
) -> None:
    hop = Endpoint(proxy.host, proxy.port).netloc
    with (
        session_through(socks5h_url(proxy)) as session,
        pytest.raises(requests.exceptions.ProxyError) as raised,
    ):
        session.get(closed_port.url("/"), timeout=REQUEST_TIMEOUT)

    message = str(raised.value)
    assert f"proxy {hop} replied X'05' Connection refused for {closed_port.netloc}" in message
    assert isinstance(raised.value, requests.exceptions.ConnectionError)
    assert isinstance(socks_error(raised.value), ConnectionRefused)


def test_unreachable_proxy_raises_proxy_error_naming_it(
    closed_port: Endpoint, tls_origin: TlsOrigin
) -> None:
    with (
        session_through(f"socks5h://{closed_port.netloc}") as session,
        pytest.raises(requests.exceptions.ProxyError) as raised,
    ):
        session.get(tls_origin.url("/hello"), timeout=REQUEST_TIMEOUT)

    assert f"could not connect to proxy {closed_port.netloc}" in str(raised.value)
    assert isinstance(socks_error(raised.value), ConnectionRefusedError)
    assert tls_origin.connections() == 0


def test_silent_proxy_raises_connect_timeout_within_the_request_timeout(
    destination: Any, tls_origin: TlsOrigin
) -> None:
    # A listener nobody accepts on: the kernel completes the TCP handshake, nothing answers.
    silent = Endpoint(*destination.getsockname()[:2])
    with (
        session_through(f"socks5h://{silent.netloc}") as session,
        pytest.raises(requests.exceptions.ConnectTimeout, match="no reply from proxy") as raised,
    ):
        session.get(tls_origin.url("/hello"), timeout=(0.5, REQUEST_TIMEOUT))

    assert isinstance(raised.value.args[0].reason.__cause__, ProxyTimeout)
    assert "within 0.5 s" in str(raised.value)


# --------------------------------------------------------------------------- client certificate


#: The common name of the client certificate the mutual-TLS origin answers with.
CLIENT_NAME = "socks5d requests adapter test client"


@dataclass
class MutualTlsOrigin:
    """An HTTPS origin for one connection that requires a client certificate from its CA and
    answers any request with the certificate's common name."""

    port: int
    ca_file: Path
    client_cert: tuple[str, str]

    def url(self) -> str:
        return f"https://localhost:{self.port}/"


def _answer_one_client(listener: socket.socket, context: ssl.SSLContext) -> None:
    # A client without a certificate fails the handshake: the test's point, not an error here.
    with contextlib.suppress(OSError), listener.accept()[0] as raw:
        raw.settimeout(REQUEST_TIMEOUT)
        with context.wrap_socket(raw, server_side=True) as tls:
            request = b""
            while not request.endswith(b"\r\n\r\n"):  # a GET: no body follows the head
                if not (chunk := tls.recv(65_536)):
                    return
                request += chunk
            subject = dict(field[0] for field in tls.getpeercert()["subject"])
            body = subject["commonName"].encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            tls.sendall(head.encode() + b"\r\n" + body)


@pytest.fixture
def mtls_origin(tmp_path: Path) -> Iterator[MutualTlsOrigin]:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    ca_file, cert_file, key_file = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("client.socks5d.test", common_name=CLIENT_NAME)
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(REQUEST_TIMEOUT)
        thread = threading.Thread(target=_answer_one_client, args=(listener, context))
        thread.start()
        try:
            port = listener.getsockname()[1]
            yield MutualTlsOrigin(port, ca_file, (str(cert_file), str(key_file)))
        finally:
            thread.join()


def test_client_certificate_is_presented_through_the_tunnel(
    socks_server: RecordingServer, mtls_origin: MutualTlsOrigin
) -> None:
    with session_through(socks5h_url(socks_server)) as session:
        response = session.get(
            mtls_origin.url(),
            verify=str(mtls_origin.ca_file),
            cert=mtls_origin.client_cert,
            timeout=REQUEST_TIMEOUT,
        )
        assert response.content == CLIENT_NAME.encode()

    Socks5dUnderTest(socks_server).connected(origin_as_recorded(socks_server, mtls_origin.port))


def test_without_the_client_certificate_the_origin_refuses(
    socks_server: RecordingServer, mtls_origin: MutualTlsOrigin
) -> None:
    # TLS 1.3: the origin's refusal (an alert) may come after the client's side of the
    # handshake is done, so requests reports it as an SSLError or as a broken connection.
    with (
        session_through(socks5h_url(socks_server)) as session,
        pytest.raises(requests.exceptions.ConnectionError),
    ):
        session.get(mtls_origin.url(), verify=str(mtls_origin.ca_file), timeout=REQUEST_TIMEOUT)

    # It was the origin that refused, at the far end of the tunnel.
    Socks5dUnderTest(socks_server).connected(origin_as_recorded(socks_server, mtls_origin.port))


# --------------------------------------------------------------------------- GSS-API


@pytest.fixture(scope="module")
def krb5_realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Kerberos realm (tests/rfc1961/realm.py) for this module: alice holds a TGT; the
    realm's variables are in os.environ until the module's last test."""
    from rfc1961.realm import KerberosRealm

    with KerberosRealm(tmp_path_factory.mktemp("krb5")) as realm, realm.activate():
        realm.kinit()
        yield realm


def test_gssapi_confidentiality_carries_two_pooled_https_requests(
    start_server: Any, krb5_realm: Any, tls_origin: TlsOrigin
) -> None:
    server = start_server(
        auth=["gssapi"],
        gssapi={"keytab": str(krb5_realm.service_keytab), "levels": ["confidentiality"]},
    )
    protected = Proxy(
        server.host, server.port, gssapi=GssapiOptions(level=ProtectionLevel.CONFIDENTIALITY)
    )

    with session_through(protected) as session:
        bodies = [
            session.get(
                tls_origin.url("/hello"), verify=str(tls_origin.ca_file), timeout=REQUEST_TIMEOUT
            ).content
            for _ in range(2)
        ]

    assert bodies == [HELLO_BODY, HELLO_BODY]
    assert tls_origin.connections() == 1
    record = Socks5dUnderTest(server).wait_record(lambda r: r["command"] == "connect")
    assert record["auth"] == "gssapi/confidentiality", record
    assert record["user"] == krb5_realm.principal("alice"), record
    assert record["bytes_down"] > 2 * len(HELLO_BODY), record


# --------------------------------------------------------------------------- packaging


def test_importing_the_client_does_not_import_requests() -> None:
    code = (
        "import sys, socks5d.client, socks5d.client.sync; "
        "print(sorted({'requests', 'urllib3'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=REQUEST_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
