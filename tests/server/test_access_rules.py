"""Access rules on real requests over loopback: `[[client]]` before the greeting, `[[socks]]`
on CONNECT, BIND (the request and the incoming peer) and UDP (each datagram), names checked
again with every address they resolve to.

A refused request gets X'02' (RFC 1928 §6: "connection not allowed by ruleset") and its access
record names the deciding rule. That nothing reached a destination is proven without waiting for
silence: after the refusal the test connects to the destination listener itself, and the first
connection it accepts must be its own. UDP drops are proven the way tests/server/test_udp.py
does: the datagram that must be dropped goes first, one that must pass goes after it.

"Other hosts" are other loopback addresses (127.0.0.2), names are `localhost` or come from a
fake resolver: nothing leaves the machine and no DNS server is asked.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from socks5d.config import build_config
from socks5d.proto import Address, Command, CommandReply, DomainName, Reply, UdpDatagram
from socks5d.rules import Request
from socks5d.server import Server
from socks5d.server.connect import Target
from socks5d.server.hostaddresses import own_addresses

from .raw_client import (
    IO_TIMEOUT,
    echo_once,
    loopback_address,
    open_request,
    open_tunnel,
    read_reply,
    read_until_eof,
    receive_relayed,
    recv_exactly,
    udp_packet,
    udp_socket,
)

OTHER_HOST = "127.0.0.2"
#: DST.ADDR/DST.PORT all zeros: BIND for anyone, UDP from a port not yet known.
ANYONE = Address.from_host("0.0.0.0", 0)
NOT_ALLOWED = CommandReply(Reply.CONNECTION_NOT_ALLOWED)


# --- helpers ------------------------------------------------------------------------------------


def entry(server: Any, index: int) -> SimpleNamespace:
    """The `index`th listener of a server, as something `open_request` can connect to."""
    host, port = server.server.addresses[index]
    return SimpleNamespace(address=(host, port))


def assert_connect_passes(
    server: Any, listener: socket.socket, destination: Address | None = None, **kwargs: Any
) -> None:
    """CONNECT through `server` reaches `listener`, and the tunnel carries bytes."""
    client, reply = open_request(
        server, Command.CONNECT, destination or loopback_address(listener), **kwargs
    )
    with client:
        assert reply.reply == Reply.SUCCEEDED
        accepted, _ = listener.accept()
        with accepted:
            client.sendall(b"ping")
            assert recv_exactly(accepted, 4) == b"ping"


def assert_connect_refused(server: Any, destination: Address, **kwargs: Any) -> None:
    """CONNECT through `server` gets X'02', then the server closes."""
    client, reply = open_request(server, Command.CONNECT, destination, **kwargs)
    with client:
        assert reply == NOT_ALLOWED
        assert read_until_eof(client) == b""


def assert_nothing_reached(listener: socket.socket) -> None:
    """The first connection `listener` accepts is the one made here: the server made none."""
    with socket.create_connection(listener.getsockname()[:2], timeout=IO_TIMEOUT) as probe:
        accepted, peer = listener.accept()
        with accepted:
            assert peer == probe.getsockname()


def records_by_client_host(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["client"].rpartition(":")[0]: record for record in records}


@pytest.fixture
def other_listener() -> Iterator[socket.socket]:
    """A destination listening on 127.0.0.2 with an ephemeral port."""
    with socket.create_server((OTHER_HOST, 0)) as sock:
        sock.settimeout(IO_TIMEOUT)
        yield sock


@pytest.fixture
def free_port_of_other_host() -> int:
    """A TCP port of 127.0.0.2 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((OTHER_HOST, 0))
        return int(sock.getsockname()[1])


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def server_log() -> Iterator[Callable[[str], list[str]]]:
    """`server_log("socks5d.server.listen")`: the messages that logger writes from now on."""
    installed: list[tuple[logging.Logger, _Collector, int]] = []

    def collect(name: str) -> list[str]:
        logger = logging.getLogger(name)
        collector = _Collector()
        installed.append((logger, collector, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(collector)
        return collector.messages

    yield collect
    for logger, collector, level in installed:
        logger.removeHandler(collector)
        logger.setLevel(level)


@pytest.fixture
def no_host_name_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """`block_private_destinations` looks up this host's name: make it `localhost`, which
    /etc/hosts answers, so no test asks a DNS server."""
    monkeypatch.setattr(socket, "gethostname", lambda: "localhost")


# --- CONNECT: the reply and the record ------------------------------------------------------------


def test_block_rule_replies_connection_not_allowed_and_the_record_names_the_rule(
    start_server, listener: socket.socket
) -> None:
    server = start_server(
        socks=[{"action": "pass", "port": ["1-1023"]}, {"action": "block", "to": ["127.0.0.0/8"]}]
    )
    destination = loopback_address(listener)
    assert_connect_refused(server, destination)
    assert_nothing_reached(listener)
    record = server.wait_records(1)[0]
    assert record["reply"] == "connection_not_allowed"
    assert record["rule"] == "socks[1]"
    assert record["command"] == "connect"
    assert record["destination"] == str(destination)
    assert "blocked by socks[1]" in record["outcome"]


def test_default_block_is_named_rules_socks_default(start_server, listener) -> None:
    server = start_server(
        rules={"socks_default": "block"}, socks=[{"action": "pass", "to": ["10.0.0.0/8"]}]
    )
    assert_connect_refused(server, loopback_address(listener))
    record = server.wait_records(1)[0]
    assert (record["reply"], record["rule"]) == ("connection_not_allowed", "rules.socks_default")


def test_a_passed_request_is_served_and_names_no_rule(start_server, listener) -> None:
    server = start_server(
        rules={"socks_default": "block"}, socks=[{"action": "pass", "to": ["127.0.0.0/8"]}]
    )
    assert_connect_passes(server, listener)
    record = server.wait_records(1)[0]
    assert (record["reply"], record["rule"]) == ("succeeded", None)


# --- CONNECT: each field decides --------------------------------------------------------------


def test_from_decides_by_the_clients_address(start_server, listener) -> None:
    server = start_server(socks=[{"action": "block", "from": [f"{OTHER_HOST}/32"]}])
    assert_connect_refused(server, loopback_address(listener), source=OTHER_HOST)
    assert_connect_passes(server, listener, source="127.0.0.1")
    records = records_by_client_host(server.wait_records(2))
    assert records[OTHER_HOST]["rule"] == "socks[0]"
    assert records["127.0.0.1"]["reply"] == "succeeded"


def test_user_decides_by_the_authenticated_name(start_server, listener) -> None:
    server = start_server(
        users={"alice": "alice-pw", "bob": "bob-pw"},
        socks=[{"action": "block", "user": ["bob"]}],
    )
    client, reply = open_tunnel(
        server, loopback_address(listener), username="bob", password="bob-pw"
    )
    with client:
        assert reply == NOT_ALLOWED
    client, reply = open_tunnel(
        server, loopback_address(listener), username="alice", password="alice-pw"
    )
    with client:
        assert reply.reply == Reply.SUCCEEDED
        listener.accept()[0].close()
    records = {record["user"]: record for record in server.wait_records(2)}
    assert (records["bob"]["reply"], records["bob"]["rule"]) == (
        "connection_not_allowed",
        "socks[0]",
    )
    assert records["alice"]["reply"] == "succeeded"


def test_group_decides_by_membership_in_groups(start_server, listener) -> None:
    server = start_server(
        users={"alice": "alice-pw", "bob": "bob-pw"},
        groups={"staff": ["alice"]},
        rules={"socks_default": "block"},
        socks=[{"action": "pass", "group": ["staff"]}],
    )
    client, reply = open_tunnel(
        server, loopback_address(listener), username="alice", password="alice-pw"
    )
    with client:
        assert reply.reply == Reply.SUCCEEDED
        listener.accept()[0].close()
    client, reply = open_tunnel(
        server, loopback_address(listener), username="bob", password="bob-pw"
    )
    with client:
        assert reply == NOT_ALLOWED
    records = {record["user"]: record for record in server.wait_records(2)}
    assert records["alice"]["reply"] == "succeeded"
    assert records["bob"]["rule"] == "rules.socks_default"


def test_command_bind_blocks_bind_and_not_connect(start_server, listener) -> None:
    server = start_server(socks=[{"action": "block", "command": ["bind"]}])
    client, reply = open_request(server, Command.BIND, ANYONE)
    with client:
        assert reply == NOT_ALLOWED
    assert_connect_passes(server, listener)
    records = {record["command"]: record for record in server.wait_records(2)}
    assert records["bind"]["rule"] == "socks[0]"
    assert records["connect"]["reply"] == "succeeded"


@pytest.mark.parametrize("spelling", ["udp", "udpassociate", "udp_associate"])
def test_command_udp_blocks_udp_associate_and_not_connect(
    start_server, listener, spelling: str
) -> None:
    server = start_server(socks=[{"action": "block", "command": [spelling]}])
    client, reply = open_request(server, Command.UDP_ASSOCIATE, ANYONE)
    with client:
        assert reply == NOT_ALLOWED
    assert_connect_passes(server, listener)
    records = {record["command"]: record for record in server.wait_records(2)}
    assert records["udp_associate"]["rule"] == "socks[0]"
    assert records["connect"]["reply"] == "succeeded"


def test_to_network_decides_by_the_destination_address(
    start_server, listener, other_listener
) -> None:
    server = start_server(socks=[{"action": "block", "to": [f"{OTHER_HOST}/32"]}])
    assert_connect_refused(server, loopback_address(other_listener))
    assert_nothing_reached(other_listener)
    assert_connect_passes(server, listener)


@pytest.mark.parametrize("pattern", ["localhost", "LOCALHOST.", ".localhost"])
def test_to_domain_pattern_decides_by_the_name_not_the_address(
    start_server, listener, pattern: str
) -> None:
    server = start_server(socks=[{"action": "block", "to": [pattern]}])
    port = listener.getsockname()[1]
    assert_connect_refused(server, Address(DomainName("localhost"), port))
    assert_nothing_reached(listener)
    # the same host by address: no name, the pattern cannot match
    assert_connect_passes(server, listener, Address.from_host("127.0.0.1", port))
    records = {record["destination"]: record for record in server.wait_records(2)}
    assert records[f"localhost:{port}"]["rule"] == "socks[0]"


def test_subdomain_only_pattern_lets_the_domain_itself_through(start_server, listener) -> None:
    server = start_server(
        rules={"socks_default": "block"},
        socks=[
            {"action": "block", "to": ["*.localhost"]},
            {"action": "pass", "to": ["localhost"]},
        ],
    )
    port = listener.getsockname()[1]
    assert_connect_passes(server, listener, Address(DomainName("localhost"), port))


@pytest.mark.parametrize(
    ("form", "refused"),
    [
        (lambda port: f"{port}", True),
        (lambda port: f"eq {port}", True),
        (lambda port: f"{port - 1} - {port + 1}", True),
        (lambda port: ">= 1024", True),
        (lambda port: f"> {port}", False),
        (lambda port: "1-1023", False),
        (lambda port: f"!= {port}", False),
    ],
    ids=["exact", "eq", "range", ">= 1024", "> port", "1-1023", "!= port"],
)
def test_port_decides_by_the_destination_port(
    start_server, listener, form: Callable[[int], str], refused: bool
) -> None:
    port = listener.getsockname()[1]
    assert port >= 1024  # an ephemeral port
    server = start_server(socks=[{"action": "block", "port": [form(port)]}])
    if refused:
        assert_connect_refused(server, loopback_address(listener))
        assert_nothing_reached(listener)
        assert server.wait_records(1)[0]["rule"] == "socks[0]"
    else:
        assert_connect_passes(server, listener)


@pytest.mark.parametrize("form", ["ip", "ip:port"])
def test_listener_decides_by_the_address_the_client_connected_to(
    start_server, listener, free_port_of_other_host: int, form: str
) -> None:
    second = f"{OTHER_HOST}:{free_port_of_other_host}"
    server = start_server(
        listen=["127.0.0.1:0", second],
        socks=[{"action": "block", "listener": [OTHER_HOST if form == "ip" else second]}],
    )
    assert_connect_refused(entry(server, 1), loopback_address(listener))
    assert_nothing_reached(listener)
    assert_connect_passes(entry(server, 0), listener)
    records = {record["listener"]: record for record in server.wait_records(2)}
    assert records[second]["rule"] == "socks[0]"
    assert records[second]["reply"] == "connection_not_allowed"


def test_ipv4_block_rule_also_refuses_the_ipv4_mapped_spelling(start_server, listener) -> None:
    server = start_server(socks=[{"action": "block", "to": ["127.0.0.0/8"]}])
    port = listener.getsockname()[1]
    client, reply = open_request(
        server, Command.CONNECT, Address.from_host("::ffff:127.0.0.1", port)
    )
    with client:
        assert reply == NOT_ALLOWED


# --- [[client]]: before the greeting -------------------------------------------------------


def test_client_block_closes_before_the_greeting_and_logs_the_rule(
    start_server, server_log
) -> None:
    messages = server_log("socks5d.server.listen")
    server = start_server(client=[{"action": "block", "from": [f"{OTHER_HOST}/32"]}])
    with socket.create_connection(
        server.address, timeout=IO_TIMEOUT, source_address=(OTHER_HOST, 0)
    ) as refused:
        local = refused.getsockname()
        assert read_until_eof(refused) == b""  # not even a method selection
    refusals = [m for m in messages if m.startswith("refused")]
    assert refusals == [
        f"refused {local[0]}:{local[1]} on {server.host}:{server.port}: blocked by client[0]"
    ]
    assert server.server.refused == {"blocked by client[0]": 1}
    # 127.0.0.1 is served; the refused client never became a session with a record
    client, reply = open_request(server, Command.BIND, ANYONE)
    client.close()
    assert reply.reply == Reply.SUCCEEDED
    records = server.wait_records(1)
    assert [record["client"].rpartition(":")[0] for record in records] == ["127.0.0.1"]


def test_client_default_block_with_a_listener_rule(start_server, server_log, listener) -> None:
    messages = server_log("socks5d.server.listen")
    server = start_server(
        listen=["127.0.0.1:0", f"{OTHER_HOST}:0"],
        rules={"client_default": "block"},
        client=[{"action": "pass", "listener": ["127.0.0.1"]}],
    )
    with socket.create_connection(entry(server, 1).address, timeout=IO_TIMEOUT) as refused:
        assert read_until_eof(refused) == b""
    refusals = [m for m in messages if m.startswith("refused")]
    assert len(refusals) == 1
    assert refusals[0].endswith("blocked by rules.client_default")
    assert_connect_passes(entry(server, 0), listener)


# --- names: checked again with every resolved address (DNS rebinding) ------------------------


def test_private_preset_refuses_a_name_resolving_to_loopback(
    start_server, listener, no_host_name_lookup
) -> None:
    server = start_server(rules={"block_private_destinations": True})
    port = listener.getsockname()[1]
    assert_connect_refused(server, Address(DomainName("localhost"), port))
    assert_nothing_reached(listener)
    record = server.wait_records(1)[0]
    assert record["rule"] == "block_private_destinations"
    assert record["destination"] == f"localhost:{port}"
    # refused for an address it resolved to (localhost may resolve to ::1 as well)
    assert re.search(r" \((127\.0\.0\.1|::1)\) blocked by ", record["outcome"]), record["outcome"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_private_preset_refuses_loopback_addresses_including_ipv4_mapped(
    start_server, listener, no_host_name_lookup, host: str
) -> None:
    server = start_server(rules={"block_private_destinations": True})
    assert_connect_refused(server, Address.from_host(host, listener.getsockname()[1]))
    assert_nothing_reached(listener)
    assert server.wait_records(1)[0]["rule"] == "block_private_destinations"


def test_private_preset_comes_before_every_pass_rule(
    start_server, listener, no_host_name_lookup
) -> None:
    server = start_server(
        rules={"block_private_destinations": True},
        socks=[{"action": "pass", "to": ["127.0.0.0/8", "localhost"]}],
    )
    assert_connect_refused(server, loopback_address(listener))
    assert_nothing_reached(listener)
    assert server.wait_records(1)[0]["rule"] == "block_private_destinations"


def test_name_passes_the_name_check_and_is_refused_for_its_resolved_address(
    start_server_with_resolver, listener
) -> None:
    asked: list[tuple[str, int]] = []

    async def rebinding(name: DomainName, port: int) -> list[Target]:
        asked.append((str(name), port))
        return [(socket.AF_INET, ("127.0.0.1", port))]

    server = start_server_with_resolver(
        rebinding, socks=[{"action": "block", "to": ["127.0.0.0/8"]}]
    )
    port = listener.getsockname()[1]
    assert_connect_refused(server, Address(DomainName("rebind.test"), port))
    assert asked == [("rebind.test", port)]  # the name alone was allowed: it got resolved
    assert_nothing_reached(listener)
    record = server.wait_records(1)[0]
    assert (record["reply"], record["rule"]) == ("connection_not_allowed", "socks[0]")


def test_one_blocked_address_among_several_refuses_the_name(
    start_server_with_resolver, listener
) -> None:
    async def two_addresses(name: DomainName, port: int) -> list[Target]:
        return [(socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET, (OTHER_HOST, port))]

    server = start_server_with_resolver(
        two_addresses, socks=[{"action": "block", "to": [f"{OTHER_HOST}/32"]}]
    )
    assert_connect_refused(server, Address(DomainName("two.test"), listener.getsockname()[1]))
    assert_nothing_reached(listener)  # not even the allowed address was tried
    assert server.wait_records(1)[0]["rule"] == "socks[0]"


def test_private_preset_also_blocks_the_servers_own_addresses(no_host_name_lookup) -> None:
    # No socket: the rule set the server builds is asked directly. A listen address outside
    # every private network (RFC 5737) stands for a public address of this host.
    public = "198.51.100.7"
    config = build_config(
        {"rules": {"block_private_destinations": True}, "allow_open_proxy": True},
        listen=[f"{public}:1080"],
    )
    server = Server(config)
    own = own_addresses(config)
    assert ipaddress.ip_address(public) in own
    client = ipaddress.ip_address("127.0.0.1")
    for address in own:  # this machine's interface addresses too, private or not
        decision = server.rules.check_request(
            Request(client, "127.0.0.1:1080", command=Command.CONNECT, address=address, port=80)
        )
        assert (decision.allowed, decision.rule) == (False, "block_private_destinations"), address
    neighbour = ipaddress.ip_address("198.51.100.8")
    assert server.rules.check_request(
        Request(client, "127.0.0.1:1080", command=Command.CONNECT, address=neighbour, port=80)
    ).allowed


# --- BIND ---------------------------------------------------------------------------------------


def connect_peer(bound: Address, source: str) -> socket.socket:
    """The application server's connection to the BIND listener, from `source`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(IO_TIMEOUT)
        sock.bind((source, 0))
        sock.connect((str(bound.host), bound.port))
    except BaseException:
        sock.close()
        raise
    return sock


def test_bind_peer_from_a_blocked_address_is_turned_away_and_an_allowed_one_accepted(
    start_server, server_log
) -> None:
    messages = server_log("socks5d.server.bind")
    server = start_server(
        socks=[{"action": "block", "command": ["bind"], "to": [f"{OTHER_HOST}/32"]}]
    )
    client, first = open_request(server, Command.BIND, ANYONE)
    with client:
        assert first.reply == Reply.SUCCEEDED
        with connect_peer(first.bound, OTHER_HOST) as intruder:
            assert read_until_eof(intruder) == b""  # accepted by the kernel, closed by us
        assert any("refused a connection" in m and "socks[0]" in m for m in messages)
        with connect_peer(first.bound, "127.0.0.1") as peer:
            # the next thing on the control connection is the second reply, for this peer
            second, _ = read_reply(client)
            host, port = peer.getsockname()
            assert second == CommandReply(Reply.SUCCEEDED, Address.from_host(host, port))
            peer.sendall(b"hello")
            assert recv_exactly(client, 5) == b"hello"
    assert server.wait_records(1)[0]["reply"] == "succeeded"


def test_bind_request_naming_a_blocked_peer_is_refused(start_server) -> None:
    server = start_server(socks=[{"action": "block", "to": [f"{OTHER_HOST}/32"]}])
    client, reply = open_request(server, Command.BIND, Address.from_host(OTHER_HOST, 0))
    with client:
        assert reply == NOT_ALLOWED
    record = server.wait_records(1)[0]
    assert (record["command"], record["rule"]) == ("bind", "socks[0]")


# --- UDP ----------------------------------------------------------------------------------------


@pytest.fixture
def echo() -> Iterator[socket.socket]:
    """A UDP echo server's socket on 127.0.0.1 (answer with `echo_once`)."""
    with udp_socket() as sock:
        yield sock


@pytest.fixture
def trap() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.2 that blocked datagrams would reach."""
    with udp_socket(OTHER_HOST) as sock:
        yield sock


def assert_nothing_waiting(sock: socket.socket) -> None:
    """Nothing was delivered to `sock` (checked after the traffic that would carry it)."""
    sock.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(0x10000)
    finally:
        sock.settimeout(IO_TIMEOUT)


def udp_address(sock: socket.socket) -> Address:
    host, port = sock.getsockname()[:2]
    return Address.from_host(host, port)


def blocked_then_allowed(
    server: Any, echo: socket.socket, blocked: Address, allowed: Address | None = None
) -> None:
    """Through one association: a datagram to `blocked`, then one to `allowed` (the echo).
    The echo must get the second first; its answer comes back to the client."""
    control, reply = open_request(server, Command.UDP_ASSOCIATE, ANYONE)
    with control, udp_socket() as client:
        assert reply.reply == Reply.SUCCEEDED
        relay = (control.getpeername()[0], reply.bound.port)
        client.sendto(udp_packet(blocked, b"blocked"), relay)
        client.sendto(udp_packet(allowed or udp_address(echo), b"allowed"), relay)
        data, _ = echo_once(echo)
        assert data == b"allowed"
        assert receive_relayed(client) == UdpDatagram(udp_address(echo), b"allowed")


def test_udp_datagram_to_a_blocked_address_is_dropped_and_an_allowed_one_relayed(
    start_server, echo, trap
) -> None:
    server = start_server(socks=[{"action": "block", "to": [f"{OTHER_HOST}/32"]}])
    blocked_then_allowed(server, echo, udp_address(trap))
    assert_nothing_waiting(trap)
    record = server.wait_records(1)[0]
    assert (record["reply"], record["dropped"], record["rule"]) == ("succeeded", 1, "socks[0]")


def test_udp_association_passes_on_a_pass_rule_and_datagrams_meet_the_default(
    start_server, echo, trap
) -> None:
    server = start_server(
        rules={"socks_default": "block"},
        socks=[{"action": "pass", "command": ["udp"], "to": ["127.0.0.1/32"]}],
    )
    blocked_then_allowed(server, echo, udp_address(trap))
    assert_nothing_waiting(trap)
    record = server.wait_records(1)[0]
    assert (record["dropped"], record["rule"]) == (1, "rules.socks_default")


def test_udp_datagram_to_a_name_resolving_to_a_blocked_address_is_dropped(
    start_server_with_resolver, echo
) -> None:
    echo_port = echo.getsockname()[1]
    asked: list[str] = []

    async def both_to_echo(name: DomainName, port: int) -> list[Target]:
        asked.append(str(name))
        return [(socket.AF_INET, ("127.0.0.1", port))]

    server = start_server_with_resolver(
        both_to_echo,
        socks=[
            {"action": "pass", "to": ["allowed.test"]},
            {"action": "block", "to": ["127.0.0.0/8"]},
        ],
    )
    blocked_then_allowed(
        server,
        echo,
        Address(DomainName("evil.test"), echo_port),
        Address(DomainName("allowed.test"), echo_port),
    )
    record = server.wait_records(1)[0]
    assert asked == ["evil.test", "allowed.test"]  # evil.test passed the name check
    assert (record["dropped"], record["rule"]) == (1, "socks[1]")


def test_udp_ipv4_block_rule_also_drops_the_ipv4_mapped_spelling(start_server, echo, trap) -> None:
    server = start_server(socks=[{"action": "block", "to": [f"{OTHER_HOST}/32"]}])
    mapped = Address.from_host(f"::ffff:{OTHER_HOST}", trap.getsockname()[1])
    blocked_then_allowed(server, echo, mapped)
    assert_nothing_waiting(trap)
