"""The GSSAPI test infrastructure itself: the throwaway realm works in-process with
python-gssapi, and Dante's own client and server (built with GSSAPI) talk to each other
through it at each protection level. If these fail, GSSAPI tests of socks5d prove nothing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gssapi
import pytest
from gssapi.raw.misc import GSSError

from interop.conftest import EchoServer, Endpoint, _EchoHandler, serving

from .dante import LEVELS, DanteGssapi, GssapiDanteServer, socksify_env
from .realm import KerberosRealm

#: Upper bound for one client run through the proxy.
CLIENT_TIMEOUT = 20.0
PAYLOAD = b"through Dante with GSSAPI\n"

#: A single-threaded client (Dante's library is not made for threads sharing a GSSAPI socket):
#: send argv[3] to argv[1]:argv[2], print what comes back, close.
_CLIENT = """
import socket, sys
payload = sys.argv[3].encode()
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15) as sock:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload) and (chunk := sock.recv(4096)):
        received += chunk
sys.stdout.buffer.write(received)
"""


@pytest.fixture
def echo() -> Iterator[Endpoint]:
    with EchoServer(("127.0.0.1", 0), _EchoHandler) as server, serving(server):
        yield Endpoint("127.0.0.1", server.server_address[1])


def _service_name(service: str = "rcmd", host: str = "localhost") -> gssapi.Name:
    return gssapi.Name(f"{service}@{host}", gssapi.NameType.hostbased_service)


def _handshake(initiator: gssapi.SecurityContext, acceptor: gssapi.SecurityContext) -> None:
    token = initiator.step()
    while not (initiator.complete and acceptor.complete):
        reply = acceptor.step(token)
        if initiator.complete:
            break
        token = initiator.step(reply)


def test_python_gssapi_in_process(krb5_realm: KerberosRealm) -> None:
    flags = gssapi.RequirementFlag.mutual_authentication | gssapi.RequirementFlag.integrity
    initiator = gssapi.SecurityContext(name=_service_name(), usage="initiate", flags=flags)
    acceptor = gssapi.SecurityContext(usage="accept", creds=gssapi.Credentials(usage="accept"))
    _handshake(initiator, acceptor)
    assert initiator.complete and acceptor.complete
    assert str(acceptor.initiator_name) == krb5_realm.principal("alice")
    assert str(acceptor.target_name) == krb5_realm.principal("rcmd/localhost")

    for confidential in (False, True):
        wrapped = initiator.wrap(b"level byte", confidential)
        assert wrapped.encrypted is confidential
        unwrapped = acceptor.unwrap(wrapped.message)
        assert (unwrapped.message, unwrapped.encrypted) == (b"level byte", confidential)
    reply = acceptor.wrap(b"\x02", False)
    assert initiator.unwrap(reply.message).message == b"\x02"


def test_keytab_from_store_for_a_second_service(krb5_realm: KerberosRealm) -> None:
    keytab = krb5_realm.add_service("socks", keytab=krb5_realm.directory / "socks.keytab")
    initiator = gssapi.SecurityContext(name=_service_name("socks", "127.0.0.1"), usage="initiate")
    creds = gssapi.Credentials(usage="accept", store={"keytab": f"FILE:{keytab}"})
    acceptor = gssapi.SecurityContext(usage="accept", creds=creds)
    _handshake(initiator, acceptor)
    assert str(acceptor.target_name) == krb5_realm.principal("socks/127.0.0.1")


def test_stale_keytab_is_rejected(krb5_realm: KerberosRealm) -> None:
    krb5_realm.add_service("stale")
    stale = krb5_realm.stale_keytab("stale")
    token = gssapi.SecurityContext(name=_service_name("stale"), usage="initiate").step()
    creds = gssapi.Credentials(usage="accept", store={"keytab": f"FILE:{stale}"})
    acceptor = gssapi.SecurityContext(usage="accept", creds=creds)
    # python-gssapi defers an acceptor's error when there is an error token to send: step()
    # returns the KRB-ERROR, and the error is raised by the next use of the context.
    with pytest.raises(GSSError, match="kvno"):
        acceptor.step(token)
        assert acceptor.complete
    current = gssapi.SecurityContext(usage="accept", creds=gssapi.Credentials(usage="accept"))
    current.step(token)
    assert current.complete


def test_expired_ticket_is_refused_by_the_initiator(krb5_realm: KerberosRealm) -> None:
    with krb5_realm.expired_ticket(), pytest.raises(GSSError, match="expired"):
        gssapi.SecurityContext(name=_service_name(), usage="initiate").step()
    assert krb5_realm.has_valid_ticket()


@pytest.mark.parametrize("level", LEVELS)
def test_socksify_through_sockd(
    level: str,
    krb5_realm: KerberosRealm,
    dante_gssapi: DanteGssapi,
    echo: Endpoint,
    tmp_path: Path,
) -> None:
    server = GssapiDanteServer(dante_gssapi, krb5_realm, tmp_path, levels=(level,)).start()
    try:
        env = socksify_env(krb5_realm, dante_gssapi, tmp_path, server.port, level)
        result = subprocess.run(
            [sys.executable, "-c", _CLIENT, echo.host, str(echo.port), PAYLOAD.decode()],
            capture_output=True,
            env=env,
            timeout=CLIENT_TIMEOUT,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace") + server.log()
        assert result.stdout == PAYLOAD
        crossing = server.connected(echo)
        assert (crossing.bytes_up, crossing.bytes_down) == (len(PAYLOAD), len(PAYLOAD))
        assert server.gssapi_session() == (level, krb5_realm.principal("alice"))
        # Dante's client names the proxy by its address's reverse lookup: 127.0.0.1 is
        # "localhost", and the KDC issued alice a ticket for rcmd/localhost.
        issued = f"alice@{krb5_realm.realm} for {krb5_realm.principal('rcmd/localhost')}"
        assert issued in krb5_realm.kdc_log.read_text()
    finally:
        server.stop()
