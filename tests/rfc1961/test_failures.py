"""GSS-API (RFC 1961) failures on a running socks5d: each one a clear failure for the client,
one clean access record on the server, and never a hang.

RFC 1961 §3.8: "If the server refuses the client's connection for any reason (GSS-API
authentication failure or otherwise), it will return: + 0x01 | 0xff +" and close. During
context establishment and the protection-level sub-negotiation socks5d does that and logs
"auth failed: <cause>"; once per-message protection is agreed (§5) a token that does not
verify, or anything but an encapsulation message, closes the connection with "protocol
error: ..." (before the request) or "error: ..." (in the relay).

Clients: socks5d's own (`socks5d.client.sync`, which must raise `AuthFailed`), and a raw
socket client (`RawGssapi`) that holds a real Kerberos context and writes every octet itself,
well-formed or not. No record may say "internal error" (a crash), and no error may be logged
(`no_crash`).
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gssapi
import pytest

from conftest import RunningServer
from server.raw_client import (
    IO_TIMEOUT,
    connect,
    loopback_address,
    read_until_eof,
    recv_exactly,
    request_bytes,
)
from socks5d import ConfigError
from socks5d.client import sync
from socks5d.config import ServerConfig, build_config
from socks5d.errors import AuthFailed
from socks5d.gss import Protection, client_read_level, initiate, initiator_step
from socks5d.proto import Command, CommandReply, ProtectionLevel, Reply
from socks5d.proto.buffer import Cursor, NeedData
from socks5d.proto.rfc1928 import decode_reply
from socks5d.server import Server

from .realm import SERVICE, KerberosRealm

CLEAR = ProtectionLevel.CLEAR
INTEGRITY = ProtectionLevel.INTEGRITY
CONFIDENTIALITY = ProtectionLevel.CONFIDENTIALITY
SELECTIVE = ProtectionLevel.SELECTIVE
#: VER 5, NMETHODS 1, METHOD X'01' (GSS-API); and the server's selection of it.
GREETING = b"\x05\x01\x01"
SELECTED = b"\x05\x01"
ABORT = b"\x01\xff"
#: MTYP values (RFC 1961 §3, §4, §5).
AUTHENTICATION, PROTECTION_LEVEL, ENCAPSULATION = 1, 2, 3
#: Handshake timeout of the servers here: a server-side hang shows as "handshake timeout".
HANDSHAKE_TIMEOUT = 3


def message(mtyp: int, token: bytes, version: int = 1) -> bytes:
    """VER, MTYP, LEN (2 octets, network order), TOKEN: written out here, not by socks5d."""
    return bytes([version, mtyp]) + len(token).to_bytes(2, "big") + token


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


class RawGssapi:
    """A SOCKS5 client on a blocking socket, with a real initiator context (alice's ccache,
    `rcmd@localhost`), that sends exactly the bytes it is told to.
    """

    def __init__(self, server: RunningServer) -> None:
        self.sock = connect(server)
        self.context: gssapi.SecurityContext | None = None
        self.protection: Protection | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawGssapi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def greet(self) -> None:
        self.send(GREETING)
        assert recv_exactly(self.sock, 2) == SELECTED

    def first_token(self) -> bytes:
        """The initiator's first token (the Kerberos AP-REQ), for a new context."""
        self.context = initiate(SERVICE, "localhost")
        return initiator_step(self.context, None)

    def read_message(self) -> tuple[int, bytes]:
        """The server's next RFC 1961 message: (MTYP, token); (0xFF, b"") for the abort."""
        head = recv_exactly(self.sock, 2)
        if head == ABORT:
            return 0xFF, b""
        assert head[0] == 1, f"GSS-API message version {head[0]:#04x}"
        length = int.from_bytes(recv_exactly(self.sock, 2), "big")
        return head[1], recv_exactly(self.sock, length)

    def establish(self) -> None:
        """Greet, then MTYP 1 tokens both ways until the context is complete."""
        self.greet()
        token = self.first_token()
        assert self.context is not None
        while True:
            self.send(message(AUTHENTICATION, token))
            mtyp, answer = self.read_message()
            assert mtyp == AUTHENTICATION, f"MTYP {mtyp:#04x} during context establishment"
            token = initiator_step(self.context, answer)
            if self.context.complete:
                assert not token
                return

    def level_message(self, level: int, *, unwrapped: bool = False) -> bytes:
        assert self.context is not None
        if unwrapped:
            return message(PROTECTION_LEVEL, bytes([level]))
        return message(PROTECTION_LEVEL, self.context.wrap(bytes([level]), False).message)

    def agree(self, level: ProtectionLevel, *, unwrapped: bool = False) -> None:
        """Establish, ask for `level`, check the server agreed to it, set up protection."""
        self.establish()
        self.send(self.level_message(level, unwrapped=unwrapped))
        self.expect_level(level, unwrapped=unwrapped)

    def expect_level(self, level: ProtectionLevel, *, unwrapped: bool = False) -> None:
        assert self.context is not None
        mtyp, answer = self.read_message()
        assert mtyp == PROTECTION_LEVEL, f"MTYP {mtyp:#04x} instead of the level answer"
        assert client_read_level(self.context, answer, unwrapped=unwrapped) == level
        if level != CLEAR:
            self.protection = Protection(self.context, level)

    def seal(self, data: bytes) -> bytes:
        return self.protection.seal(data) if self.protection else data

    def read_reply(self) -> CommandReply:
        """The server's reply to the request, unwrapped when protected."""
        plaintext = b""
        while True:
            try:
                reply: CommandReply = decode_reply(Cursor(plaintext))
                return reply
            except NeedData:
                data = self.sock.recv(4096)
                assert data, f"EOF before a whole reply; got {plaintext!r}"
                plaintext += self.protection.open(data) if self.protection else data

    def connect_to(self, destination: socket.socket) -> socket.socket:
        """CONNECT to `destination` (the request sealed when protected); the reply is a
        success; the proxy's connection to `destination`, accepted.
        """
        self.send(self.seal(connect_request(destination)))
        assert self.read_reply().reply == Reply.SUCCEEDED
        return accept(destination)

    def read_plaintext(self, count: int) -> bytes:
        """`count` octets of relayed data, unwrapped when protected."""
        plaintext = b""
        while len(plaintext) < count:
            data = self.sock.recv(65536)
            assert data, f"EOF after {plaintext!r}"
            plaintext += self.protection.open(data) if self.protection else data
        return plaintext

    def shut_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def rest(self) -> bytes:
        """What the server sends until it closes."""
        return read_until_eof(self.sock)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_crash(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No error logged by socks5d (a crashed session logs "session ... crashed")."""
    caplog.set_level(logging.WARNING, logger="socks5d")
    yield
    errors = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith("socks5d")
    ]
    assert not errors, errors


@pytest.fixture
def gss_server(
    start_server: Callable[..., RunningServer], krb5_realm: KerberosRealm
) -> Callable[..., RunningServer]:
    """Factory: a GSS-API-only server with the realm's service keytab; keyword arguments
    are `[gssapi]` settings (`levels`, `keytab`, `accept_unwrapped_level`, ...).
    """

    def start(**gssapi_settings: Any) -> RunningServer:
        settings = {"keytab": str(krb5_realm.service_keytab), **gssapi_settings}
        return start_server(
            auth=["gssapi"], gssapi=settings, timeouts={"handshake": HANDSHAKE_TIMEOUT}
        )

    return start


@pytest.fixture
def destination() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 for CONNECT requests."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(IO_TIMEOUT)
        yield sock


@pytest.fixture
def restore_ticket(krb5_realm: KerberosRealm) -> Iterator[KerberosRealm]:
    """For tests that empty or spoil the shared ccache: alice's fresh TGT afterwards."""
    try:
        yield krb5_realm
    finally:
        krb5_realm.kinit()


def accept(destination: socket.socket) -> socket.socket:
    """The proxy's connection to `destination`, with the tests' I/O timeout."""
    peer, _ = destination.accept()
    peer.settimeout(IO_TIMEOUT)
    return peer


def connect_request(destination: socket.socket) -> bytes:
    """The CONNECT request for `destination`, unprotected."""
    return request_bytes(Command.CONNECT, loopback_address(destination))


def answer_to(
    server: RunningServer,
    sent: bytes | Callable[[RawGssapi], bytes],
    *,
    established: bool = False,
    shut_write: bool = False,
) -> bytes:
    """Greet `server` (`established`: and establish a context), send `sent` (or what
    `sent(client)` makes; nothing for b""), half-close with `shut_write`; what the server
    sends back until it closes.
    """
    with RawGssapi(server) as client:
        if established:
            client.establish()
        else:
            client.greet()
        data = sent(client) if callable(sent) else sent
        if data:
            client.send(data)
        if shut_write:
            client.shut_write()
        return client.rest()


def proxy_url(server: RunningServer, level: str, **params: str) -> str:
    query = "".join(f"&{key}={value}" for key, value in params.items())
    return f"{server.url('socks5h')}?gssapi={level}{query}"


def library_connect(server: RunningServer, destination: socket.socket, url: str) -> None:
    """socks5d's own client through `server` to `destination`; must raise."""
    host, port = destination.getsockname()[:2]
    sock = sync.create_connection((host, port), timeout=IO_TIMEOUT, proxy=url)
    sock.close()
    raise AssertionError("the client connected")


def only_record(server: RunningServer) -> dict[str, Any]:
    """The one access record of the server, checked to be a clean ending."""
    records = server.wait_records(1)
    assert len(records) == 1, records
    record = records[0]
    assert record["outcome"], record
    assert record["outcome"] != "internal error", record
    assert record["protocol"] == "socks5", record
    return record


def assert_aborted(record: dict[str, Any], cause: str, *, user: str | None = None) -> None:
    assert record["outcome"].startswith(f"auth failed: {cause}"), record
    assert record["auth"] == "gssapi", record
    assert record["user"] == user, record
    assert record["reply"] is None, record


def assert_agreed(record: dict[str, Any], level: ProtectionLevel, user: str) -> None:
    """The session agreed on `level` for `user`."""
    assert record["auth"] == f"gssapi/{level.name.lower()}", record
    assert record["user"] == user, record


# --- a control: the raw client works -------------------------------------------------------------


@pytest.mark.parametrize("level", [INTEGRITY, CONFIDENTIALITY])
def test_raw_client_negotiates_connects_and_relays(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
    level: ProtectionLevel,
) -> None:
    """The raw client is right when nothing is wrong: the failures below are the server's."""
    server = gss_server()
    with RawGssapi(server) as client:
        client.agree(level)
        with client.connect_to(destination) as peer:
            client.send(client.seal(b"ping"))
            assert recv_exactly(peer, 4) == b"ping"
            peer.sendall(b"pong")
            assert client.read_plaintext(4) == b"pong"
    record = only_record(server)
    assert_agreed(record, level, krb5_realm.principal("alice"))
    assert record["outcome"] == "closed"


# --- the Kerberos side: keys, tickets ------------------------------------------------------------


def test_wrong_service_key_is_an_abort_and_auth_failed(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
) -> None:
    server = gss_server(keytab=str(krb5_realm.stale_keytab(SERVICE)))
    with pytest.raises(AuthFailed, match="refused GSS-API authentication"):
        library_connect(server, destination, proxy_url(server, "integrity"))
    assert_aborted(only_record(server), "GSS-API context not established: ")

    assert answer_to(server, lambda client: message(AUTHENTICATION, client.first_token())) == ABORT
    second = server.wait_records(2)[1]
    assert_aborted(second, "GSS-API context not established: ")


def test_a_client_asking_for_another_service_is_refused(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
) -> None:
    service = f"other{secrets.token_hex(4)}"  # the realm is shared: a name no one else uses
    keytab = krb5_realm.add_service(service, keytab=krb5_realm.directory / f"{service}.keytab")
    server = gss_server(keytab=str(keytab), service=service)
    with pytest.raises(AuthFailed, match="refused GSS-API authentication"):
        library_connect(server, destination, proxy_url(server, "integrity"))  # asks for rcmd
    assert_aborted(only_record(server), "GSS-API context not established: ")
    # the same server, asked for the service it has
    host, port = destination.getsockname()[:2]
    url = proxy_url(server, "integrity", service=service)
    with sync.create_connection((host, port), timeout=IO_TIMEOUT, proxy=url):
        accept(destination).close()
    assert server.wait_records(2)[1]["auth"] == "gssapi/integrity"


def test_no_ticket_fails_in_the_client_and_the_server_logs_a_clean_record(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    restore_ticket: KerberosRealm,
) -> None:
    server = gss_server()
    restore_ticket.kdestroy()
    with restore_ticket.activate(client_keytab=False):
        assert not restore_ticket.has_valid_ticket()
        with pytest.raises(AuthFailed, match="GSS-API context not established"):
            library_connect(server, destination, proxy_url(server, "integrity"))
    # the client gave up before its first token: the server saw it leave
    assert_aborted(only_record(server), "the client closed during the GSS-API negotiation")


def test_expired_ticket_fails_in_the_client_and_the_server_logs_a_clean_record(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
) -> None:
    server = gss_server()
    with krb5_realm.expired_ticket():
        with pytest.raises(AuthFailed, match=r"(?i)expired"):
            library_connect(server, destination, proxy_url(server, "confidentiality"))
        assert_aborted(only_record(server), "the client closed during the GSS-API negotiation")
    assert krb5_realm.has_valid_ticket()


def test_a_token_made_before_the_ticket_expired_is_refused_after(
    gss_server: Callable[..., RunningServer], restore_ticket: KerberosRealm
) -> None:
    server = gss_server()
    # without the client keytab: MIT would renew a short ticket from it
    with restore_ticket.activate(client_keytab=False):
        restore_ticket.kinit(lifetime="2s")
        token = initiator_step(initiate(SERVICE, "localhost"), None)
        restore_ticket.wait_expired()
    # connected only now: the wait is longer than the server's handshake timeout
    assert answer_to(server, message(AUTHENTICATION, token)) == ABORT
    assert_aborted(only_record(server), "GSS-API context not established: ")


def test_a_replayed_first_token_is_refused(gss_server: Callable[..., RunningServer]) -> None:
    server = gss_server()
    with RawGssapi(server) as first:
        first.greet()
        token = first.first_token()
        first.send(message(AUTHENTICATION, token))
        assert first.read_message()[0] == AUTHENTICATION  # accepted: the mutual-auth answer
        assert answer_to(server, message(AUTHENTICATION, token)) == ABORT  # the replay
        record = server.wait_records(1)[0]
        assert_aborted(record, "GSS-API context not established: ")
        assert "replay" in record["outcome"].lower(), record


# --- the protection level ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "asked", "outcome"),
    [
        (["integrity"], "confidentiality", "confidentiality not allowed (allowed: integrity)"),
        (["confidentiality"], "integrity", "integrity not allowed (allowed: confidentiality)"),
        (["integrity", "confidentiality"], "clear", "clear not allowed (allowed: integrity,conf"),
    ],
)
def test_a_level_not_allowed_is_refused_never_downgraded(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
    allowed: list[str],
    asked: str,
    outcome: str,
) -> None:
    server = gss_server(levels=allowed)
    with pytest.raises(AuthFailed, match="refused GSS-API authentication"):
        library_connect(server, destination, proxy_url(server, asked))
    record = only_record(server)
    assert_aborted(record, f"protection level {outcome}", user=krb5_realm.principal("alice"))


