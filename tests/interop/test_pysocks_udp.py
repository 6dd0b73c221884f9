"""PySocks' UDP support: a `socks.socksocket(AF_INET, SOCK_DGRAM)` opens a UDP ASSOCIATE on
its first sendto() (or connect()) and wraps each datagram in the RFC 1928 §7 header.

With rdns=True (PySocks' default) the association request names the client's address as the
domain name "0"; socks5d takes it (the address is only a hint), Dante's sockd refuses it
(0x02, its `to: 127.0.0.0/8` rule matches no name), so the test against both uses rdns=False.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest
import socks

from .conftest import Endpoint
from .proxies import Crossing, ProxyUnderTest, Socks5dUnderTest

CLIENT_TIMEOUT = 10.0
MESSAGES = (b"one datagram", b"another datagram, a little longer")
PAYLOAD = sum(len(message) for message in MESSAGES)


def exchange(
    proxy: ProxyUnderTest,
    destination: tuple[str, int],
    messages: Sequence[bytes] = MESSAGES,
    *,
    rdns: bool = False,
    connected: bool = False,
) -> list[tuple[bytes, tuple[str, int]]]:
    """Send each message through `proxy` with PySocks, collect the answers and their senders.

    `connected`: connect() to the destination first, then send()/recv() (PySocks keeps the
    destination and filters answers from anyone else).
    """
    sock = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.set_proxy(socks.SOCKS5, proxy.host, proxy.port, rdns=rdns)
        sock.settimeout(CLIENT_TIMEOUT)
        if connected:
            sock.connect(destination)
        answers = []
        for message in messages:
            if connected:
                sock.send(message)
            else:
                sock.sendto(message, destination)
            data, sender = sock.recvfrom(65535)
            answers.append((data, (sender[0], sender[1])))
        return answers
    finally:
        sock.close()


@pytest.mark.parametrize("connected", [False, True], ids=["sendto", "connect-send"])
def test_pysocks_udp_datagrams_cross_the_proxy(proxy, udp_echoes, connected) -> None:
    echo = udp_echoes["127.0.0.1"]
    answers = exchange(proxy, (echo.host, echo.port), connected=connected)
    assert answers == [(message, (echo.host, echo.port)) for message in MESSAGES]
    assert proxy.udp_relayed(echo) == Crossing(bytes_up=PAYLOAD, bytes_down=PAYLOAD)


def test_pysocks_udp_with_remote_dns_names_its_address_0_and_socks5d_serves_it(
    socks_server, udp_echoes
) -> None:
    echo = udp_echoes["127.0.0.1"]
    proxy = Socks5dUnderTest(socks_server)
    answers = exchange(proxy, (echo.host, echo.port), rdns=True)
    assert answers == [(message, (echo.host, echo.port)) for message in MESSAGES]
    assert proxy.udp_relayed(echo) == Crossing(bytes_up=PAYLOAD, bytes_down=PAYLOAD)
    record = socks_server.wait_records(1)[-1]
    assert record["destination"].startswith("0:"), record  # DST.ADDR as PySocks sent it


def test_pysocks_udp_to_a_name_lets_socks5d_resolve_it(socks_server, udp_echoes) -> None:
    # Both echo servers share a port: whichever address socks5d resolves "localhost" to
    # (and it sends to one), the datagram is answered from there.
    port = udp_echoes["127.0.0.1"].port
    proxy = Socks5dUnderTest(socks_server)
    answers = exchange(proxy, ("localhost", port), rdns=True)
    assert [data for data, _ in answers] == list(MESSAGES)
    senders = {sender for _, sender in answers}
    assert len(senders) == 1, senders
    sender_host, sender_port = senders.pop()
    assert sender_host in udp_echoes
    assert sender_port == port
    crossing = proxy.udp_relayed(Endpoint(sender_host, port))
    assert crossing == Crossing(bytes_up=PAYLOAD, bytes_down=PAYLOAD)


def test_pysocks_udp_from_ipv4_reaches_an_ipv6_destination_through_socks5d(
    socks_server, udp_echoes
) -> None:
    # The client and its association are IPv4; the destination is ::1. (sockd here has an
    # IPv4 external address only.)
    echo = udp_echoes["::1"]
    proxy = Socks5dUnderTest(socks_server)
    answers = exchange(proxy, (echo.host, echo.port))
    assert answers == [(message, (echo.host, echo.port)) for message in MESSAGES]
    assert proxy.udp_relayed(echo) == Crossing(bytes_up=PAYLOAD, bytes_down=PAYLOAD)
