"""The PROXY protocol header (HAProxy's doc/proxy-protocol.txt), v1 and v2: every valid form
decodes three ways (whole, byte by byte, with the SOCKS greeting after it), every malformed
one is refused by its last byte, an early wrong byte at once, and hypothesis fuzzes the parser.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto import NEED_DATA, Address
from socks5d.proto.proxy_protocol import (
    MAX_V1,
    MAX_V2,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderParser,
    encode_v1,
    encode_v2,
    starts_like_header,
)

from .three_ways import assert_decodes_three_ways, assert_rejects_three_ways, connection

CLIENT4 = Address(ipaddress.IPv4Address("192.0.2.10"), 50123)
BALANCER4 = Address(ipaddress.IPv4Address("198.51.100.1"), 1080)
CLIENT6 = Address(ipaddress.IPv6Address("2001:db8::10"), 50123)
BALANCER6 = Address(ipaddress.IPv6Address("2001:db8::1"), 1080)


ParserReader = connection(ProxyHeaderParser)


def v2(command: int, family: int, block: bytes) -> bytes:
    return V2_SIGNATURE + bytes([command, family]) + len(block).to_bytes(2, "big") + block


V4_BLOCK = bytes([192, 0, 2, 10, 198, 51, 100, 1]) + (50123).to_bytes(2, "big") + b"\x04\x38"
V6_BLOCK = CLIENT6.host.packed + BALANCER6.host.packed + (50123).to_bytes(2, "big") + b"\x04\x38"
PROXIED4 = ProxyHeader(2, False, CLIENT4, BALANCER4)
PROXIED6 = ProxyHeader(2, False, CLIENT6, BALANCER6)
NO_ADDRESS_V2 = ProxyHeader(2, False, None, None)

VALID = [
    pytest.param(
        b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 1080\r\n",
        ProxyHeader(1, False, CLIENT4, BALANCER4),
        id="v1-tcp4",
    ),
    pytest.param(
        b"PROXY TCP6 2001:db8::10 2001:db8::1 50123 1080\r\n",
        ProxyHeader(1, False, CLIENT6, BALANCER6),
        id="v1-tcp6",
    ),
    pytest.param(
        b"PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0010 2001:db8::1 0 65535\r\n",
        ProxyHeader(1, False, Address(CLIENT6.host, 0), Address(BALANCER6.host, 65535)),
        id="v1-tcp6-full-form-upper-case",
    ),
    pytest.param(b"PROXY UNKNOWN\r\n", ProxyHeader(1, False, None, None), id="v1-unknown"),
    pytest.param(
        b"PROXY UNKNOWN ffff:f::f:ffff ffff:f::f:ffff 65535 65535\r\n",
        ProxyHeader(1, False, None, None),
        id="v1-unknown-with-addresses",
    ),
    pytest.param(
        b"PROXY TCP6 "
        + b"f" * 4
        + (b":" + b"f" * 4) * 7
        + b" "
        + b"f" * 4
        + (b":" + b"f" * 4) * 7
        + b" 65535 65535\r\n",
        ProxyHeader(
            1,
            False,
            Address(ipaddress.IPv6Address((1 << 128) - 1), 65535),
            Address(ipaddress.IPv6Address((1 << 128) - 1), 65535),
        ),
        id="v1-longest-tcp6",
    ),
    pytest.param(v2(0x21, 0x11, V4_BLOCK), PROXIED4, id="v2-tcp4"),
    pytest.param(v2(0x21, 0x12, V4_BLOCK), PROXIED4, id="v2-udp4"),
    pytest.param(v2(0x21, 0x21, V6_BLOCK), PROXIED6, id="v2-tcp6"),
    pytest.param(v2(0x21, 0x22, V6_BLOCK), PROXIED6, id="v2-udp6"),
    pytest.param(v2(0x20, 0x00, b""), ProxyHeader(2, True, None, None), id="v2-local"),
    pytest.param(
        v2(0x20, 0x11, V4_BLOCK), ProxyHeader(2, True, None, None), id="v2-local-with-address"
    ),
    pytest.param(v2(0x21, 0x00, b""), NO_ADDRESS_V2, id="v2-unspec"),
    pytest.param(v2(0x21, 0x00, b"\x99" * 20), NO_ADDRESS_V2, id="v2-unspec-ignored-block"),
    pytest.param(v2(0x21, 0x31, b"/run/a".ljust(216, b"\0")), NO_ADDRESS_V2, id="v2-unix"),
    pytest.param(
        v2(0x21, 0x11, V4_BLOCK + b"\x05\x00\x04abcd"),
        ProxyHeader(2, False, CLIENT4, BALANCER4, b"abcd"),
        id="v2-unique-id",
    ),
    pytest.param(
        v2(0x21, 0x11, V4_BLOCK + b"\x04\x00\x00" + b"\x20\x00\x05\x01\x00\x00\x00\x00"),
        PROXIED4,
        id="v2-noop-and-ssl-tlvs-skipped",
    ),
    pytest.param(
        v2(0x21, 0x11, V4_BLOCK + b"\x05\x00\x80" + b"u" * 128 + b"\x04" + b"\x00\x46" + b"n" * 70),
        ProxyHeader(2, False, CLIENT4, BALANCER4, b"u" * 128),
        id="v2-longest",
    ),
]


@pytest.mark.parametrize(("data", "expected"), VALID)
def test_valid_headers_decode_three_ways(data: bytes, expected: ProxyHeader) -> None:
    assert len(data) <= (MAX_V1 if data.startswith(b"PROXY") else MAX_V2)
    assert_decodes_three_ways(ParserReader, data, expected)


def test_the_longest_v2_header_is_232_bytes() -> None:
    assert len(VALID[-1].values[0]) == MAX_V2 == 232


MALFORMED = [
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 1080\n", id="v1-lone-lf"),
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 1080\rX\r\n", id="v1-lone-cr"),
    pytest.param(b"PROXY  TCP4 192.0.2.10 198.51.100.1 50123 1080\r\n", id="v1-two-spaces"),
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 1080 \r\n", id="v1-trailing-space"),
    pytest.param(b"PROXY TCP4 192.0.2.010 198.51.100.1 50123 1080\r\n", id="v1-octal-looking"),
    pytest.param(b"PROXY TCP4 192.0.2.256 198.51.100.1 50123 1080\r\n", id="v1-octet-256"),
    pytest.param(b"PROXY TCP4 192.0.2 198.51.100.1 50123 1080\r\n", id="v1-three-octets"),
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 050123 1080\r\n", id="v1-port-zero-led"),
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 1080\r\n", id="v1-port-65536"),
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 1080\r\n", id="v1-port-negative"),
    pytest.param(b"PROXY TCP4 2001:db8::10 2001:db8::1 50123 1080\r\n", id="v1-tcp4-with-ipv6"),
    pytest.param(b"PROXY TCP6 192.0.2.10 198.51.100.1 50123 1080\r\n", id="v1-tcp6-with-ipv4"),
    pytest.param(b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1 2\r\n", id="v1-tcp6-dotted"),
    pytest.param(b"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 2\r\n", id="v1-tcp6-zone"),
    pytest.param(b"PROXY TCP6 1:2:3:4:5:6:7:8:9 2001:db8::1 1 2\r\n", id="v1-tcp6-144-bits"),
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 50123\r\n", id="v1-missing-port"),
    pytest.param(b"PROXY UDP4 192.0.2.10 198.51.100.1 50123 1080\r\n", id="v1-udp4"),
    pytest.param(b"PROXY \r\n", id="v1-no-protocol"),
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 5\x00 1080\r\n", id="v1-nul"),
    pytest.param(b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 \xd9\xa1\r\n", id="v1-non-ascii"),
    pytest.param(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", id="v1-over-107"),
    pytest.param(b"PROXY\r\n", id="v1-no-space"),
    pytest.param(b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", id="v1-lower-case"),
    pytest.param(b"\x05\x01\x00", id="socks5-greeting"),
    pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
    pytest.param(V2_SIGNATURE[:-1] + b"\x00", id="v2-bad-signature"),
    pytest.param(v2(0x11, 0x11, V4_BLOCK), id="v2-version-1"),
    pytest.param(v2(0x31, 0x11, V4_BLOCK), id="v2-version-3"),
    pytest.param(v2(0x22, 0x11, V4_BLOCK), id="v2-command-2"),
    pytest.param(v2(0x2F, 0x11, V4_BLOCK), id="v2-command-f"),
    pytest.param(v2(0x21, 0x13, V4_BLOCK), id="v2-protocol-3"),
    pytest.param(v2(0x21, 0x41, V4_BLOCK), id="v2-family-4"),
    pytest.param(v2(0x21, 0x01, V4_BLOCK), id="v2-unspec-family-stream"),
    pytest.param(v2(0x21, 0x11, V4_BLOCK[:11]), id="v2-short-ipv4-block"),
    pytest.param(v2(0x21, 0x21, V4_BLOCK), id="v2-ipv6-with-ipv4-block"),
    pytest.param(v2(0x21, 0x31, b"/run/a"), id="v2-short-unix-block"),
    pytest.param(v2(0x21, 0x11, V4_BLOCK + b"\x05\x00"), id="v2-truncated-tlv"),
    pytest.param(v2(0x21, 0x11, V4_BLOCK + b"\x05\x00\x09abcd"), id="v2-tlv-overrun"),
    pytest.param(v2(0x21, 0x11, V4_BLOCK + b"\x05\x00\x81" + b"u" * 129), id="v2-unique-id-129"),
    pytest.param(v2(0x21, 0x11, V4_BLOCK + b"\x04\x00\xca" + b"n" * 202), id="v2-233-bytes"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_headers_are_refused_three_ways(data: bytes) -> None:
    assert_rejects_three_ways(ParserReader, data, ProtocolError)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"X", id="first-byte"),
        pytest.param(b"PROXZ", id="v1-prefix"),
        pytest.param(b"PROXY TCP4 1.2.3.4\n", id="v1-lone-lf"),
        pytest.param(V2_SIGNATURE + b"\x11", id="v2-version"),
        pytest.param(V2_SIGNATURE + b"\x21\x99", id="v2-family"),
        pytest.param(V2_SIGNATURE + b"\x21\x11\x00\xd9", id="v2-length-217"),
        pytest.param(V2_SIGNATURE + b"\x21\x11\xff\xff", id="v2-length-65535"),
    ],
)
def test_a_wrong_byte_is_refused_when_it_arrives(data: bytes) -> None:
    """ "It is recommended to abort the connection as soon as possible": no waiting for the
    rest of a header that can no longer be valid."""
    parser = ProxyHeaderParser()
    parser.receive_data(data)
    with pytest.raises(ProtocolError):
        parser.next_event()


def test_a_v1_line_is_refused_at_107_bytes_without_crlf() -> None:
    parser = ProxyHeaderParser()
    parser.receive_data(b"PROXY UNKNOWN " + b"f" * (MAX_V1 - 15))
    assert parser.next_event() is NEED_DATA  # 106 bytes: the CRLF may still come
    parser.receive_data(b"f")
    with pytest.raises(ProtocolError, match="107"):
        parser.next_event()


@pytest.mark.parametrize(
    "data",
    [b"", b"PROXY TCP4 192.0.2.10 ", V2_SIGNATURE + b"\x21\x11\x00\x0c" + V4_BLOCK[:5]],
    ids=["nothing", "v1-half", "v2-half"],
)
def test_eof_inside_a_header_is_refused(data: bytes) -> None:
    """ "The receiver must also reject incoming connections containing partial protocol
    headers.\""""
    parser = ProxyHeaderParser()
    if data:
        parser.receive_data(data)
        assert parser.next_event() is NEED_DATA
    parser.receive_data(b"")
    with pytest.raises(ProtocolError, match="closed"):
        parser.next_event()


def test_the_greeting_in_the_same_segment_is_left_for_socks() -> None:
    parser = ProxyHeaderParser()
    parser.receive_data(encode_v2(CLIENT4, BALANCER4) + b"\x05\x01\x00")
    assert parser.next_event() == PROXIED4
    assert parser.trailing_data == b"\x05\x01\x00"
    assert parser.next_event() == PROXIED4  # the header stays; nothing more is read


def test_starts_like_header() -> None:
    for data in (b"P", b"PROXY", b"PROXY TCP4", b"\r", V2_SIGNATURE, V2_SIGNATURE + b"\x21"):
        assert starts_like_header(data), data
    for data in (b"", b"\x05\x01\x00", b"\x04\x01", b"PROXZ", b"\r\n\r\n\x01", b"GET /"):
        assert not starts_like_header(data), data


@pytest.mark.parametrize(
    ("source", "destination"), [(CLIENT4, BALANCER4), (CLIENT6, BALANCER6)], ids=["ipv4", "ipv6"]
)
def test_encoders_round_trip(source: Address, destination: Address) -> None:
    one = ProxyHeaderParser()
    one.receive_data(encode_v1(source, destination))
    assert one.next_event() == ProxyHeader(1, False, source, destination)
    two = ProxyHeaderParser()
    two.receive_data(encode_v2(source, destination, unique_id=b"id-1"))
    assert two.next_event() == ProxyHeader(2, False, source, destination, b"id-1")
    local = ProxyHeaderParser()
    local.receive_data(encode_v2(None, None, local=True))
    assert local.next_event() == ProxyHeader(2, True, None, None)


def test_encoders_refuse_what_the_header_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError):
        encode_v1(CLIENT4, BALANCER6)
    with pytest.raises(LocalProtocolError):
        encode_v2(CLIENT6, BALANCER4)
    with pytest.raises(LocalProtocolError):
        encode_v1(Address.from_host("example.com", 1), BALANCER4)
    with pytest.raises(LocalProtocolError):
        encode_v2(CLIENT4, BALANCER4, unique_id=b"x" * 129)


ipv4 = st.builds(ipaddress.IPv4Address, st.integers(0, (1 << 32) - 1))
ipv6 = st.builds(ipaddress.IPv6Address, st.integers(0, (1 << 128) - 1))
ports = st.integers(0, 0xFFFF)
pairs = st.one_of(st.tuples(ipv4, ipv4, ports, ports), st.tuples(ipv6, ipv6, ports, ports)).map(
    lambda t: (Address(t[0], t[2]), Address(t[1], t[3]))
)


@given(pair=pairs, version=st.sampled_from([1, 2]), unique_id=st.none() | st.binary(max_size=128))
def test_round_trip_of_any_addresses(
    pair: tuple[Address, Address], version: int, unique_id: bytes | None
) -> None:
    source, destination = pair
    if version == 1:
        data, expected = encode_v1(source, destination), ProxyHeader(1, False, source, destination)
    else:
        data = encode_v2(source, destination, unique_id=unique_id)
        expected = ProxyHeader(2, False, source, destination, unique_id)
    parser = ProxyHeaderParser()
    parser.receive_data(data + b"\x05")
    assert parser.next_event() == expected
    assert parser.trailing_data == b"\x05"


def _outcome(data: bytes, chunk: int) -> Any:
    parser = ProxyHeaderParser()
    try:
        for start in range(0, len(data), chunk):
            parser.receive_data(data[start : start + chunk])
            event = parser.next_event()
            if event is not NEED_DATA:
                return event, parser.trailing_data + data[start + chunk :]
        return NEED_DATA
    except ProtocolError:
        return ProtocolError


@given(data=st.binary(max_size=300), chunk=st.integers(1, 300))
def test_arbitrary_bytes_give_a_header_need_data_or_protocol_error(data: bytes, chunk: int) -> None:
    whole = _outcome(data, len(data) or 1)
    assert _outcome(data, chunk) == whole  # how the bytes are cut changes nothing


@given(
    pair=pairs,
    version=st.sampled_from([1, 2]),
    position=st.integers(0, 300),
    octet=st.integers(0, 255),
    chunk=st.integers(1, 64),
)
def test_corrupted_headers_give_a_header_or_protocol_error(
    pair: tuple[Address, Address], version: int, position: int, octet: int, chunk: int
) -> None:
    data = bytearray(encode_v1(*pair) if version == 1 else encode_v2(*pair))
    data[position % len(data)] = octet
    outcome = _outcome(bytes(data) + b"\x05\x01\x00", chunk)
    assert outcome is ProtocolError or outcome is NEED_DATA or isinstance(outcome[0], ProxyHeader)
    assert outcome == _outcome(bytes(data) + b"\x05\x01\x00", 1024)
