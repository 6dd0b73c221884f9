"""The handshake generator without I/O: what it writes, when it reads, what it returns.

`negotiate` yields bytes to write or READ and is sent the proxy's next event; `take_event`
says how many peeked bytes a message used, which is all the client may take from the socket.
Wire bytes are the RFC fixtures of `vectors`.
"""

from __future__ import annotations

import ipaddress

import pytest

from socks5d.client import (
    Gssapi,
    GssapiOptions,
    NoAuthentication,
    ProtectionLevel,
    Proxy,
    UsernamePassword,
)
from socks5d.client.handshake import (
    READ,
    Link,
    Steps,
    destination_for,
    methods_for,
    negotiate,
    second_reply,
    take_event,
)
from socks5d.errors import AuthFailed, ConnectionRefused
from socks5d.proto import (
    Address,
    AuthMethod,
    ClientConnection,
    Command,
    ConnectionClosed,
    DomainName,
)
from vectors import (
    AUTH_FAILURE,
    AUTH_SUCCESS,
    EXAMPLE,
    GREETING_NOAUTH,
    GREETING_USERPASS,
    IPV4_BOUND,
    METHOD_NOAUTH,
    METHOD_USERPASS,
    REPLY_CONNECTION_REFUSED,
    REPLY_SUCCEEDED,
    REPLY_SUCCEEDED_PEER,
    REQUEST_BIND_DOMAIN,
    REQUEST_CONNECT_DOMAIN,
    SOCKS4_CONNECT,
    SOCKS4_GRANTED_BIND,
    SOCKS4A_CONNECT,
    USERPASS_ALICE,
)

EXAMPLE_80 = Address(EXAMPLE, 80)
#: RFC 1928 §3: VER, NMETHODS, METHODS in our order of preference: X'02' before X'00'.
GREETING_USERPASS_THEN_NOAUTH = bytes([0x05, 0x02, 0x02, 0x00])


def run(
    steps: Steps, connection: ClientConnection, proxy_says: list[bytes]
) -> tuple[list[bytes], Address]:
    """Drive `steps` against a proxy that answers each READ with the next of `proxy_says`
    (each a whole message); returns what the client wrote and what the handshake returned."""
    written: list[bytes] = []
    answers = list(proxy_says)
    message = None
    while True:
        try:
            step = steps.send(message)
        except StopIteration as done:
            assert not answers, f"unread answers {answers}"
            return written, done.value
        if step is READ:
            data = answers.pop(0)
            message, used = take_event(connection, data)
            assert message is not None
            assert used == len(data)
        else:
            assert isinstance(step, bytes)
            written.append(step)
            message = None


def test_no_auth_connect_writes_greeting_then_request_and_returns_bnd_address() -> None:
    connection = ClientConnection()
    written, bound = run(
        negotiate(Link(connection), Proxy("proxy.example"), Command.CONNECT, EXAMPLE_80),
        connection,
        [METHOD_NOAUTH, REPLY_SUCCEEDED],
    )
    assert written == [GREETING_NOAUTH, REQUEST_CONNECT_DOMAIN]
    assert bound == Address(IPV4_BOUND, 1080)


def test_credentials_offer_userpass_first_and_send_rfc1929_request() -> None:
    connection = ClientConnection()
    proxy = Proxy("proxy.example", username="alice", password="s3cret")
    written, _ = run(
        negotiate(Link(connection), proxy, Command.CONNECT, EXAMPLE_80),
        connection,
        [METHOD_USERPASS, AUTH_SUCCESS, REPLY_SUCCEEDED],
    )
    assert written == [GREETING_USERPASS_THEN_NOAUTH, USERPASS_ALICE, REQUEST_CONNECT_DOMAIN]


def test_credentials_are_not_sent_when_the_proxy_picks_no_auth() -> None:
    connection = ClientConnection()
    proxy = Proxy("proxy.example", username="alice", password="s3cret")
    written, _ = run(
        negotiate(Link(connection), proxy, Command.CONNECT, EXAMPLE_80),
        connection,
        [METHOD_NOAUTH, REPLY_SUCCEEDED],
    )
    assert written == [GREETING_USERPASS_THEN_NOAUTH, REQUEST_CONNECT_DOMAIN]


def test_auth_failure_status_raises_auth_failed_naming_the_user_not_the_password() -> None:
    connection = ClientConnection()
    proxy = Proxy("proxy.example", username="alice", password="s3cret")
    with pytest.raises(AuthFailed) as caught:
        run(
            negotiate(Link(connection), proxy, Command.CONNECT, EXAMPLE_80),
            connection,
            [METHOD_USERPASS, AUTH_FAILURE],
        )
    assert "alice" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_explicit_methods_replace_the_default_offer() -> None:
    connection = ClientConnection()
    written, _ = run(
        negotiate(
            Link(connection),
            Proxy("proxy.example"),
            Command.CONNECT,
            EXAMPLE_80,
            methods=[UsernamePassword("alice", "s3cret")],
        ),
        connection,
        [METHOD_USERPASS, AUTH_SUCCESS, REPLY_SUCCEEDED],
    )
    assert written[:2] == [GREETING_USERPASS, USERPASS_ALICE]


def test_failure_reply_raises_from_the_generator() -> None:
    connection = ClientConnection()
    with pytest.raises(ConnectionRefused):
        run(
            negotiate(Link(connection), Proxy("proxy.example"), Command.CONNECT, EXAMPLE_80),
            connection,
            [METHOD_NOAUTH, REPLY_CONNECTION_REFUSED],
        )


