"""`socks5d connect` and `socks5d udp` through a GSS-API proxy: the proxy URL's `?gssapi=`
reaches the client library from the command line, and the protected bytes cross socks5d.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from client.conftest import HTTP_BODY, HTTP_REQUEST, fetch, http_origin, udp_echo
from client.test_cli_client import socks5d
from conftest import RunningServer

from .realm import KerberosRealm

__all__ = ["http_origin", "udp_echo"]  # fixtures used by name below

LEVELS = ("clear", "integrity", "confidentiality")


@pytest.fixture
def gssapi_server(
    start_server: Callable[..., RunningServer], krb5_realm: KerberosRealm
) -> RunningServer:
    return start_server(
        auth=["gssapi"],
        gssapi={"keytab": str(krb5_realm.service_keytab), "levels": list(LEVELS)},
    )


@pytest.mark.parametrize("level", LEVELS)
def test_connect_through_a_gssapi_proxy(
    gssapi_server: RunningServer, http_origin: tuple[str, int], level: str
) -> None:
    host, port = http_origin
    proxy = f"{gssapi_server.url('socks5h')}?gssapi={level}"
    done = socks5d("connect", "--proxy", proxy, host, str(port), stdin=HTTP_REQUEST)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == fetch(http_origin, HTTP_REQUEST)
    assert done.stdout.endswith(HTTP_BODY)
    record = gssapi_server.wait_records(1)[0]
    assert record["auth"] == f"gssapi/{level}", record
    assert record["user"] == "alice@SOCKS5D.TEST", record
    assert (record["destination"], record["bytes_up"]) == (f"{host}:{port}", len(HTTP_REQUEST))


@pytest.mark.parametrize("level", ["integrity", "confidentiality"])
def test_udp_through_a_gssapi_proxy(
    gssapi_server: RunningServer, udp_echo: Callable[[], tuple[str, int]], level: str
) -> None:
    host, port = udp_echo()
    proxy = f"{gssapi_server.url('socks5')}?gssapi={level}"
    done = socks5d("udp", "--proxy", proxy, host, str(port), stdin=b"one\ntwo\n")
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == b"one\ntwo\n"
    record = gssapi_server.wait_records(1)[0]
    assert (record["command"], record["auth"]) == ("udp_associate", f"gssapi/{level}"), record
    assert record["bytes_up"] == record["bytes_down"] == len(b"onetwo"), record


def test_a_refused_level_is_a_message_and_exit_status_1(
    start_server: Callable[..., RunningServer],
    krb5_realm: KerberosRealm,
    http_origin: tuple[str, int],
) -> None:
    server = start_server(
        auth=["gssapi"],
        gssapi={"keytab": str(krb5_realm.service_keytab), "levels": ["integrity"]},
    )
    host, port = http_origin
    proxy = f"{server.url('socks5h')}?gssapi=confidentiality"
    done = socks5d("connect", "--proxy", proxy, host, str(port), stdin=HTTP_REQUEST)
    assert done.returncode == 1
    assert b"GSS-API" in done.stderr, done.stderr
    assert done.stdout == b""
    record = server.wait_records(1)[0]
    assert record["outcome"].startswith("auth failed: protection level confidentiality"), record
