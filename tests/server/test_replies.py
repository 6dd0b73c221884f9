"""Every REP the server sends over loopback (RFC 1928 §6), and the close that follows a failure.

§6: "When a reply (REP value other than X'00') indicates a failure, the SOCKS server MUST
terminate the TCP connection shortly after sending the reply." The routing errors
(X'02', X'03', X'04' from the kernel) need a private network: see test_netns_replies.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from socks5d.proto import (
    SOCKS5_VERSION,
    Address,
    AddressType,
    AuthMethod,
    Command,
    CommandReply,
    DomainName,
    Reply,
)
from socks5d.proto.rfc1928 import encode_reply
from socks5d.server.connect import Target

from .raw_client import (
    connect,
    greeting_bytes,
    loopback_address,
    read_reply,
    read_until_eof,
    recv_exactly,
    request_bytes,
)

NO_AUTH_SELECTED = bytes([SOCKS5_VERSION, AuthMethod.NO_AUTHENTICATION_REQUIRED])


def failure_reply(reply: Reply) -> bytes:
    """A failure reply as the server sends it: BND.ADDR 0.0.0.0, BND.PORT 0."""
    return encode_reply(CommandReply(reply))


def answer_to_request(server, request: bytes) -> bytes:
    """Greet without authentication, send `request`, return everything until the server's EOF."""
    with connect(server) as sock:
        sock.sendall(greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        assert recv_exactly(sock, 2) == NO_AUTH_SELECTED
        sock.sendall(request)
        return read_until_eof(sock)


@pytest.fixture
def ipv6_listener() -> Iterator[socket.socket]:
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as sock:
        sock.settimeout(5)
        yield sock


@pytest.fixture(params=["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def closed_port(request: pytest.FixtureRequest) -> Iterator[Address]:
    """An address whose port is bound but not listening: connecting to it is refused."""
    family = socket.AF_INET6 if ":" in request.param else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((request.param, 0))
        yield loopback_address(sock)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_success_reply_carries_the_outbound_sockets_real_local_address(
    socks_server, listener: socket.socket, ipv6_listener: socket.socket, family: str
) -> None:
    destination_listener = listener if family == "ipv4" else ipv6_listener
    with connect(socks_server) as sock:
        sock.sendall(greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        assert recv_exactly(sock, 2) == NO_AUTH_SELECTED
        sock.sendall(request_bytes(Command.CONNECT, loopback_address(destination_listener)))
        reply, raw = read_reply(sock)
        peer, peer_address = destination_listener.accept()
        peer.close()
    assert reply.reply == Reply.SUCCEEDED
    assert reply.bound == Address.from_host(*peer_address[:2])
    assert raw[3] == (AddressType.IPV4 if family == "ipv4" else AddressType.IPV6)
    record = socks_server.wait_records(1)[0]
    assert record["reply"] == "succeeded"
    assert record["destination"] == str(loopback_address(destination_listener))


def test_connect_to_a_closed_port_replies_connection_refused_then_closes(
    socks_server, closed_port: Address
) -> None:
    answer = answer_to_request(socks_server, request_bytes(Command.CONNECT, closed_port))
    assert answer == failure_reply(Reply.CONNECTION_REFUSED)
    record = socks_server.wait_records(1)[0]
    assert record["reply"] == "connection_refused"
    assert record["destination"] == str(closed_port)


async def _unresolvable(name: DomainName, port: int) -> list[Target]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_unresolvable_domain_replies_host_unreachable_then_closes(
    start_server_with_resolver,
) -> None:
    server = start_server_with_resolver(_unresolvable)
    request = request_bytes(Command.CONNECT, Address.from_host("no-such-host.invalid", 80))
    assert answer_to_request(server, request) == failure_reply(Reply.HOST_UNREACHABLE)
    record = server.wait_records(1)[0]
    assert record["reply"] == "host_unreachable"
    assert record["outcome"] == "cannot resolve: Name or service not known"
    assert record["destination"] == "no-such-host.invalid:80"


def test_domain_destination_is_connected_through_the_servers_resolver(
    start_server_with_resolver, listener: socket.socket
) -> None:
    asked: list[tuple[str, int]] = []

    async def resolve_to_listener(name: DomainName, port: int) -> list[Target]:
        asked.append((name, port))
        return [(socket.AF_INET, ("127.0.0.1", listener.getsockname()[1]))]

    server = start_server_with_resolver(resolve_to_listener)
    with connect(server) as sock:
        sock.sendall(greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        assert recv_exactly(sock, 2) == NO_AUTH_SELECTED
        sock.sendall(request_bytes(Command.CONNECT, Address.from_host("proxied.example", 8080)))
        reply, _ = read_reply(sock)
        listener.accept()[0].close()
    assert reply.reply == Reply.SUCCEEDED
    assert asked == [("proxied.example", 8080)]


@pytest.fixture
def unanswering_destination() -> Iterator[Address]:
    """A port whose SYNs are dropped: `listen(0)` with its accept queue already full.

    Linux keeps one unaccepted connection for a backlog of 0 and drops further SYNs while the
    queue is full, so a connect to it neither succeeds nor fails: it hangs.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        with socket.create_connection(sock.getsockname(), timeout=5):  # fills the queue
            yield loopback_address(sock)


def test_connect_timeout_replies_host_unreachable_then_closes(
    start_server, unanswering_destination: Address
) -> None:
    server = start_server(timeouts={"connect": 0.5})
    request = request_bytes(Command.CONNECT, unanswering_destination)
    assert answer_to_request(server, request) == failure_reply(Reply.HOST_UNREACHABLE)
    record = server.wait_records(1)[0]
    assert record["reply"] == "host_unreachable"
    assert record["outcome"] == "connect timed out"


#: IPv4 127.0.0.1 port 80 with its port, after ATYP.
_LOOPBACK_80 = bytes([127, 0, 0, 1, 0, 80])


@pytest.mark.parametrize(
    ("request_data", "command"),
    [
        pytest.param(b"\x05\x09\x00\x01" + _LOOPBACK_80, None, id="unknown-cmd-09"),
        pytest.param(b"\x05\xff\x00\x01" + _LOOPBACK_80, None, id="unknown-cmd-ff"),
        pytest.param(b"\x05\x00\x00\x01" + _LOOPBACK_80, None, id="unknown-cmd-00"),
    ],
)
def test_unknown_command_replies_command_not_supported_then_closes(
    socks_server, request_data: bytes, command: str | None
) -> None:
    answer = answer_to_request(socks_server, request_data)
    assert answer == failure_reply(Reply.COMMAND_NOT_SUPPORTED)
    record = socks_server.wait_records(1)[0]
    assert record["reply"] == "command_not_supported"
    assert record["command"] == command


@pytest.mark.parametrize("address_type", [0x00, 0x02, 0x05, 0xFF])
def test_unknown_address_type_replies_address_type_not_supported_then_closes(
    socks_server, address_type: int
) -> None:
    answer = answer_to_request(socks_server, bytes([5, 1, 0, address_type]) + _LOOPBACK_80)
    assert answer == failure_reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED)
    assert socks_server.wait_records(1)[0]["reply"] == "address_type_not_supported"


@pytest.mark.parametrize(
    "request_data",
    [
        pytest.param(b"\x05\x01\x01\x01" + _LOOPBACK_80, id="reserved-octet-not-zero"),
        pytest.param(b"\x04\x01\x00\x01" + _LOOPBACK_80, id="request-version-4"),
        pytest.param(b"\x05\x01\x00\x03\x00\x00\x50", id="empty-domain-name"),
    ],
)
def test_malformed_request_replies_general_failure_then_closes(
    socks_server, request_data: bytes
) -> None:
    answer = answer_to_request(socks_server, request_data)
    assert answer == failure_reply(Reply.GENERAL_FAILURE)
    record = socks_server.wait_records(1)[0]
    assert record["reply"] == "general_failure"
    assert record["outcome"].startswith("protocol error")