def test_selective_protection_is_refused(
    gss_server: Callable[..., RunningServer], krb5_realm: KerberosRealm
) -> None:
    server = gss_server(levels=["clear", "integrity", "confidentiality"])
    answer = answer_to(server, lambda client: client.level_message(SELECTIVE), established=True)
    assert answer == ABORT
    record = only_record(server)
    assert_aborted(
        record, "protection level selective not allowed", user=krb5_realm.principal("alice")
    )


def _level_holding(octets: bytes) -> Callable[[RawGssapi], bytes]:
    """A level message whose (wrapped) token holds `octets`."""

    def make(client: RawGssapi) -> bytes:
        assert client.context is not None
        return message(PROTECTION_LEVEL, client.context.wrap(octets, False).message)

    return make


def _tampered_level(client: RawGssapi) -> bytes:
    level = client.level_message(INTEGRITY)
    return flip(level, len(level) - 1)


@pytest.mark.parametrize(
    ("after_context", "cause"),
    [
        pytest.param(
            _level_holding(b""), "protection level message of 0 octets, not 1", id="0-octets"
        ),
        pytest.param(
            _level_holding(b"\x02\x02"),
            "protection level message of 2 octets, not 1",
            id="2-octets",
        ),
        pytest.param(_level_holding(b"\x09"), "unknown protection level 0x09", id="level-9"),
        pytest.param(
            message(PROTECTION_LEVEL, b"not a wrap token"),
            "protection level token does not unwrap",
            id="garbage-level-token",
        ),
        pytest.param(
            _tampered_level, "protection level token does not unwrap", id="tampered-level-token"
        ),
        pytest.param(
            b"\x01\x02\x00\x01\x02",
            "the protection level came unwrapped (the NEC variant), which is not enabled",
            id="unwrapped-level-not-enabled",
        ),
        pytest.param(
            message(AUTHENTICATION, b"more"),
            "GSS-API message type 0x01 where 0x02 was expected",
            id="mtyp-1-again",
        ),
        pytest.param(
            message(ENCAPSULATION, b"data"),
            "GSS-API message type 0x03 where 0x02 was expected",
            id="mtyp-3-early",
        ),
    ],
)
def test_a_bad_level_message_after_the_context_is_an_abort(
    gss_server: Callable[..., RunningServer],
    krb5_realm: KerberosRealm,
    after_context: bytes | Callable[[RawGssapi], bytes],
    cause: str,
) -> None:
    server = gss_server()
    assert answer_to(server, after_context, established=True) == ABORT
    assert_aborted(only_record(server), cause, user=krb5_realm.principal("alice"))


