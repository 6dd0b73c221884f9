"""Our client library (asyncio and blocking) against Dante's sockd: CONNECT over IPv4, IPv6 and
by name, BIND, UDP ASSOCIATE, RFC 1929 against system accounts, a chain through socks5d then
Dante, and Dante's refusals mapped to our exceptions.

sockd listens on 127.0.0.1 and [::1] (same port), with both as external addresses, passes
loopback to loopback, and blocks one live echo server by a rule. Every test proves passage by
sockd's own log line (see proxies.py), not only by the bytes that came back.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from socks5d.client import aio, sync
from socks5d.errors import AuthFailed, ConnectionRefused, NotAllowed

from .conftest import CLIENT_TIMEOUT, PAYLOAD, Endpoint, RecordingServer
from .proxies import Crossing, DanteServer, Socks5dUnderTest, dante_address

#: What a BIND peer and our client say to each other.
FROM_PEER = b"hello from the peer that connected to Dante\n"
TO_PEER = b"hello back, through the bound socket\n"
#: Seconds allowed for useradd, chpasswd and userdel.
ACCOUNT_TIMEOUT = 10.0
#: The password of the throwaway system account: characters a URL must percent-encode.
SYSTEM_PASSWORD = "p@ss/w0rd %#?"


def proxy_url(dante: DanteServer, scheme: str = "socks5", host: str = "127.0.0.1") -> str:
    """`scheme://HOST:PORT` for sockd; `host` "::1" for its IPv6 listener."""
    netloc = Endpoint(host, dante.port).netloc
    return f"{scheme}://{netloc}"


def loopback_pattern(port: int) -> str:
    """How Dante logs either loopback address with `port` (a name resolved at the proxy may
    give either)."""
    return rf"(?:127\.0\.0\.1|::1)\.{port}\b"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def dante(tmp_path: Path, echo_server: Endpoint) -> Iterator[DanteServer]:
    """sockd on 127.0.0.1 and [::1], no authentication; `echo_server` is blocked by a rule."""
    server = DanteServer(tmp_path, ipv6=True, blocked=[echo_server]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def system_account() -> Iterator[tuple[str, str]]:
    """A throwaway system account for Dante's `socksmethod: username` (which checks
    /etc/passwd and /etc/shadow): no home, no shell; removed afterwards. Needs root.
    """
    if os.geteuid() != 0:
        pytest.skip("Dante checks RFC 1929 passwords against system accounts: needs root")
    name = f"socks5d-{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--no-user-group", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
        timeout=ACCOUNT_TIMEOUT,
    )
    try:
        subprocess.run(
            ["chpasswd"],
            input=f"{name}:{SYSTEM_PASSWORD}\n".encode(),
            check=True,
            capture_output=True,
            timeout=ACCOUNT_TIMEOUT,
        )
        yield name, SYSTEM_PASSWORD
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True, timeout=ACCOUNT_TIMEOUT)


@pytest.fixture
def dante_userpass(tmp_path: Path, system_account: tuple[str, str]) -> Iterator[DanteServer]:
    """sockd on 127.0.0.1 that accepts only RFC 1929 username/password."""
    server = DanteServer(tmp_path, socksmethod="username").start()
    try:
        yield server
    finally:
        server.stop()


class Lookups:
    """Stands in for `socket.getaddrinfo` in this process: records the names asked for and
    refuses the ones in `refused`, so a test can tell who resolved a name, we or the proxy.
    """

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.names: list[str] = []
        self.refused: set[str] = set()

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.names.append(name)
        if name in self.refused:
            raise socket.gaierror(socket.EAI_NONAME, f"the test forbids resolving {name} here")
        return self.real(host, *args, **kwargs)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Lookups:
    """This process's name lookups, watched (asyncio's `getaddrinfo` calls the same one)."""
    watcher = Lookups(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", watcher)
    return watcher


# --------------------------------------------------------------------------- CONNECT


def test_connect_to_ipv4_destination_relays_both_ways_through_dante(
    echo_through: Callable[..., bytes], dante: DanteServer, tcp_echoes: dict[str, Endpoint]
) -> None:
    destination = tcp_echoes["127.0.0.1"]

    echoed = echo_through(destination.host, destination.port, proxy_url(dante))

    assert echoed == PAYLOAD
    assert dante.connected(destination) == Crossing(len(PAYLOAD), len(PAYLOAD))


@pytest.mark.parametrize(
    ("proxy_host", "destination_host"),
    [("::1", "::1"), ("127.0.0.1", "::1"), ("::1", "127.0.0.1")],
    ids=["v6-proxy-v6-destination", "v4-proxy-v6-destination", "v6-proxy-v4-destination"],
)
def test_connect_over_ipv6_relays_through_dante(
    echo_through: Callable[..., bytes],
    dante: DanteServer,
    tcp_echoes: dict[str, Endpoint],
    proxy_host: str,
    destination_host: str,
) -> None:
    destination = tcp_echoes[destination_host]

    echoed = echo_through(destination.host, destination.port, proxy_url(dante, host=proxy_host))

    assert echoed == PAYLOAD
    match = dante.wait_log(
        rf"pass\(\d+\): tcp/connect \]: \d+ -> (?P<client>\S+) \S+ -> \d+, "
        rf"\d+ -> \S+ {re.escape(dante_address(destination))} -> \d+"
    )
    assert match["client"].startswith(f"{proxy_host}."), match.group(0)


def test_socks5h_sends_the_name_and_dante_resolves_it(
    echo_through: Callable[..., bytes],
    dante: DanteServer,
    tcp_echoes: dict[str, Endpoint],
    lookups: Lookups,
) -> None:
    lookups.refused.add("localhost")  # resolving here would fail the request
    port = tcp_echoes["127.0.0.1"].port

    echoed = echo_through("localhost", port, proxy_url(dante, "socks5h"))

    assert echoed == PAYLOAD
    assert "localhost" not in lookups.names
    dante.wait_log(rf"pass\(\d+\): tcp/connect \]: .* {loopback_pattern(port)} -> {len(PAYLOAD)}")


def test_socks5_resolves_the_name_here_and_sends_an_address(
    echo_through: Callable[..., bytes],
    dante: DanteServer,
    tcp_echoes: dict[str, Endpoint],
    lookups: Lookups,
) -> None:
    port = tcp_echoes["127.0.0.1"].port

    echoed = echo_through("localhost", port, proxy_url(dante, "socks5"))

    assert echoed == PAYLOAD
    assert "localhost" in lookups.names
    dante.wait_log(rf"pass\(\d+\): tcp/connect \]: .* {loopback_pattern(port)} -> {len(PAYLOAD)}")


# --------------------------------------------------------------------------- refusals


def test_destination_blocked_by_a_dante_rule_raises_not_allowed(
    echo_through: Callable[..., bytes], dante: DanteServer, echo_server: Endpoint
) -> None:
    # echo_server is alive: only the rule stands in the way.
    with pytest.raises(NotAllowed, match="X'02'"):
        echo_through(echo_server.host, echo_server.port, proxy_url(dante))

    dante.wait_log(rf"block\(\d+\): tcp/connect \]: .* {re.escape(dante_address(echo_server))}")


def test_refused_destination_raises_connection_refused(
    echo_through: Callable[..., bytes], dante: DanteServer, closed_port: Endpoint
) -> None:
    with pytest.raises(ConnectionRefused, match="X'05'") as raised:
        echo_through(closed_port.host, closed_port.port, proxy_url(dante))

    assert isinstance(raised.value, ConnectionRefusedError)
    dante.wait_log(
        rf"tcp/connect \]: .* {re.escape(dante_address(closed_port))} .*Connection refused"
    )


# --------------------------------------------------------------------------- chain


def test_chain_through_socks5d_then_dante_reaches_the_destination(
    echo_through: Callable[..., bytes],
    socks_server: RecordingServer,
    dante: DanteServer,
    tcp_echoes: dict[str, Endpoint],
) -> None:
    destination = tcp_echoes["127.0.0.1"]
    chain = [socks_server.url("socks5"), proxy_url(dante)]

    echoed = echo_through(destination.host, destination.port, chain)

    assert echoed == PAYLOAD
    # socks5d carried a tunnel to Dante, with the inner SOCKS handshake on top of the payload.
    ours = Socks5dUnderTest(socks_server).connected(Endpoint(dante.host, dante.port))
    assert ours.bytes_up > len(PAYLOAD) and ours.bytes_down > len(PAYLOAD), ours
    # Dante's client was socks5d, not our client's own socket.
    match = dante.wait_log(
        rf"pass\(\d+\): tcp/connect \]: \d+ -> (?P<client>\S+) \S+ -> \d+, "
        rf"(?P<up>\d+) -> \S+ {re.escape(dante_address(destination))} -> (?P<down>\d+)"
    )
    assert (int(match["up"]), int(match["down"])) == (len(PAYLOAD), len(PAYLOAD))
    record = socks_server.wait_records(1)[0]
    client_port = record["client"].rsplit(":", 1)[1]
    assert not match["client"].endswith(f".{client_port}"), (record, match.group(0))


# --------------------------------------------------------------------------- BIND


async def test_aio_bind_through_dante_accepts_the_peer_and_relays_both_ways(
    dante: DanteServer,
) -> None:
    binding = await aio.open_bind("127.0.0.1", 0, proxy=proxy_url(dante), timeout=CLIENT_TIMEOUT)
    try:
        assert str(binding.address.host) == "127.0.0.1" and binding.address.port != 0
        peer_reader, peer_writer = await asyncio.open_connection(
            str(binding.address.host), binding.address.port
        )
    except BaseException:
        binding.close()
        raise
    try:
        reader, writer = await binding.accept(CLIENT_TIMEOUT)
        try:
            peer_host, peer_port = peer_writer.get_extra_info("sockname")[:2]
            assert binding.peer == (peer_host, peer_port)
            peer_writer.write(FROM_PEER)
            writer.write(TO_PEER)
            await asyncio.gather(peer_writer.drain(), writer.drain())
            async with asyncio.timeout(CLIENT_TIMEOUT):
                assert await reader.readexactly(len(FROM_PEER)) == FROM_PEER
                assert await peer_reader.readexactly(len(TO_PEER)) == TO_PEER
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        peer_writer.close()
        await peer_writer.wait_closed()

    crossing = dante.bound(Endpoint(peer_host, peer_port))
    assert crossing == Crossing(len(TO_PEER), len(FROM_PEER))


def test_sync_bind_through_dante_accepts_the_peer_and_relays_both_ways(
    dante: DanteServer,
) -> None:
    binding = sync.open_bind("127.0.0.1", 0, proxy=proxy_url(dante), timeout=CLIENT_TIMEOUT)
    try:
        assert str(binding.address.host) == "127.0.0.1" and binding.address.port != 0
        peer = socket.create_connection(
            (str(binding.address.host), binding.address.port), timeout=CLIENT_TIMEOUT
        )
    except BaseException:
        binding.close()
        raise
    with peer, binding.accept(CLIENT_TIMEOUT) as connection:
        connection.settimeout(CLIENT_TIMEOUT)
        peer_host, peer_port = peer.getsockname()[:2]
        assert binding.peer == (peer_host, peer_port)
        peer.sendall(FROM_PEER)
        connection.sendall(TO_PEER)
        assert receive_exactly(connection, len(FROM_PEER)) == FROM_PEER
        assert receive_exactly(peer, len(TO_PEER)) == TO_PEER

    crossing = dante.bound(Endpoint(peer_host, peer_port))
    assert crossing == Crossing(len(TO_PEER), len(FROM_PEER))


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size and (chunk := sock.recv(size - len(received))):
        received += chunk
    return received


# --------------------------------------------------------------------------- UDP ASSOCIATE


async def _udp_round_trip_aio(proxy: str, host: str, port: int) -> tuple[bytes, tuple[str, int]]:
    async with await aio.open_udp(proxy=proxy, timeout=CLIENT_TIMEOUT) as udp:
        await udp.sendto(PAYLOAD, (host, port))
        return await udp.recvfrom(CLIENT_TIMEOUT)


def udp_round_trip_aio(proxy: str, host: str, port: int) -> tuple[bytes, tuple[str, int]]:
    """Open an association with `socks5d.client.open_udp`, send PAYLOAD to `host`:`port`,
    return the first datagram back and where it came from; closes the association.
    """
    return asyncio.run(_udp_round_trip_aio(proxy, host, port))


def udp_round_trip_sync(proxy: str, host: str, port: int) -> tuple[bytes, tuple[str, int]]:
    """The same with the blocking `socks5d.client.sync.open_udp`."""
    with sync.open_udp(proxy=proxy, timeout=CLIENT_TIMEOUT) as udp:
        udp.sendto(PAYLOAD, (host, port))
        return udp.recvfrom(CLIENT_TIMEOUT)


#: Dante answers a UDP ASSOCIATE for 0.0.0.0:0 that came over [::1] with an IPv4 relay
#: (127.0.0.1): "aio-v6" proves the client binds its datagram socket in the relay's family.


@pytest.mark.parametrize(
    ("round_trip", "scheme", "proxy_host", "destination_host"),
    [
        pytest.param(udp_round_trip_aio, "socks5", "127.0.0.1", "127.0.0.1", id="aio-v4"),
        pytest.param(udp_round_trip_sync, "socks5", "127.0.0.1", "127.0.0.1", id="sync-v4"),
        pytest.param(udp_round_trip_aio, "socks5", "::1", "::1", id="aio-v6"),
        pytest.param(udp_round_trip_sync, "socks5", "::1", "::1", id="sync-v6"),
        pytest.param(udp_round_trip_aio, "socks5h", "127.0.0.1", "localhost", id="aio-name"),
        pytest.param(udp_round_trip_sync, "socks5h", "127.0.0.1", "localhost", id="sync-name"),
    ],
)
def test_udp_associate_through_dante_round_trips_a_datagram(
    round_trip: Callable[[str, str, int], tuple[bytes, tuple[str, int]]],
    scheme: str,
    proxy_host: str,
    destination_host: str,
    dante: DanteServer,
    udp_echoes: dict[str, Endpoint],
) -> None:
    port = udp_echoes["127.0.0.1"].port  # both echoes share it

    data, (source_host, source_port) = round_trip(
        proxy_url(dante, scheme, proxy_host), destination_host, port
    )

    assert data == PAYLOAD
    assert source_port == port
    assert source_host in udp_echoes  # "localhost": whichever address Dante resolved it to
    if destination_host != "localhost":
        assert source_host == destination_host
    crossing = dante.udp_relayed(Endpoint(source_host, port))
    assert crossing == Crossing(len(PAYLOAD), len(PAYLOAD))


# --------------------------------------------------------------------------- RFC 1929


def userpass_url(dante: DanteServer, user: str, password: str) -> str:
    return f"socks5://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{dante.port}"


def test_system_account_credentials_are_accepted_by_dante(
    echo_through: Callable[..., bytes],
    dante_userpass: DanteServer,
    system_account: tuple[str, str],
    tcp_echoes: dict[str, Endpoint],
) -> None:
    user, password = system_account
    destination = tcp_echoes["127.0.0.1"]

    echoed = echo_through(
        destination.host, destination.port, userpass_url(dante_userpass, user, password)
    )

    assert echoed == PAYLOAD
    dante_userpass.wait_log(
        rf"pass\(\d+\): tcp/connect \]: {len(PAYLOAD)} -> username%{re.escape(user)}@\S+ \S+ "
        rf"-> {len(PAYLOAD)}, .* {re.escape(dante_address(destination))} "
    )


def test_wrong_password_raises_auth_failed(
    echo_through: Callable[..., bytes],
    dante_userpass: DanteServer,
    system_account: tuple[str, str],
    tcp_echoes: dict[str, Endpoint],
) -> None:
    user, _ = system_account
    destination = tcp_echoes["127.0.0.1"]

    with pytest.raises(AuthFailed, match=re.escape(repr(user))):
        echo_through(
            destination.host, destination.port, userpass_url(dante_userpass, user, "wrong")
        )

    dante_userpass.wait_log(rf'system password authentication failed for user "{user}"')


def test_no_credentials_for_a_username_only_dante_raises_auth_failed(
    echo_through: Callable[..., bytes],
    dante_userpass: DanteServer,
    tcp_echoes: dict[str, Endpoint],
) -> None:
    destination = tcp_echoes["127.0.0.1"]

    with pytest.raises(AuthFailed, match="none of the methods"):
        echo_through(destination.host, destination.port, proxy_url(dante_userpass))

    dante_userpass.wait_log("client offered no acceptable authentication method")
