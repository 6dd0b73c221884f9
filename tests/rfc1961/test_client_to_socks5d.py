"""socks5d's client (asyncio and blocking) against socks5d's own server with GSSAPI: CONNECT,
BIND and UDP ASSOCIATE at each protection level, chains with a protected hop, the principal
in `[[socks]]` rules, and a service name other than rcmd.

Client and server are the same code base here, so agreeing with each other proves little
on its own (test_client_to_dante.py holds the client to Dante). What these tests add: the
server's access record for every session (auth=gssapi/LEVEL, user=the principal, the
destination and the byte counts it relayed), and for CONNECT a tap on the wire between the
two, which shows RFC 1961's framing (MTYP 1 tokens, one MTYP 2 level message, then nothing
but MTYP 3 tokens at integrity and confidentiality, or plain SOCKS at clear) and that
confidentiality hides the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningServer
from interop.conftest import Endpoint, only_record
from socks5d.client import aio, sync
from socks5d.errors import AuthFailed, NotAllowed
from socks5d.proto import ProtectionLevel
from socks5d.proxies import GssapiOptions, Proxy

from .dante import LEVELS
from .realm import KerberosRealm
from .traffic import (
    ALICE,
    CLIENT_TIMEOUT,
    EXPECTED,
    FACES,
    FROM_PEER,
    PAYLOAD,
    TO_PEER,
    TRANSFER_TIMEOUT,
    bind_and_relay,
    echo_payload,
    gssapi_url,
    tcp_echo_server,
    udp_echo_server,
    udp_round_trips,
)

#: UDP payloads: one byte, a few, and one over 8 KB (one token each way when protected).
DATAGRAMS = (b"u", b"a second datagram", random.Random(5).randbytes(8_200))
#: A short request/answer for the tests about who may pass.
PING = b"ping through a GSSAPI-authenticated proxy\n"

#: The service of the server in the service-name tests: used by this module only, so that
#: no other test's keytab or cached ticket for it can be out of date.
OTHER_SERVICE = "socks5d-client-test"
#: A second user principal, for the rules: only this module uses it.
OUTSIDER = "outsider-client-test"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def echo() -> Iterator[Endpoint]:
    with tcp_echo_server() as endpoint:
        yield endpoint


@pytest.fixture
def other_echo() -> Iterator[Endpoint]:
    """A second TCP echo server, for a destination a rule blocks."""
    with tcp_echo_server() as endpoint:
        yield endpoint


@pytest.fixture
def udp_echo() -> Iterator[Endpoint]:
    with udp_echo_server() as endpoint:
        yield endpoint


StartServer = Callable[..., RunningServer]


def gssapi_settings(keytab: Path, **extra: Any) -> dict[str, Any]:
    """`[gssapi]` with `keytab` and every level allowed."""
    return {"keytab": str(keytab), "levels": list(LEVELS), **extra}


@pytest.fixture
def server(start_server: StartServer, krb5_realm: KerberosRealm) -> RunningServer:
    """socks5d on 127.0.0.1, GSSAPI only (service rcmd), every level allowed."""
    return start_server(auth=["gssapi"], gssapi=gssapi_settings(krb5_realm.service_keytab))


@pytest.fixture(scope="module")
def other_service_keytab(
    krb5_realm: KerberosRealm, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Keys of OTHER_SERVICE/{localhost,127.0.0.1,<host>} only (no rcmd)."""
    keytab = tmp_path_factory.mktemp("other-service") / "other.keytab"
    return krb5_realm.add_service(OTHER_SERVICE, keytab=keytab)


