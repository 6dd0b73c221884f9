"""HTTP CONNECT's response reader (`proto.http_connect`): status lines three ways (whole,
byte by byte, with the tunnel's first bytes after them), malformed and oversized heads
refused, EOF, the request's encoding, and hypothesis on arbitrary bytes.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto import NEED_DATA, Address, ConnectionClosed, DomainName
from socks5d.proto.events import HttpResponse
from socks5d.proto.http_connect import MAX_HEAD, HttpConnectParser, encode_connect

from .three_ways import assert_decodes_three_ways, assert_rejects_three_ways, connection

ParserReader = connection(HttpConnectParser)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"HTTP/1.1 200 Connection established\r\n\r\n",
            HttpResponse(200, "Connection established"),
        ),
        (b"HTTP/1.0 200\r\nProxy-Agent: x\r\n\r\n", HttpResponse(200, "")),
        (
            b"HTTP/1.1 407 Proxy Authentication Required\r\nA: b\r\nC: d\r\n\r\n",
            HttpResponse(407, "Proxy Authentication Required"),
        ),
        (
            b"HTTP/1.1 500 Unable to connect\r\nContent-Type: text/html\r\n\r\n",
            HttpResponse(500, "Unable to connect"),
        ),
    ],
)
def test_responses_decode_three_ways(data: bytes, expected: HttpResponse) -> None:
    assert_decodes_three_ways(ParserReader, data, expected)


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200OK\r\n\r\n",
        b"HTTP/1.1 099 x\r\n\r\n",
        b"\x05\x00",
    ],
)
def test_malformed_responses_are_refused(data: bytes) -> None:
    reader = ParserReader()
    with pytest.raises(ProtocolError):
        reader.feed(data + b"\r\n\r\n" if b"\r\n\r\n" not in data else data)
        reader.read()
    if b"\r\n\r\n" in data:
        assert_rejects_three_ways(ParserReader, data, ProtocolError)


@pytest.mark.parametrize("data", [b"\r", b"\r\n", b"HTTP\r\n", b"\r\nHTTP/1.1 200 OK\r\n"])
def test_a_first_line_that_cannot_be_a_status_line_is_refused_before_the_head_ends(
    data: bytes,
) -> None:
    """Whole or byte by byte, the same answer (found by the hypothesis test below)."""
    for size in (len(data), 1):
        parser = HttpConnectParser()
        with pytest.raises(ProtocolError, match="not an HTTP response"):
            for start in range(0, len(data), size):
                parser.receive_data(data[start : start + size])
                assert parser.next_event() is NEED_DATA


def test_an_endless_head_is_refused() -> None:
    parser = HttpConnectParser()
    parser.receive_data(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD // 6))
    with pytest.raises(ProtocolError, match="over"):
        parser.next_event()


def test_eof_before_the_head_ends_is_a_close() -> None:
    parser = HttpConnectParser()
    parser.receive_data(b"HTTP/1.1 200 OK\r\n")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"")
    assert isinstance(parser.next_event(), ConnectionClosed)


def test_the_request() -> None:
    destination = Address(DomainName("example.org"), 443)
    assert encode_connect(destination) == (
        b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
    )
    with_credentials = encode_connect(destination, "alice", "s3cret")
    assert b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n" in with_credentials
    v6 = encode_connect(Address(ipaddress.IPv6Address("::1"), 80))
    assert v6.startswith(b"CONNECT [::1]:80 HTTP/1.1\r\n")
    for bad in ("exa mple.org", "a\r\nX: y", "user@host", "a/b"):
        with pytest.raises(LocalProtocolError):
            encode_connect(Address(DomainName(bad), 80))


@given(data=st.binary(max_size=400), chunk=st.integers(1, 64))
def test_arbitrary_bytes_give_a_response_need_data_or_protocol_error(
    data: bytes, chunk: int
) -> None:
    def outcome(size: int) -> Any:
        parser = HttpConnectParser()
        try:
            for start in range(0, len(data), size):
                parser.receive_data(data[start : start + size])
                event = parser.next_event()
                if event is not NEED_DATA:
                    return event, parser.trailing_data + data[start + size :]
            return NEED_DATA
        except ProtocolError:
            return ProtocolError

    assert outcome(chunk) == outcome(len(data) or 1)
