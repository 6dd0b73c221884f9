"""The blocking client against our server: the same operations as the asyncio one, with
plain sockets; the server's access record is the proof of what went over the wire.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

import pytest

from socks5d.client import Proxy, sync
from socks5d.errors import AuthFailed, ProxyTimeout, TTLExpired
from socks5d.proto import Address, AuthMethod, MethodSelected
from vectors import REPLY_SUCCEEDED, REPLY_SUCCEEDED_PEER

from .conftest import (
    BANNER,
    HTTP_BODY,
    HTTP_REQUEST,
    IO_TIMEOUT,
    NAME_SCHEMES,
    FakeProxy,
    ProxySide,
    SpyResolver,
    fetch,
    read_until_eof,
    recv_exactly,
)


def echo_round_trip(sock: socket.socket, data: bytes) -> bytes:
    """Send `data`, half-close, read until EOF; closes the socket."""
    with sock:
        sock.settimeout(IO_TIMEOUT)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_until_eof(sock)


# --- CONNECT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_connect_to_ipv4_carries_data_both_ways(scheme: str, socks_server, tcp_echo) -> None:
    host, port = tcp_echo()
    sock = sync.connect(host, port, proxy=socks_server.url(scheme))
    assert echo_round_trip(sock, b"hello through socks") == b"hello through socks"
    record = socks_server.wait_records(1)[0]
    assert (record["protocol"], record["command"], record["reply"]) == (
        "socks5",
        "connect",
        "succeeded",
    )
    assert record["destination"] == f"127.0.0.1:{port}"
    assert (record["bytes_up"], record["bytes_down"]) == (19, 19)


def test_create_connection_takes_an_address_tuple_like_the_socket_module(
    socks_server, tcp_echo
) -> None:
    sock = sync.create_connection(tcp_echo(), IO_TIMEOUT, proxy=socks_server.url())
    assert echo_round_trip(sock, b"tuple") == b"tuple"


def test_connect_to_ipv6_through_a_proxy_on_ipv6(start_server, tcp_echo) -> None:
    server = start_server(listen=["[::1]:0"])
    host, port = tcp_echo("::1")
    sock = sync.connect(host, port, proxy=server.url("socks5h"))
    assert sock.family == socket.AF_INET6
    assert echo_round_trip(sock, b"over ipv6") == b"over ipv6"
    record = server.wait_records(1)[0]
    assert record["destination"] == f"[::1]:{port}"


@pytest.mark.parametrize(("scheme", "sent_host", "protocol"), NAME_SCHEMES)
def test_name_is_sent_or_resolved_here_as_the_scheme_says(
    scheme: str, sent_host: str, protocol: str, socks_server, tcp_echo
) -> None:
    _, port = tcp_echo()
    sock = sync.connect("localhost", port, proxy=socks_server.url(scheme))
    assert echo_round_trip(sock, b"by name") == b"by name"
    record = socks_server.wait_records(1)[0]
    assert (record["protocol"], record["destination"]) == (protocol, f"{sent_host}:{port}")


def test_socks4_username_is_sent_as_the_userid(socks_server, tcp_echo) -> None:
    sock = sync.connect(*tcp_echo(), proxy=socks_server.url("socks4", "carol"))
    assert echo_round_trip(sock, b"4") == b"4"
    assert socks_server.wait_records(1)[0]["user"] == "carol"


def test_connect_returns_a_blocking_socket_another_library_can_use(
    socks_server, http_origin
) -> None:
    sock = sync.connect(*http_origin, proxy=socks_server.url())
    assert sock.gettimeout() is None  # the handshake's timeout is not left on the socket
    connection = http.client.HTTPConnection(*http_origin)
    connection.sock = sock
    try:
        connection.request("GET", "/via/socks")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, HTTP_BODY)
    finally:
        connection.close()


def test_tunnel_gives_the_same_http_response_as_a_direct_fetch(socks_server, http_origin) -> None:
    direct = fetch(http_origin, HTTP_REQUEST)
    sock = sync.connect(*http_origin, proxy=socks_server.url())
    assert echo_round_trip(sock, HTTP_REQUEST) == direct
    assert direct.endswith(HTTP_BODY)


def test_banner_of_a_destination_that_speaks_first_is_not_lost(socks_server, tcp_echo) -> None:
    sock = sync.connect(*tcp_echo(banner=BANNER), proxy=socks_server.url())
    sock.settimeout(IO_TIMEOUT)
    assert recv_exactly(sock, len(BANNER)) == BANNER
    assert echo_round_trip(sock, b"EHLO") == b"EHLO"


def test_bytes_arriving_with_the_reply_stay_in_the_socket(
    fake_proxy: Callable[..., FakeProxy],
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED + BANNER)  # one write: the reply and the banner together

    proxy = fake_proxy(script)
    with sync.connect("127.0.0.1", 25, proxy=proxy.url()) as sock:
        sock.settimeout(IO_TIMEOUT)
        assert read_until_eof(sock) == BANNER


def test_username_and_password_accepted_and_recorded(start_server, tcp_echo) -> None:
    server = start_server(users={"alice": "s3cret"})
    sock = sync.connect(*tcp_echo(), proxy=server.url("socks5", "alice", "s3cret"))
    assert echo_round_trip(sock, b"authenticated") == b"authenticated"
    assert server.wait_records(1)[0]["user"] == "alice"


def test_wrong_password_raises_auth_failed(start_server, tcp_echo) -> None:
    server = start_server(users={"alice": "s3cret"})
    with pytest.raises(AuthFailed):
        sync.connect(*tcp_echo(), proxy=server.url("socks5h", "alice", "wrong"))
    assert server.wait_records(1)[0]["user"] == "alice"


def test_proxy_requiring_a_password_when_none_is_given_raises_auth_failed(
    start_server, tcp_echo
) -> None:
    server = start_server(users={"alice": "s3cret"})
    with pytest.raises(AuthFailed, match="none of the methods"):
        sync.connect(*tcp_echo(), proxy=server.url("socks5h"))


def test_chain_of_two_servers_connects_through_both(start_server, tcp_echo) -> None:
    first = start_server(users={"alice": "s3cret"})
    second = start_server()
    host, port = tcp_echo()
    chain = [first.url("socks5", "alice", "s3cret"), Proxy.from_url(second.url("socks5h"))]
    sock = sync.connect(host, port, proxy=chain)
    assert echo_round_trip(sock, b"two hops") == b"two hops"
    outer, inner = first.wait_records(1)[0], second.wait_records(1)[0]
    assert (outer["command"], outer["destination"], outer["user"]) == (
        "connect",
        f"127.0.0.1:{second.port}",
        "alice",
    )
    assert (inner["command"], inner["destination"]) == ("connect", f"127.0.0.1:{port}")
    assert (inner["bytes_up"], inner["bytes_down"]) == (8, 8)
    assert outer["bytes_up"] > 8 and outer["bytes_down"] > 8


# --- BIND -------------------------------------------------------------------------------------


def test_bind_accept_gives_a_socket_connected_to_the_peer(socks_server) -> None:
    binding = sync.open_bind("127.0.0.1", 0, proxy=socks_server.url())
    assert binding.address.port != 0
    with socket.create_connection(
        (str(binding.address.host), binding.address.port), timeout=IO_TIMEOUT
    ) as peer:
        sock = binding.accept(timeout=IO_TIMEOUT)
        assert binding.peer == Address.from_host(*peer.getsockname()[:2])
        peer.sendall(b"from the peer")
        peer.shutdown(socket.SHUT_WR)
        assert echo_round_trip(sock, b"to the peer") == b"from the peer"
        assert read_until_eof(peer) == b"to the peer"
    record = socks_server.wait_records(1)[0]
    assert (record["command"], record["reply"]) == ("bind", "succeeded")
    assert (record["bytes_up"], record["bytes_down"]) == (11, 13)


def test_bind_replies_and_peer_data_in_one_segment_are_all_kept(
    fake_proxy: Callable[..., FakeProxy],
) -> None:
    def script(side: ProxySide) -> None:
        side.receive()
        side.answer(MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED))
        side.receive()
        side.send(REPLY_SUCCEEDED + REPLY_SUCCEEDED_PEER + b"early bytes")

    proxy = fake_proxy(script)
    binding = sync.open_bind("0.0.0.0", 0, proxy=proxy.url())
    with binding.accept(timeout=IO_TIMEOUT) as sock:
        assert str(binding.address) == "198.51.100.7:1080"
        assert str(binding.peer) == "192.0.2.1:80"
        sock.settimeout(IO_TIMEOUT)
        assert read_until_eof(sock) == b"early bytes"


@pytest.mark.timeout(10)
def test_bind_accept_without_a_peer_raises_proxy_timeout_and_closes(socks_server) -> None:
    binding = sync.open_bind("127.0.0.1", 0, proxy=socks_server.url())
    with pytest.raises(ProxyTimeout):
        binding.accept(timeout=0.2)
    assert socks_server.wait_records(1)[0]["command"] == "bind"


def test_bind_expired_at_the_proxy_raises_ttl_expired(start_server) -> None:
    server = start_server(bind={"timeout": 0.2})
    binding = sync.open_bind("127.0.0.1", 0, proxy=server.url())
    with pytest.raises(TTLExpired):
        binding.accept()
    assert server.wait_records(1)[0]["reply"] == "ttl_expired"


# --- UDP ASSOCIATE ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_udp_round_trip_returns_the_echo_and_its_address(
    scheme: str, socks_server, udp_echo
) -> None:
    echo = udp_echo()
    with sync.open_udp(proxy=socks_server.url(scheme)) as udp:
        udp.sendto(b"datagram one", echo)
        assert udp.recvfrom(timeout=IO_TIMEOUT) == (b"datagram one", echo)
        udp.sendto(b"two", echo)
        assert udp.recvfrom(timeout=IO_TIMEOUT) == (b"two", echo)
    record = socks_server.wait_records(1)[0]
    assert (record["command"], record["reply"]) == ("udp_associate", "succeeded")
    assert (record["bytes_up"], record["bytes_down"]) == (15, 15)


@pytest.mark.parametrize(("scheme", "resolved_by_proxy"), [("socks5h", True), ("socks5", False)])
def test_udp_to_a_name_is_resolved_where_the_scheme_says(
    scheme: str, resolved_by_proxy: bool, start_server_with_resolver, udp_echo
) -> None:
    resolver = SpyResolver()
    server = start_server_with_resolver(resolver)
    echo_host, echo_port = udp_echo()
    with sync.open_udp(proxy=server.url(scheme)) as udp:
        udp.sendto(b"by name", ("localhost", echo_port))
        assert udp.recvfrom(timeout=IO_TIMEOUT) == (b"by name", (echo_host, echo_port))
    assert resolver.asked == ([("localhost", echo_port)] if resolved_by_proxy else [])


def test_closing_the_endpoint_closes_the_control_connection(socks_server) -> None:
    udp = sync.open_udp(proxy=socks_server.url())
    udp.close()
    record = socks_server.wait_records(1)[0]
    assert (record["command"], record["outcome"]) == ("udp_associate", "closed")


def test_recvfrom_with_nothing_to_receive_raises_proxy_timeout(socks_server) -> None:
    with sync.open_udp(proxy=socks_server.url()) as udp, pytest.raises(ProxyTimeout):
        udp.recvfrom(timeout=0.1)


@pytest.mark.parametrize("chain", [False, True], ids=["socks4", "chain"])
def test_udp_needs_exactly_one_socks5_proxy(chain: bool, socks_server) -> None:
    proxy = [socks_server.url(), socks_server.url()] if chain else socks_server.url("socks4")
    with pytest.raises(ValueError, match="exactly one SOCKS5 proxy"):
        sync.open_udp(proxy=proxy)


def test_recvfrom_raises_connection_error_when_the_server_ends_the_association(
    start_server, udp_echo
) -> None:
    server = start_server(udp={"idle_timeout": 0.5})
    echo = udp_echo()
    with sync.open_udp(proxy=server.url()) as udp:
        udp.sendto(b"once", echo)
        assert udp.recvfrom(timeout=IO_TIMEOUT) == (b"once", echo)
        with pytest.raises(ConnectionError):
            udp.recvfrom(timeout=IO_TIMEOUT)
    assert server.wait_records(1)[0]["outcome"] == "idle timeout"