@pytest.fixture(scope="module")
def outsider_ccache(krb5_realm: KerberosRealm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ccache of its own with a TGT for OUTSIDER (alice's ccache is left alone)."""
    directory = tmp_path_factory.mktemp("outsider")
    keytab = krb5_realm.add_user(OUTSIDER, keytab=directory / "outsider.keytab")
    ccache = directory / "ccache"
    krb5_realm.run(
        ["kinit", "-k", "-t", str(keytab), "-c", f"FILE:{ccache}", krb5_realm.principal(OUTSIDER)]
    )
    return ccache


# --------------------------------------------------------------------------- the record


def record_of(server: RunningServer, command: str) -> dict[str, Any]:
    """The one access record `server` logged, for a `command` session; waits for it."""
    record = only_record(server)
    assert (record["protocol"], record["command"]) == ("socks5", command), record
    return record


def assert_gssapi(record: dict[str, Any], level: str, user: str = ALICE) -> None:
    assert (record["auth"], record["user"]) == (f"gssapi/{level}", user), record


# --------------------------------------------------------------------------- the wire


class WireTap:
    """A loopback TCP forwarder for one connection to `target`, keeping what passes each
    way (`up`: client to target, `down`: back). A context manager: on exit it has seen the
    connection end (both directions at EOF), or it fails.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TRANSFER_TIMEOUT)
        self.port: int = self.listener.getsockname()[1]
        self.up = bytearray()
        self.down = bytearray()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="wiretap")

    def __enter__(self) -> WireTap:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() if nobody came
        self.thread.join(TRANSFER_TIMEOUT)
        self.listener.close()
        assert not self.thread.is_alive(), "the tapped connection did not end"

    def _run(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError as exc:
            self.errors.append(exc)
            return
        with client, socket.create_connection(self.target, TRANSFER_TIMEOUT) as upstream:
            client.settimeout(TRANSFER_TIMEOUT)
            upstream.settimeout(TRANSFER_TIMEOUT)
            other = threading.Thread(target=self._pump, args=(client, upstream, self.up))
            other.start()
            self._pump(upstream, client, self.down)
            other.join(TRANSFER_TIMEOUT)

    def _pump(self, source: socket.socket, sink: socket.socket, kept: bytearray) -> None:
        try:
            while data := source.recv(65_536):
                kept += data
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.errors.append(exc)


def rfc1961_frames(wire: bytes, greeting: bytes, clear: bool) -> tuple[list[int], int, bytes]:
    """Read `wire` (one direction of a session) as: `greeting`, then RFC 1961 messages
    (ver 1, MTYP, 2-byte length, token). With `clear`, the messages end with MTYP 2 and
    the rest is plain SOCKS. Returns the MTYPs in order, the bytes of all MTYP 3 tokens,
    and what follows the messages.
    """
    assert wire.startswith(greeting), wire[:16]
    offset = len(greeting)
    types: list[int] = []
    sealed = 0
    while offset < len(wire) and not (clear and types and types[-1] == 2):
        assert len(wire) - offset >= 4, f"a truncated message header at {offset}"
        version, mtyp, length = struct.unpack_from("!BBH", wire, offset)
        assert version == 1, f"not an RFC 1961 message at {offset}: {wire[offset : offset + 8]!r}"
        assert len(wire) - offset - 4 >= length, f"a truncated token at {offset}"
        types.append(mtyp)
        if mtyp == 3:
            sealed += length
        offset += 4 + length
    return types, sealed, wire[offset:]


def assert_rfc1961_wire(tap: WireTap, level: str) -> None:
    """The tapped CONNECT session spoke RFC 1961 at `level` and carried PAYLOAD each way."""
    clear = level == "clear"
    # Greeting: version 5, one method, X'01' GSSAPI; the server selects X'01'.
    up_types, up_sealed, up_rest = rfc1961_frames(bytes(tap.up), b"\x05\x01\x01", clear)
    down_types, down_sealed, down_rest = rfc1961_frames(bytes(tap.down), b"\x05\x01", clear)
    # The context: one or more MTYP 1 tokens each way (mutual authentication: the server
    # answers), then one MTYP 2 each way.
    handshake_up = up_types.index(2)
    handshake_down = down_types.index(2)
    assert handshake_up >= 1 and set(up_types[:handshake_up]) == {1}, up_types
    assert handshake_down >= 1 and set(down_types[:handshake_down]) == {1}, down_types
    if clear:
        # No encapsulation: the request (IPv4: 10 bytes), the reply, the payload as is.
        assert up_types[handshake_up + 1 :] == [] and down_types[handshake_down + 1 :] == []
        assert up_rest[:4] == b"\x05\x01\x00\x01" and up_rest[10:] == PAYLOAD
        assert down_rest[:4] == b"\x05\x00\x00\x01" and down_rest[10:] == PAYLOAD
        return
    # Everything after the level message is MTYP 3, nothing else, whole tokens.
    assert set(up_types[handshake_up + 1 :]) == {3} and up_rest == b"", up_types
    assert set(down_types[handshake_down + 1 :]) == {3} and down_rest == b"", down_types
    # Many tokens (one per write or read, at most 64 KB each), carrying more than PAYLOAD:
    # the request or reply, and each token's header and checksum.
    assert len(up_types) - handshake_up > 10 and len(down_types) - handshake_down > 10
    assert up_sealed > len(PAYLOAD) + 10 and down_sealed > len(PAYLOAD) + 10
    # RFC 1961 §5: conf_req_flag FALSE at level 1, TRUE at level 2. Kerberos wraps without
    # confidentiality in the clear (plus a checksum), with it encrypted: stretches of the
    # payload show on the wire, each way, at integrity and never at confidentiality. (A
    # stretch may straddle two tokens: at integrity, most of them show, not all.)
    samples = [PAYLOAD[start : start + 32] for start in range(50_000, len(PAYLOAD), 90_000)]
    for wire in (tap.up, tap.down):
        shown = sum(sample in wire for sample in samples)
        if level == "integrity":
            assert shown >= len(samples) // 2, (shown, len(samples))
        else:
            assert shown == 0, (shown, len(samples))


# --------------------------------------------------------------------------- the clients


async def _aio_ping(proxy: Any, destination: Endpoint) -> bytes:
    reader, writer = await aio.open_connection(
        destination.host, destination.port, proxy=proxy, timeout=CLIENT_TIMEOUT
    )
    try:
        writer.write(PING)
        await writer.drain()
        async with asyncio.timeout(TRANSFER_TIMEOUT):
            return await reader.readexactly(len(PING))
    finally:
        writer.close()
        await writer.wait_closed()


def _sync_ping(proxy: Any, destination: Endpoint) -> bytes:
    with sync.create_connection(
        (destination.host, destination.port), CLIENT_TIMEOUT, proxy=proxy
    ) as sock:
        sock.settimeout(TRANSFER_TIMEOUT)
        sock.sendall(PING)
        received = b""
        while len(received) < len(PING) and (chunk := sock.recv(len(PING))):
            received += chunk
        return received


def ping(face: str, proxy: Any, destination: Endpoint) -> bytes:
    """Send PING through `proxy` to an echo server; what comes back."""
    if face == "aio":
        return asyncio.run(_aio_ping(proxy, destination))
    return _sync_ping(proxy, destination)


# --------------------------------------------------------------------------- CONNECT


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("face", FACES)
def test_connect_carries_a_large_payload_protected_at_each_level(
    face: str, level: str, server: RunningServer, echo: Endpoint
) -> None:
    with WireTap(server.address) as tap:
        assert echo_payload(face, gssapi_url(tap.port, level), echo, PAYLOAD) == EXPECTED

    assert not tap.errors, tap.errors
    record = record_of(server, "connect")
    assert_gssapi(record, level)
    assert (record["destination"], record["reply"]) == (echo.destination, "succeeded"), record
    assert (record["bytes_up"], record["bytes_down"]) == (len(PAYLOAD), len(PAYLOAD)), record
    assert_rfc1961_wire(tap, level)


@pytest.mark.parametrize(
    "level",
    [ProtectionLevel.INTEGRITY, ProtectionLevel.CONFIDENTIALITY],
    ids=lambda level: level.name.lower(),
)
@pytest.mark.parametrize("face", FACES)
def test_connect_with_a_proxy_object_and_gssapi_options(
    face: str, level: ProtectionLevel, server: RunningServer, echo: Endpoint
) -> None:
    proxy = Proxy("127.0.0.1", server.port, gssapi=GssapiOptions(level=level))

    assert ping(face, proxy, echo) == PING

    record = record_of(server, "connect")
    assert_gssapi(record, level.name.lower())
    assert (record["bytes_up"], record["bytes_down"]) == (len(PING), len(PING)), record


# --------------------------------------------------------------------------- BIND


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("face", FACES)
def test_bind_accepts_the_peer_and_relays_both_ways_at_each_level(
    face: str, level: str, server: RunningServer
) -> None:
    bind_and_relay(face, gssapi_url(server.port, level), FROM_PEER, TO_PEER)

    record = record_of(server, "bind")
    assert_gssapi(record, level)
    assert record["reply"] == "succeeded", record
    assert (record["bytes_up"], record["bytes_down"]) == (len(TO_PEER), len(FROM_PEER)), record


# --------------------------------------------------------------------------- UDP ASSOCIATE


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("face", FACES)
def test_udp_associate_round_trips_datagrams_at_each_level(
    face: str, level: str, server: RunningServer, udp_echo: Endpoint
) -> None:
    answers = udp_round_trips(face, gssapi_url(server.port, level), udp_echo, DATAGRAMS)

    source = (udp_echo.host, udp_echo.port)
    assert answers == [(datagram, source) for datagram in DATAGRAMS]
    record = record_of(server, "udp_associate")
    assert_gssapi(record, level)
    total = sum(map(len, DATAGRAMS))
    assert (record["reply"], record["dropped"]) == ("succeeded", 0), record
    assert (record["bytes_up"], record["bytes_down"]) == (total, total), record


# --------------------------------------------------------------------------- chains


@pytest.mark.parametrize("level", ["integrity", "confidentiality"])
@pytest.mark.parametrize("face", FACES)
def test_chain_with_the_protected_hop_first(
    face: str, level: str, server: RunningServer, start_server: StartServer, echo: Endpoint
) -> None:
    plain = start_server()  # no authentication
    chain = [gssapi_url(server.port, level), plain.url("socks5h")]

    assert echo_payload(face, chain, echo, PAYLOAD) == EXPECTED

    # The protected hop carried a tunnel to the plain proxy: the inner handshake and the
    # payload, unwrapped, so a few bytes more than the payload each way.
    first = record_of(server, "connect")
    assert_gssapi(first, level)
    assert first["destination"] == f"127.0.0.1:{plain.port}", first
    handshake = (first["bytes_up"] - len(PAYLOAD), first["bytes_down"] - len(PAYLOAD))
    assert 0 < handshake[0] <= 64 and 0 < handshake[1] <= 64, first
    # The plain proxy was reached through it and relayed the payload to the echo server.
    second = record_of(plain, "connect")
    assert (second["auth"], second["user"]) == ("none", None), second
    assert second["destination"] == echo.destination, second
    assert (second["bytes_up"], second["bytes_down"]) == (len(PAYLOAD), len(PAYLOAD)), second


@pytest.mark.parametrize("face", FACES)
def test_chain_with_the_protected_hop_last(
    face: str, server: RunningServer, start_server: StartServer, echo: Endpoint
) -> None:
    plain = start_server()
    chain = [plain.url("socks5h"), gssapi_url(server.port, "confidentiality")]

    assert echo_payload(face, chain, echo, PAYLOAD) == EXPECTED

    # The GSSAPI negotiation and the sealed tokens went through the plain proxy's tunnel.
    outer = record_of(plain, "connect")
    assert outer["destination"] == f"127.0.0.1:{server.port}", outer
    assert outer["bytes_up"] > len(PAYLOAD) + 1000 and outer["bytes_down"] > len(PAYLOAD), outer
    inner = record_of(server, "connect")
    assert_gssapi(inner, "confidentiality")
    assert inner["destination"] == echo.destination, inner
    assert (inner["bytes_up"], inner["bytes_down"]) == (len(PAYLOAD), len(PAYLOAD)), inner


# --------------------------------------------------------------------------- rules


@pytest.fixture
def ruled_server(
    start_server: StartServer, krb5_realm: KerberosRealm, other_echo: Endpoint
) -> RunningServer:
    """GSSAPI (integrity); alice may reach loopback except `other_echo`; whoever no rule
    names (the outsider) is blocked by the default. Only blocks name a rule in the record.
    """
    return start_server(
        auth=["gssapi"],
        gssapi=gssapi_settings(krb5_realm.service_keytab),
        rules={"socks_default": "block"},
        socks=[
            {
                "action": "block",
                "user": [ALICE],
                "to": [f"{other_echo.host}/32"],
                "port": [str(other_echo.port)],
            },
            {"action": "pass", "user": [ALICE], "to": ["127.0.0.0/8"]},
        ],
    )


@pytest.mark.parametrize("face", FACES)
def test_rule_naming_the_principal_lets_alice_pass(
    face: str, ruled_server: RunningServer, echo: Endpoint
) -> None:
    # Only socks[1] passes anyone: the default blocks.
    assert ping(face, gssapi_url(ruled_server.port, "integrity"), echo) == PING

    record = record_of(ruled_server, "connect")
    assert_gssapi(record, "integrity")
    assert (record["reply"], record["rule"]) == ("succeeded", None), record
    assert record["destination"] == echo.destination, record
    assert (record["bytes_up"], record["bytes_down"]) == (len(PING), len(PING)), record


@pytest.mark.parametrize("face", FACES)
def test_rule_naming_the_principal_blocks_alice_from_a_destination(
    face: str, ruled_server: RunningServer, other_echo: Endpoint
) -> None:
    # other_echo is alive: only the rule stands in the way. The reply comes sealed.
    with pytest.raises(NotAllowed, match="X'02'"):
        ping(face, gssapi_url(ruled_server.port, "integrity"), other_echo)

    record = record_of(ruled_server, "connect")
    assert_gssapi(record, "integrity")
    assert record["destination"] == other_echo.destination, record
    assert (record["reply"], record["rule"]) == ("connection_not_allowed", "socks[0]"), record


@pytest.mark.parametrize("face", FACES)
def test_rule_naming_alice_does_not_pass_another_principal(
    face: str,
    ruled_server: RunningServer,
    echo: Endpoint,
    krb5_realm: KerberosRealm,
    outsider_ccache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This test's client is the outsider: its own ccache, and no keytab to fall back on.
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{outsider_ccache}")
    monkeypatch.setenv("KRB5_CLIENT_KTNAME", f"FILE:{outsider_ccache.parent / 'absent.keytab'}")

    with pytest.raises(NotAllowed, match="X'02'"):
        ping(face, gssapi_url(ruled_server.port, "integrity"), echo)

    record = record_of(ruled_server, "connect")
    assert_gssapi(record, "integrity", user=krb5_realm.principal(OUTSIDER))
    assert record["destination"] == echo.destination, record
    assert (record["reply"], record["rule"]) == (
        "connection_not_allowed",
        "rules.socks_default",
    ), record


# --------------------------------------------------------------------------- service name


@pytest.fixture
def other_service_server(start_server: StartServer, other_service_keytab: Path) -> RunningServer:
    """socks5d whose principal is OTHER_SERVICE/<host>, not rcmd."""
    return start_server(
        auth=["gssapi"], gssapi=gssapi_settings(other_service_keytab, service=OTHER_SERVICE)
    )


@pytest.mark.parametrize("face", FACES)
def test_other_service_name_is_asked_for_with_the_service_parameter(
    face: str, other_service_server: RunningServer, echo: Endpoint, krb5_realm: KerberosRealm
) -> None:
    proxy = gssapi_url(other_service_server.port, "integrity", f"&service={OTHER_SERVICE}")

    assert ping(face, proxy, echo) == PING

    record = record_of(other_service_server, "connect")
    assert_gssapi(record, "integrity")
    assert (record["reply"], record["destination"]) == ("succeeded", echo.destination), record
    # The ticket alice presented was issued for the other service at the proxy's address.
    issued = f"{ALICE} for {krb5_realm.principal(f'{OTHER_SERVICE}/127.0.0.1')}"
    assert issued in krb5_realm.kdc_log.read_text()


@pytest.mark.parametrize("face", FACES)
def test_default_service_against_another_service_raises_auth_failed(
    face: str, other_service_server: RunningServer, echo: Endpoint, krb5_realm: KerberosRealm
) -> None:
    # The client asks for rcmd/127.0.0.1 (a real principal, but not this server's): the
    # server cannot accept the context and aborts.
    with pytest.raises(AuthFailed, match="abort"):
        ping(face, gssapi_url(other_service_server.port, "integrity"), echo)

    record = other_service_server.wait_records(1)[0]
    assert (record["auth"], record["user"], record["command"]) == ("gssapi", None, None), record
    assert record["bytes_up"] == record["bytes_down"] == 0, record
    # What the server could not accept: a ticket for rcmd at the address the client used.
    assert record["outcome"].startswith("auth failed: "), record
    assert f"rcmd/127.0.0.1@{krb5_realm.realm}" in record["outcome"], record
