"""Nmap's ncat as a SOCKS5 client: raw TCP through the tunnel to an echo server."""

from __future__ import annotations

import random

import pytest

from .conftest import crossed_proxy, only_record, proxy_netloc, run_tool

#: Enough bytes to need many reads each way; ncat half-closes after stdin ends.
PAYLOAD = random.Random(1928).randbytes(256 * 1024)


def ncat(server, *args: str, payload: bytes = PAYLOAD):
    return run_tool(
        ["ncat", "--proxy", proxy_netloc(server), "--proxy-type", "socks5", *args],
        input=payload,
    )


@pytest.mark.parametrize(
    ("users", "auth_arguments", "user"),
    [
        pytest.param(None, [], None, id="no-auth"),
        pytest.param({"alice": "secret"}, ["--proxy-auth", "alice:secret"], "alice", id="userpass"),
    ],
)
def test_ncat_echoes_every_byte_through_the_proxy(
    start_server, echo_server, users, auth_arguments, user
) -> None:
    server = start_server(users=users)
    result = ncat(server, *auth_arguments, echo_server.host, str(echo_server.port))
    assert result.returncode == 0, result.stderr
    assert result.stdout == PAYLOAD
    record = crossed_proxy(server, echo_server.destination)
    assert (record["bytes_up"], record["bytes_down"]) == (len(PAYLOAD), len(PAYLOAD))
    assert record["user"] == user


def test_ncat_with_proxy_dns_remote_lets_the_proxy_resolve(socks_server, echo_server) -> None:
    result = ncat(socks_server, "--proxy-dns", "remote", "localhost", str(echo_server.port))
    assert result.returncode == 0, result.stderr
    assert result.stdout == PAYLOAD
    crossed_proxy(socks_server, f"localhost:{echo_server.port}", min_bytes_down=len(PAYLOAD))


@pytest.mark.parametrize(
    ("auth_arguments", "outcome"),
    [
        pytest.param(["--proxy-auth", "alice:wrong"], "auth failed: wrong", id="wrong-password"),
        pytest.param([], "auth failed: no acceptable method (offered 0x00)", id="no-auth-only"),
    ],
)
def test_ncat_is_refused_by_a_userpass_server_without_the_right_password(
    start_server, echo_server, auth_arguments, outcome
) -> None:
    server = start_server(users={"alice": "secret"})
    result = ncat(server, *auth_arguments, echo_server.host, str(echo_server.port))
    assert result.returncode != 0
    assert result.stdout == b""
    record = only_record(server)
    assert record["outcome"].startswith(outcome), record
    assert record["destination"] is None