def test_an_unwrapped_level_is_answered_unwrapped_when_enabled_then_protected(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
) -> None:
    server = gss_server(accept_unwrapped_level=True)
    with RawGssapi(server) as client:
        client.establish()
        client.send(b"\x01\x02\x00\x01\x02")
        assert recv_exactly(client.sock, 5) == b"\x01\x02\x00\x01\x02"
        assert client.context is not None
        client.protection = Protection(client.context, CONFIDENTIALITY)
        with client.connect_to(destination) as peer:
            peer.sendall(b"protected")
            assert client.read_plaintext(9) == b"protected"
    assert_agreed(only_record(server), CONFIDENTIALITY, krb5_realm.principal("alice"))


def test_after_an_unwrapped_level_a_clear_request_is_refused(
    gss_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    server = gss_server(accept_unwrapped_level=True)
    with RawGssapi(server) as client:
        client.establish()
        client.send(b"\x01\x02\x00\x01\x01")
        assert recv_exactly(client.sock, 5) == b"\x01\x02\x00\x01\x01"
        client.send(connect_request(destination))
        assert client.rest() == b""
    record = only_record(server)
    assert record["outcome"] == "protocol error: unsupported GSS-API message version 0x05"
    assert record["auth"] == "gssapi/integrity"


def test_answer_clear_is_left_by_our_client_which_asked_for_confidentiality(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
) -> None:
    server = gss_server(levels=["clear", "integrity", "confidentiality"], answer_clear=True)
    with pytest.raises(AuthFailed, match="agreed to protection level clear, not confidentiality"):
        library_connect(server, destination, proxy_url(server, "confidentiality"))
    record = only_record(server)
    assert record["auth"] == "gssapi/clear", "the server did answer clear"
    assert record["user"] == krb5_realm.principal("alice")
    assert record["outcome"] == "client closed during handshake"
    assert record["destination"] is None, "no request was sent"


def test_answer_clear_then_the_request_goes_in_clear(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
) -> None:
    server = gss_server(levels=["clear", "integrity", "confidentiality"], answer_clear=True)
    with RawGssapi(server) as client:
        client.establish()
        client.send(client.level_message(CONFIDENTIALITY))
        client.expect_level(CLEAR)
        client.connect_to(destination).close()
    assert only_record(server)["auth"] == "gssapi/clear"


# --- garbage and broken framing during the negotiation -------------------------------------------


@pytest.mark.parametrize(
    ("sent", "cause"),
    [
        (message(AUTHENTICATION, b"hello"), "GSS-API context not established: "),
        (message(AUTHENTICATION, bytes(range(256)) * 40), "GSS-API context not established: "),
        (message(PROTECTION_LEVEL, b"\x02"), "GSS-API message type 0x02 where 0x01 was expected"),
        (message(ENCAPSULATION, b"data"), "GSS-API message type 0x03 where 0x01 was expected"),
    ],
    ids=["hello", "10k-garbage", "mtyp-2-first", "mtyp-3-first"],
)
def test_a_bad_first_message_is_answered_with_abort(
    gss_server: Callable[..., RunningServer], sent: bytes, cause: str
) -> None:
    server = gss_server()
    assert answer_to(server, sent) == ABORT
    assert_aborted(only_record(server), cause)


def test_an_empty_first_token_is_answered_with_abort(
    gss_server: Callable[..., RunningServer],
) -> None:
    server = gss_server()
    with RawGssapi(server) as client:
        client.greet()
        client.send(message(AUTHENTICATION, b""))
        assert client.read_message() == (0xFF, b"")
    assert_aborted(only_record(server), "GSS-API context not established: ")


@pytest.mark.parametrize(
    ("sent", "cause"),
    [
        (b"\x02\x01\x00\x05hello", "unsupported GSS-API message version 0x02"),
        (b"\x05\x01\x00\x05hello", "unsupported GSS-API message version 0x05"),
        (b"\x01\x07\x00\x05hello", "unknown GSS-API message type 0x07"),
    ],
    ids=["version-2", "version-5", "mtyp-7"],
)
def test_an_unparsable_message_closes_with_a_clean_record(
    gss_server: Callable[..., RunningServer], sent: bytes, cause: str
) -> None:
    server = gss_server()
    assert answer_to(server, sent) == ABORT
    record = only_record(server)
    assert record["outcome"] == f"protocol error: {cause}", record


@pytest.mark.parametrize(
    "established", [False, True], ids=["during-the-context", "after-the-context"]
)
def test_an_abort_from_the_client_is_logged(
    gss_server: Callable[..., RunningServer], krb5_realm: KerberosRealm, established: bool
) -> None:
    server = gss_server()
    assert answer_to(server, ABORT, established=established) == b"", "the abort is not answered"
    assert_aborted(
        only_record(server),
        "the client aborted the GSS-API negotiation",
        user=krb5_realm.principal("alice") if established else None,
    )


@pytest.mark.parametrize(
    ("established", "sent"),
    [
        pytest.param(False, b"\x01", id="version-only"),
        pytest.param(False, b"\x01\x01\x00", id="half-length"),
        pytest.param(False, b"\x01\x01\x00\x10abc", id="truncated-token"),
        pytest.param(False, b"\x01\x01\xff\xff" + bytes(30000), id="huge-length-partial-body"),
        pytest.param(True, b"", id="after-the-context"),
    ],
)
def test_the_client_closing_during_the_negotiation_is_logged(
    gss_server: Callable[..., RunningServer],
    krb5_realm: KerberosRealm,
    established: bool,
    sent: bytes,
) -> None:
    server = gss_server()
    answer = answer_to(server, sent, established=established, shut_write=True)
    assert answer in (b"", ABORT)
    assert_aborted(
        only_record(server),
        "the client closed during the GSS-API negotiation",
        user=krb5_realm.principal("alice") if established else None,
    )


@pytest.mark.parametrize(
    "sent",
    [b"", b"\x01\x01\x00\x10abc", b"\x01\x01\xff\xff" + bytes(1000)],
    ids=lambda s: str(len(s)),
)
def test_a_client_stalled_mid_negotiation_gets_the_handshake_timeout(
    start_server: Callable[..., RunningServer], krb5_realm: KerberosRealm, sent: bytes
) -> None:
    server = start_server(
        auth=["gssapi"],
        gssapi={"keytab": str(krb5_realm.service_keytab)},
        timeouts={"handshake": 1},
    )
    with RawGssapi(server) as client:
        client.greet()
        client.send(sent)
        record = server.wait_records(1)[0]  # no more bytes come: the timeout ends it
        assert client.rest() == b""
    assert record["outcome"] == "handshake timeout"
    assert 1 <= record["duration"] < 1 + IO_TIMEOUT
    assert record["auth"] == "gssapi"


# --- delivery in pieces --------------------------------------------------------------------------


@pytest.mark.parametrize("level", [INTEGRITY, CONFIDENTIALITY])
def test_a_negotiation_sent_byte_by_byte_works(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
    level: ProtectionLevel,
) -> None:
    def dribble(client: RawGssapi, data: bytes) -> None:
        for index in range(len(data)):
            client.send(data[index : index + 1])

    server = gss_server()
    with RawGssapi(server) as client:
        dribble(client, GREETING)
        assert recv_exactly(client.sock, 2) == SELECTED
        dribble(client, message(AUTHENTICATION, client.first_token()))
        mtyp, answer = client.read_message()
        assert mtyp == AUTHENTICATION
        assert client.context is not None
        assert not initiator_step(client.context, answer)
        assert client.context.complete
        dribble(client, client.level_message(level))
        client.expect_level(level)
        dribble(client, client.seal(connect_request(destination)))
        assert client.read_reply().reply == Reply.SUCCEEDED
        peer = accept(destination)
        with peer:
            dribble(client, client.seal(b"up") + client.seal(b"stream"))
            assert recv_exactly(peer, 8) == b"upstream"
    record = only_record(server)
    assert_agreed(record, level, krb5_realm.principal("alice"))
    assert record["bytes_up"] == 8


@pytest.mark.parametrize("with_level", [None, 6], ids=["whole-request", "part-of-the-request"])
def test_the_level_message_and_the_protected_request_in_one_segment(
    gss_server: Callable[..., RunningServer], destination: socket.socket, with_level: int | None
) -> None:
    """The level message and, in the same segment, the request sealed at the level asked
    for: all of it, or its first `with_level` octets (the rest after the level answer).
    """
    server = gss_server()
    with RawGssapi(server) as client:
        client.establish()
        assert client.context is not None
        level = client.level_message(INTEGRITY)  # wrapped first: sequence numbers in order
        ahead = Protection(client.context, INTEGRITY)
        request = ahead.seal(connect_request(destination))
        cut = len(request) if with_level is None else with_level
        client.send(level + request[:cut])
        client.expect_level(INTEGRITY)
        client.protection = ahead
        if request[cut:]:
            client.send(request[cut:])
        assert client.read_reply().reply == Reply.SUCCEEDED
        accept(destination).close()
    assert only_record(server)["auth"] == "gssapi/integrity"


# --- the protected phase -------------------------------------------------------------------------


def _tampered(client: RawGssapi, data: bytes) -> bytes:
    wire = client.seal(data)
    return flip(wire, len(wire) // 2)


def _without_conf(client: RawGssapi, data: bytes) -> bytes:
    assert client.context is not None
    return message(ENCAPSULATION, client.context.wrap(data, False).message)


def _with_conf(client: RawGssapi, data: bytes) -> bytes:
    assert client.context is not None
    return message(ENCAPSULATION, client.context.wrap(data, True).message)


def _as_mtyp_1(client: RawGssapi, data: bytes) -> bytes:
    return b"\x01\x01" + client.seal(data)[2:]


def _replayed(client: RawGssapi, data: bytes) -> bytes:
    first = client.seal(data[:3])
    return first + first


def _clear(client: RawGssapi, data: bytes) -> bytes:
    return data


def _abort(client: RawGssapi, data: bytes) -> bytes:
    return ABORT


PROTECTED_FAILURES = [
    pytest.param(INTEGRITY, _tampered, "GSS-API token does not verify: ", id="tampered-integ"),
    pytest.param(CONFIDENTIALITY, _tampered, "GSS-API token does not verify: ", id="tampered-conf"),
    pytest.param(
        CONFIDENTIALITY,
        _without_conf,
        "a token without confidentiality at protection level confidentiality",
        id="no-conf-at-conf",
    ),
    pytest.param(
        INTEGRITY,
        _with_conf,
        "a token with confidentiality at protection level integrity",
        id="conf-at-integrity",
    ),
    pytest.param(
        INTEGRITY,
        _as_mtyp_1,
        "GSS-API message type 0x01 where encapsulated data (MTYP 3) was expected",
        id="mtyp-1",
    ),
    pytest.param(INTEGRITY, _replayed, "GSS-API token does not verify: ", id="replayed"),
    pytest.param(INTEGRITY, _clear, "unsupported GSS-API message version 0x05", id="clear-request"),
    pytest.param(CONFIDENTIALITY, _abort, "the peer aborted the GSS-API session", id="abort"),
]


@pytest.mark.parametrize(("level", "mangle", "cause"), PROTECTED_FAILURES)
def test_a_bad_protected_request_closes_with_a_protocol_error(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    krb5_realm: KerberosRealm,
    level: ProtectionLevel,
    mangle: Callable[[RawGssapi, bytes], bytes],
    cause: str,
) -> None:
    server = gss_server()
    with RawGssapi(server) as client:
        client.agree(level)
        client.send(mangle(client, connect_request(destination)))
        assert client.rest() == b"", "no reply to a request that was never read"
    record = only_record(server)
    assert record["outcome"].startswith(f"protocol error: {cause}"), record
    assert_agreed(record, level, krb5_realm.principal("alice"))
    assert record["destination"] is None


@pytest.mark.parametrize("level", [INTEGRITY, CONFIDENTIALITY])
def test_closing_inside_a_protected_request_is_a_clean_record(
    gss_server: Callable[..., RunningServer], destination: socket.socket, level: ProtectionLevel
) -> None:
    server = gss_server()
    with RawGssapi(server) as client:
        client.agree(level)
        client.send(client.seal(connect_request(destination))[:-3])
        client.shut_write()
        assert client.rest() == b""
    record = only_record(server)
    assert record["outcome"].startswith(
        "protocol error: the stream ended inside an encapsulated message"
    ), record


@pytest.mark.parametrize(("level", "mangle", "cause"), PROTECTED_FAILURES)
def test_a_bad_token_in_the_relay_ends_the_tunnel_with_an_error(
    gss_server: Callable[..., RunningServer],
    destination: socket.socket,
    level: ProtectionLevel,
    mangle: Callable[[RawGssapi, bytes], bytes],
    cause: str,
) -> None:
    server = gss_server()
    with RawGssapi(server) as client:
        client.agree(level)
        with client.connect_to(destination) as peer:
            client.send(client.seal(b"good"))
            assert recv_exactly(peer, 4) == b"good"
            client.send(mangle(client, connect_request(destination)))
            through = read_until_eof(peer)
            # nothing of a bad token reaches the peer; of a replay, the good first one does
            # (both arrive in one read: what verified is delivered, then the tunnel ends)
            assert through == (connect_request(destination)[:3] if mangle is _replayed else b"")
        client.rest()  # the tunnel closes the client's connection too: no hang
    record = only_record(server)
    assert record["outcome"].startswith(f"error: {cause}"), record
    assert record["bytes_up"] == 4 + len(through)


def test_closing_inside_a_token_in_the_relay_is_a_clean_record(
    gss_server: Callable[..., RunningServer], destination: socket.socket
) -> None:
    server = gss_server()
    with RawGssapi(server) as client:
        client.agree(CONFIDENTIALITY)
        with client.connect_to(destination) as peer:
            client.send(client.seal(b"cut short")[:-1])
            client.shut_write()
            assert read_until_eof(peer) == b""
        client.rest()
    record = only_record(server)
    assert record["outcome"].startswith("error: the stream ended inside an encapsulated message"), (
        record
    )


# --- the server's own key ------------------------------------------------------------------------


def gssapi_config(keytab: Path, **overrides: Any) -> ServerConfig:
    """A GSS-API-only config on 127.0.0.1:0 with `keytab`; `overrides` as build_config's."""
    return build_config(
        {"auth": ["gssapi"], "gssapi": {"keytab": str(keytab)}},
        listen=["127.0.0.1:0"],
        **overrides,
    )


def test_a_keytab_without_the_service_stops_the_server(krb5_realm: KerberosRealm) -> None:
    config = gssapi_config(krb5_realm.service_keytab, gssapi={"service": "nosuch"})
    with pytest.raises(ConfigError, match=r"^gssapi: no key for service 'nosuch' in "):
        Server(config)


def test_a_missing_keytab_stops_the_server(krb5_realm: KerberosRealm, tmp_path: Path) -> None:
    config = gssapi_config(tmp_path / "absent.keytab")
    with pytest.raises(ConfigError, match=r"^gssapi\.keytab: .*absent\.keytab: no such file"):
        Server(config)


def test_the_service_keytab_works_for_the_server(krb5_realm: KerberosRealm) -> None:
    """The control of the two above: the same call with the right service succeeds."""
    config = gssapi_config(krb5_realm.service_keytab)
    assert Server(config).gssapi_credentials is not None
