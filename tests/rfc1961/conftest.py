"""Fixtures for the GSSAPI (RFC 1961) tests: a Kerberos realm and Dante built with GSSAPI.

    def test_something(krb5_realm, dante_gssapi, tmp_path):
        krb5_realm.env                      # KRB5_* variables; also set in os.environ here
        krb5_realm.service_keytab           # rcmd/localhost, rcmd/127.0.0.1, rcmd/<host>
        krb5_realm.principal("alice")       # "alice@SOCKS5D.TEST"; alice holds a TGT
        dante_gssapi.sockd, dante_gssapi.libdsocks

`krb5_realm` is one realm for this package (tests/rfc1961): from the first test that asks
for it, os.environ holds the realm's variables (in-process python-gssapi and the socks5d
server thread see them); they are restored, and the KDC stopped, after the package's last
test. A test that changes the shared ccache (kdestroy, short tickets) must leave a fresh
TGT behind: `realm.kinit()` (`expired_ticket()` does).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .dante import DanteGssapi
from .realm import KerberosRealm


@pytest.fixture(scope="package")
def krb5_realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KerberosRealm]:
    """A started realm (KDC on 127.0.0.1) with a TGT for alice; its variables are in
    os.environ while this package's tests run.
    """
    with KerberosRealm(tmp_path_factory.mktemp("krb5")) as realm, realm.activate():
        realm.kinit()
        yield realm


@pytest.fixture(scope="session")
def dante_gssapi() -> DanteGssapi:
    """Dante built with GSSAPI by scripts/build-dante-gssapi.sh; fails when it is not."""
    return DanteGssapi.find()
