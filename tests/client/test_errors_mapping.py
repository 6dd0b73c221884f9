"""What the client raises when the proxy says no, says nonsense, or says nothing.

Each case runs twice, with the asyncio client and with the blocking one (`api`). Replies our
server never sends come from a scripted fake proxy that answers with the RFC fixtures of
`vectors`; real refusals (a closed port, a name that does not resolve) come from our server.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

import socks5d.client as aio
from socks5d.client import sync
from socks5d.errors import (
    AddressTypeNotSupported,
    AuthFailed,
    CommandNotSupported,
    ConnectionRefused,
    HostUnreachable,
    NetworkUnreachable,
    NotAllowed,
    ProtocolError,
    ProxyTimeout,
    RequestRejected,
    Socks5Error,
    TTLExpired,
)
from socks5d.proto import (
    AuthMethod,
    CommandRequest,
    DomainName,
    Greeting,
    MethodSelected,
    Reply,
    Socks4Request,
    UserPassAuth,
)
from socks5d.server.connect import Target
from vectors import (
    FAILURE_REPLIES,
    METHOD_NO_ACCEPTABLE,
    METHOD_USERPASS,
    REPLY_SUCCEEDED,
    SOCKS4_IDENTD_MISMATCH,
    SOCKS4_IDENTD_UNREACHABLE,
    SOCKS4_REJECTED,
    Vector,
)

from .conftest import IO_TIMEOUT, FakeProxy, ProxySide, closed_port

APIS = ["aio", "sync"]
#: A destination the fake proxies are asked for; nothing is ever connected to it.
DESTINATION = ("127.0.0.1", 9)
#: A handshake deadline small enough to keep the timeout tests quick.
SMALL_TIMEOUT = 0.3

#: RFC 1928 §6, REP: the exception class and the RFC's wording of every failure code.
RFC_MEANING: dict[Reply, tuple[type[Socks5Error], str]] = {
    Reply.GENERAL_FAILURE: (Socks5Error, "general SOCKS server failure"),
    Reply.CONNECTION_NOT_ALLOWED: (NotAllowed, "connection not allowed by ruleset"),
    Reply.NETWORK_UNREACHABLE: (NetworkUnreachable, "Network unreachable"),
    Reply.HOST_UNREACHABLE: (HostUnreachable, "Host unreachable"),
    Reply.CONNECTION_REFUSED: (ConnectionRefused, "Connection refused"),
    Reply.TTL_EXPIRED: (TTLExpired, "TTL expired"),
    Reply.COMMAND_NOT_SUPPORTED: (CommandNotSupported, "Command not supported"),
    Reply.ADDRESS_TYPE_NOT_SUPPORTED: (AddressTypeNotSupported, "Address type not supported"),
}


async def tunnel(
    api: str, proxy: str | list[str], host: str, port: int, timeout: float = IO_TIMEOUT
) -> None:
    """CONNECT with the asyncio or the blocking client; close the socket if it succeeds."""
    if api == "aio":
        sock = await aio.connect(host, port, proxy=proxy, timeout=timeout)
    else:
        sock = await asyncio.to_thread(sync.connect, host, port, proxy=proxy, timeout=timeout)
    sock.close()


def greet_without_auth(side: ProxySide) -> None:
    side.receive()
    side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))


def reply_to_request_with(reply: bytes) -> Callable[[ProxySide], None]:
    """A SOCKS5 proxy that accepts no-auth, reads the request and answers `reply`."""

    def script(side: ProxySide) -> None:
        greet_without_auth(side)
        side.receive()
        side.send(reply)
        side.wait_for_close()

    return script


# --- failure replies --------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    "vector",
    [
        pytest.param(
            vector,
            id=vector.name,
        )
        for vector in FAILURE_REPLIES
    ],
)
async def test_failure_reply_raises_its_class_with_the_code_and_the_rfc_meaning(
    api: str, vector: Vector, fake_proxy: Callable[..., FakeProxy]
) -> None:
    code = vector.event.reply
    expected_class, meaning = RFC_MEANING[code]
    proxy = fake_proxy(reply_to_request_with(vector.data))
    with pytest.raises(Socks5Error) as caught:
        await tunnel(api, proxy.url(), *DESTINATION)
    assert type(caught.value) is expected_class
    assert caught.value.reply == code
    assert meaning in str(caught.value)
    assert f"X'{code:02X}'" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "builtin"),
    [
        (Reply.NETWORK_UNREACHABLE, OSError),
        (Reply.HOST_UNREACHABLE, OSError),
        (Reply.CONNECTION_REFUSED, ConnectionRefusedError),
        (Reply.TTL_EXPIRED, TimeoutError),
        (Reply.COMMAND_NOT_SUPPORTED, ProtocolError),
        (Reply.ADDRESS_TYPE_NOT_SUPPORTED, ProtocolError),
    ],
)
async def test_failure_reply_errors_can_be_caught_as_the_builtin_error_they_resemble(
    code: Reply, builtin: type[BaseException], fake_proxy: Callable[..., FakeProxy]
) -> None:
    reply = next(vector.data for vector in FAILURE_REPLIES if vector.event.reply == code)
    proxy = fake_proxy(reply_to_request_with(reply))
    with pytest.raises(builtin):
        await tunnel("aio", proxy.url(), *DESTINATION)


@pytest.mark.parametrize("api", APIS)
async def test_unassigned_reply_code_raises_protocol_error(
    api: str, fake_proxy: Callable[..., FakeProxy]
) -> None:
    # RFC 1928 §6: X'09' to X'FF' are "unassigned".
    unassigned = REPLY_SUCCEEDED[:1] + bytes([0x09]) + REPLY_SUCCEEDED[2:]
    proxy = fake_proxy(reply_to_request_with(unassigned))
    with pytest.raises(ProtocolError, match="unassigned"):
        await tunnel(api, proxy.url(), *DESTINATION)


@pytest.mark.parametrize("api", APIS)
async def test_reply_of_another_socks_version_raises_protocol_error(
    api: str, fake_proxy: Callable[..., FakeProxy]
) -> None:
    socks4_version_reply = bytes([0x04]) + REPLY_SUCCEEDED[1:]
    proxy = fake_proxy(reply_to_request_with(socks4_version_reply))
    with pytest.raises(ProtocolError, match="version"):
        await tunnel(api, proxy.url(), *DESTINATION)


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_no_acceptable_methods_raises_auth_failed(
    api: str, fake_proxy: Callable[..., FakeProxy]
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.send(METHOD_NO_ACCEPTABLE)
        side.wait_for_close()

    proxy = fake_proxy(script)
    with pytest.raises(AuthFailed, match="none of the methods"):
        await tunnel(api, proxy.url(), *DESTINATION)
    assert proxy.received == [Greeting((AuthMethod.NO_AUTHENTICATION_REQUIRED,))]


@pytest.mark.parametrize("api", APIS)
async def test_proxy_choosing_a_method_not_offered_raises_protocol_error(
    api: str, fake_proxy: Callable[..., FakeProxy]
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.send(METHOD_USERPASS)  # the client offered no-auth only
        side.wait_for_close()

    proxy = fake_proxy(script)
    with pytest.raises(ProtocolError, match="not offered"):
        await tunnel(api, proxy.url(), *DESTINATION)


# --- SOCKS4 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("reply", "status"),
    [(SOCKS4_REJECTED, 91), (SOCKS4_IDENTD_UNREACHABLE, 92), (SOCKS4_IDENTD_MISMATCH, 93)],
    ids=["91", "92", "93"],
)
async def test_socks4_rejection_raises_request_rejected_with_its_status(
    api: str, reply: bytes, status: int, fake_proxy: Callable[..., FakeProxy]
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.send(reply)
        side.wait_for_close()

    proxy = fake_proxy(script)
    with pytest.raises(RequestRejected) as caught:
        await tunnel(api, proxy.url("socks4"), *DESTINATION)
    assert caught.value.status == status
    assert str(status) in str(caught.value)
    assert isinstance(proxy.received[0], Socks4Request)


# --- a proxy that hangs up or goes quiet ------------------------------------------------------


def _closes_after_the_first_message(side: ProxySide) -> None:
    side.receive()


def _closes_mid_method_selection(side: ProxySide) -> None:
    side.receive()
    side.send(METHOD_NO_ACCEPTABLE[:1])


def _closes_before_replying(side: ProxySide) -> None:
    greet_without_auth(side)
    side.receive()


def _closes_mid_reply(side: ProxySide) -> None:
    greet_without_auth(side)
    side.receive()
    side.send(REPLY_SUCCEEDED[:5])


def _closes_before_the_auth_status(side: ProxySide) -> None:
    side.receive()
    side.answer(MethodSelected(AuthMethod.USERNAME_PASSWORD))
    assert isinstance(side.receive(), UserPassAuth)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("script", "scheme"),
    [
        pytest.param(_closes_after_the_first_message, "socks5", id="after-greeting"),
        pytest.param(_closes_mid_method_selection, "socks5", id="mid-method-selection"),
        pytest.param(_closes_before_the_auth_status, "userpass", id="before-auth-status"),
        pytest.param(_closes_before_replying, "socks5", id="before-reply"),
        pytest.param(_closes_mid_reply, "socks5", id="mid-reply"),
        pytest.param(_closes_after_the_first_message, "socks4", id="socks4-before-reply"),
    ],
)
async def test_proxy_closing_mid_handshake_raises_protocol_error(
    api: str,
    script: Callable[[ProxySide], None],
    scheme: str,
    fake_proxy: Callable[..., FakeProxy],
) -> None:
    proxy = fake_proxy(script)
    url = {
        "socks5": proxy.url(),
        "userpass": proxy.url("socks5", "alice", "s3cret"),
        "socks4": proxy.url("socks4"),
    }[scheme]
    with pytest.raises(ProtocolError, match=r"(?i)closed"):
        await tunnel(api, url, *DESTINATION)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("api", APIS)
async def test_proxy_that_never_answers_raises_proxy_timeout(api: str, silent_proxy: str) -> None:
    with pytest.raises(ProxyTimeout):
        await tunnel(api, silent_proxy, *DESTINATION, timeout=SMALL_TIMEOUT)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("api", APIS)
async def test_proxy_that_never_replies_to_the_request_raises_proxy_timeout(
    api: str, fake_proxy: Callable[..., FakeProxy]
) -> None:
    def script(side: ProxySide) -> None:
        greet_without_auth(side)
        assert isinstance(side.receive(), CommandRequest)
        side.wait_for_close()

    proxy = fake_proxy(script)
    with pytest.raises(ProxyTimeout):
        await tunnel(api, proxy.url(), *DESTINATION, timeout=SMALL_TIMEOUT)


@pytest.mark.parametrize("api", APIS)
async def test_proxy_nobody_listens_on_raises_connection_refused_error(api: str) -> None:
    with pytest.raises(ConnectionRefusedError):
        await tunnel(api, f"socks5://127.0.0.1:{closed_port()}", *DESTINATION)


@pytest.mark.parametrize(
    "api",
    [
        pytest.param(
            "aio",
        ),
        "sync",
    ],
)
async def test_proxy_nobody_listens_on_is_not_mistaken_for_a_proxy_reply(api: str) -> None:
    with pytest.raises(OSError) as caught:
        await tunnel(api, f"socks5://127.0.0.1:{closed_port()}", *DESTINATION)
    assert not isinstance(caught.value, Socks5Error)


# --- real refusals from our server ------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_refused_destination_port_raises_connection_refused(api: str, socks_server) -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefused) as caught:
        await tunnel(api, socks_server.url(), "127.0.0.1", port)
    assert caught.value.reply == Reply.CONNECTION_REFUSED
    assert "Connection refused" in str(caught.value)
    record = (await asyncio.to_thread(socks_server.wait_records, 1))[0]
    assert (record["destination"], record["reply"]) == (f"127.0.0.1:{port}", "connection_refused")


async def _unresolvable(name: DomainName, port: int) -> list[Target]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize("api", APIS)
async def test_name_the_proxy_cannot_resolve_raises_host_unreachable(
    api: str, start_server_with_resolver
) -> None:
    server = start_server_with_resolver(_unresolvable)
    with pytest.raises(HostUnreachable) as caught:
        await tunnel(api, server.url("socks5h"), "no-such-host.invalid", 80)
    assert caught.value.reply == Reply.HOST_UNREACHABLE
    assert "Host unreachable" in str(caught.value)
    record = (await asyncio.to_thread(server.wait_records, 1))[0]
    assert (record["destination"], record["reply"]) == (
        "no-such-host.invalid:80",
        "host_unreachable",
    )