def test_bind_returns_first_reply_then_second_reply_returns_the_peer() -> None:
    connection = ClientConnection()
    written, bound = run(
        negotiate(Link(connection), Proxy("proxy.example"), Command.BIND, EXAMPLE_80),
        connection,
        [METHOD_NOAUTH, REPLY_SUCCEEDED],
    )
    assert written[-1] == REQUEST_BIND_DOMAIN
    assert bound == Address(IPV4_BOUND, 1080)
    _, peer = run(second_reply(), connection, [REPLY_SUCCEEDED_PEER])
    assert peer == Address(ipaddress.IPv4Address("192.0.2.1"), 80)


def test_socks4_writes_one_request_with_the_username_as_userid() -> None:
    connection = ClientConnection()
    proxy = Proxy("proxy.example", version=4, remote_dns=False, username="Fred")
    destination = Address(ipaddress.IPv4Address("66.102.7.99"), 80)
    written, bound = run(
        negotiate(Link(connection), proxy, Command.CONNECT, destination),
        connection,
        [SOCKS4_GRANTED_BIND],
    )
    assert written == [SOCKS4_CONNECT]
    assert bound == Address(IPV4_BOUND, 1080)


def test_socks4a_sends_the_name() -> None:
    connection = ClientConnection()
    proxy = Proxy("proxy.example", version=4, remote_dns=True, username="Fred")
    written, _ = run(
        negotiate(
            Link(connection), proxy, Command.CONNECT, destination_for(proxy, "example.com", 80)
        ),
        connection,
        [SOCKS4_GRANTED_BIND],
    )
    assert written == [SOCKS4A_CONNECT]


def test_socks4_without_remote_dns_refuses_a_name() -> None:
    with pytest.raises(ValueError, match="socks4a"):
        destination_for(Proxy("h", version=4, remote_dns=False), "example.com", 80)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.1", ipaddress.IPv4Address("192.0.2.1")),
        ("2001:db8::1", ipaddress.IPv6Address("2001:db8::1")),
        ("example.com", DomainName("example.com")),
    ],
)
def test_destination_keeps_ip_literals_and_names(host: str, expected: object) -> None:
    assert destination_for(Proxy("h"), host, 80).host == expected


def test_methods_offered_without_credentials_are_no_auth_only() -> None:
    assert methods_for(Proxy("h")) == [NoAuthentication()]
    assert methods_for(Proxy("h", username="alice", password="s3cret")) == [
        UsernamePassword("alice", "s3cret"),
        NoAuthentication(),
    ]


# --- take_event: never consume past the proxy's message ---------------------------------------


def _awaiting_reply() -> ClientConnection:
    """A connection that has written its request and waits for the reply."""
    connection = ClientConnection()
    steps = negotiate(Link(connection), Proxy("h"), Command.CONNECT, EXAMPLE_80)
    assert next(steps) == GREETING_NOAUTH
    assert steps.send(None) is READ
    selected, _ = take_event(connection, METHOD_NOAUTH)
    assert steps.send(selected) == REQUEST_CONNECT_DOMAIN
    return connection


def test_take_event_leaves_the_bytes_after_the_reply_in_the_socket() -> None:
    connection = _awaiting_reply()
    banner = b"220 smtp.example ESMTP\r\n"
    event, used = take_event(connection, REPLY_SUCCEEDED + banner)
    assert event is not None
    assert used == len(REPLY_SUCCEEDED)


def test_take_event_one_byte_at_a_time_uses_each_byte_and_waits_for_the_last() -> None:
    connection = _awaiting_reply()
    for octet in REPLY_SUCCEEDED[:-1]:
        assert take_event(connection, bytes([octet])) == (None, 1)
    event, used = take_event(connection, REPLY_SUCCEEDED[-1:])
    assert event is not None
    assert used == 1


def test_take_event_at_eof_after_a_whole_message_reports_closed() -> None:
    connection = _awaiting_reply()
    assert take_event(connection, b"") == (ConnectionClosed(0), 0)


def test_take_event_at_eof_after_a_partial_message_uses_nothing() -> None:
    connection = _awaiting_reply()
    assert take_event(connection, REPLY_SUCCEEDED[:3]) == (None, 3)
    event, used = take_event(connection, b"")
    assert isinstance(event, ConnectionClosed)
    assert used == 0


def test_gssapi_proxy_is_offered_gssapi_alone() -> None:
    """Offering no-auth beside GSS-API would let a proxy downgrade the client silently."""
    options = GssapiOptions(ProtectionLevel.INTEGRITY, service="socks")
    proxy = Proxy("proxy.example", gssapi=options)
    methods = methods_for(proxy, Command.CONNECT)
    assert [method.code for method in methods] == [AuthMethod.GSSAPI]
    assert methods == [Gssapi(options, "proxy.example", in_sequence=True)]


def test_gssapi_service_host_and_udp_sequence_setting() -> None:
    options = GssapiOptions(host="proxy.example.org")
    (method,) = methods_for(Proxy("10.0.0.1", gssapi=options), Command.UDP_ASSOCIATE)
    # the principal's host part, and no sequence checking for datagrams that may be lost
    assert method == Gssapi(options, "proxy.example.org", in_sequence=False)
