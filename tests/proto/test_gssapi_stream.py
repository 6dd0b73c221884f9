"""RFC 1961 §5 framing of protected data, without Kerberos: `EncapsulatedStream` (a TCP
stream of MTYP 3 messages) and `decode_encapsulated_datagram` (one UDP datagram).

- any tokens, framed and fed in any splits (byte by byte too), come back exactly, in order;
- the end of the stream inside a header or a token is a `ProtocolError`, at a boundary not;
- any other message type (1, 2, the abort), another version or an unknown type is refused;
- `pending` is the number of octets of the incomplete message held;
- a datagram is exactly one framed token: truncated, trailing octets or another type refused;
- arbitrary bytes give tokens or a `ProtocolError`, nothing else.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.gssapi import (
    MAX_MESSAGE_LENGTH,
    MAX_TOKEN_LENGTH,
    EncapsulatedStream,
    decode_encapsulated_datagram,
    encode_encapsulated,
)

#: pyproject's 30 s per-test timeout is sized for the `fast` profile (200 examples); scale it
#: with the profile so that `deep` (5000) is not cut short.
pytestmark = pytest.mark.timeout(30 * max(1, (settings.default.max_examples or 200) // 200))

#: VER, MTYP, LEN
HEADER = 4
ABORT = b"\x01\xff"

# --- helpers ---------------------------------------------------------------------------------


def token_of(size: int, seed: int) -> bytes:
    """`size` pseudo-random octets: no two positions alike, so an offset error shows."""
    return random.Random(seed).randbytes(size)


def frame(message_type: int, token: bytes, version: int = 1) -> bytes:
    """A framed message written out by hand (not by the code under test)."""
    return bytes([version, message_type]) + len(token).to_bytes(2, "big") + token


def drain(stream: EncapsulatedStream) -> list[bytes]:
    """Every complete token the stream holds now."""
    tokens = []
    while (token := stream.next_token()) is not None:
        tokens.append(token)
    return tokens


def feed_in_pieces(wire: bytes, cuts: list[int]) -> list[bytes]:
    """`wire` fed in the pieces `cuts` make, tokens taken after each piece, then EOF."""
    stream = EncapsulatedStream()
    tokens: list[bytes] = []
    start = 0
    for end in [*sorted(set(cuts)), len(wire)]:
        if end > start:
            stream.feed(wire[start:end])
            tokens += drain(stream)
            start = end
    stream.feed(b"")
    tokens += drain(stream)
    assert stream.pending == 0
    return tokens


#: Token sizes: small ones, the edges of the 2-octet length, and anything up to the maximum.
token_sizes = st.one_of(
    st.integers(0, 300),
    st.sampled_from([0, 1, 255, 256, MAX_TOKEN_LENGTH - 1, MAX_TOKEN_LENGTH]),
    st.integers(0, MAX_TOKEN_LENGTH),
)
token_lists = st.lists(st.tuples(token_sizes, st.integers(0, 2**32)), max_size=5).map(
    lambda specs: [token_of(size, seed) for size, seed in specs]
)


# --- round trips ------------------------------------------------------------------------------


def test_encode_encapsulated_is_ver_1_mtyp_3_len_token() -> None:
    assert encode_encapsulated(b"") == b"\x01\x03\x00\x00"
    assert encode_encapsulated(b"abc") == b"\x01\x03\x00\x03abc"
    longest = token_of(MAX_TOKEN_LENGTH, 1)
    assert encode_encapsulated(longest) == b"\x01\x03\xff\xff" + longest
    assert len(encode_encapsulated(longest)) == MAX_MESSAGE_LENGTH


def test_a_token_longer_than_65535_octets_is_not_framed() -> None:
    with pytest.raises(LocalProtocolError):
        encode_encapsulated(bytes(MAX_TOKEN_LENGTH + 1))


@given(tokens=token_lists, data=st.data())
def test_tokens_fed_in_any_split_come_back_exactly_and_in_order(
    tokens: list[bytes], data: st.DataObject
) -> None:
    wire = b"".join(encode_encapsulated(token) for token in tokens)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    assert feed_in_pieces(wire, cuts) == tokens


@given(tokens=token_lists)
def test_tokens_fed_whole_come_back_exactly(tokens: list[bytes]) -> None:
    wire = b"".join(encode_encapsulated(token) for token in tokens)
    assert feed_in_pieces(wire, []) == tokens


@given(
    tokens=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 2**32)), min_size=1, max_size=4
    ).map(lambda specs: [token_of(size, seed) for size, seed in specs])
)
def test_tokens_fed_byte_by_byte_come_back_each_on_its_last_byte(tokens: list[bytes]) -> None:
    wire = b"".join(encode_encapsulated(token) for token in tokens)
    ends = set()
    position = 0
    for token in tokens:
        position += HEADER + len(token)
        ends.add(position)
    stream = EncapsulatedStream()
    received = []
    for count in range(1, len(wire) + 1):
        stream.feed(wire[count - 1 : count])
        got = drain(stream)
        if count in ends:
            assert len(got) == 1, f"no token after byte {count}, which ends one"
        else:
            assert got == [], f"a token after byte {count}, which ends none"
        received += got
    assert received == tokens
    assert stream.pending == 0


def test_several_longest_tokens_in_one_feed_are_not_mistaken_for_an_oversized_message() -> None:
    tokens = [token_of(MAX_TOKEN_LENGTH, seed) for seed in range(5)]
    stream = EncapsulatedStream()
    stream.feed(b"".join(encode_encapsulated(token) for token in tokens))
    assert drain(stream) == tokens
    assert stream.pending == 0


def test_an_empty_token_is_a_token_not_the_absence_of_one() -> None:
    stream = EncapsulatedStream()
    stream.feed(b"\x01\x03\x00\x00")
    assert stream.next_token() == b""
    assert stream.next_token() is None


# --- pending ----------------------------------------------------------------------------------


def test_pending_counts_the_octets_of_the_incomplete_message() -> None:
    first, second = token_of(10, 1), token_of(20, 2)
    wire = encode_encapsulated(first) + encode_encapsulated(second)
    stream = EncapsulatedStream()
    assert stream.pending == 0
    stream.feed(wire[:3])  # inside the first header
    assert stream.next_token() is None
    assert stream.pending == 3
    stream.feed(wire[3 : HEADER + 10 + 5])  # the first message and 5 octets of the second
    assert stream.pending == HEADER + 10 + 5, "nothing is taken before next_token()"
    assert stream.next_token() == first
    assert stream.pending == 5
    assert stream.next_token() is None
    assert stream.pending == 5
    stream.feed(wire[HEADER + 10 + 5 :])
    assert stream.pending == HEADER + 20
    assert stream.next_token() == second
    assert stream.pending == 0


# --- the end of the stream ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 7])
def test_eof_inside_a_header_or_a_token_is_a_protocol_error(size: int) -> None:
    message = encode_encapsulated(token_of(size, size))
    for cut in range(1, len(message)):
        stream = EncapsulatedStream()
        stream.feed(message[:cut])
        assert stream.next_token() is None, f"a token from {cut} of {len(message)} octets"
        stream.feed(b"")
        with pytest.raises(ProtocolError, match="ended inside"):
            stream.next_token()


def test_eof_inside_the_second_message_still_gives_the_first() -> None:
    first = token_of(9, 9)
    stream = EncapsulatedStream()
    stream.feed(encode_encapsulated(first) + b"\x01\x03\x00\x09abc")
    stream.feed(b"")
    assert stream.next_token() == first
    with pytest.raises(ProtocolError, match="ended inside"):
        stream.next_token()


@pytest.mark.parametrize("count", [0, 1, 3])
def test_eof_at_a_message_boundary_is_the_clean_end(count: int) -> None:
    tokens = [token_of(size, size) for size in range(count)]
    stream = EncapsulatedStream()
    stream.feed(b"".join(encode_encapsulated(token) for token in tokens))
    stream.feed(b"")
    assert drain(stream) == tokens
    assert stream.next_token() is None
    assert stream.next_token() is None, "asking again after the end is still the end"


def test_a_huge_length_with_a_partial_body_then_eof_is_a_protocol_error() -> None:
    stream = EncapsulatedStream()
    stream.feed(b"\x01\x03\xff\xff" + bytes(1000))
    assert stream.next_token() is None
    assert stream.pending == 1004
    stream.feed(b"")
    with pytest.raises(ProtocolError):
        stream.next_token()


# --- other messages --------------------------------------------------------------------------

REFUSED = [
    pytest.param(frame(1, b"tok"), "type 0x01", id="mtyp-1-authentication"),
    pytest.param(frame(2, b"\x02"), "type 0x02", id="mtyp-2-protection-level"),
    pytest.param(ABORT, "aborted", id="abort"),
    pytest.param(frame(3, b"tok", version=2), "version 0x02", id="version-2"),
    pytest.param(frame(3, b"tok", version=0), "version 0x00", id="version-0"),
    pytest.param(frame(3, b"tok", version=5), "version 0x05", id="socks5-version"),
    pytest.param(frame(4, b"tok"), "type 0x04", id="unknown-mtyp-4"),
    pytest.param(frame(0, b"tok"), "type 0x00", id="unknown-mtyp-0"),
]


@pytest.mark.parametrize(("message", "complaint"), REFUSED)
def test_anything_but_an_encapsulation_message_is_refused(message: bytes, complaint: str) -> None:
    stream = EncapsulatedStream()
    stream.feed(message)
    with pytest.raises(ProtocolError, match=complaint):
        stream.next_token()


@pytest.mark.parametrize(("message", "complaint"), REFUSED)
def test_a_refused_message_byte_by_byte_is_refused_by_the_time_it_is_complete(
    message: bytes, complaint: str
) -> None:
    stream = EncapsulatedStream()
    with pytest.raises(ProtocolError, match=complaint):
        for count in range(1, len(message) + 1):
            stream.feed(message[count - 1 : count])
            assert stream.next_token() is None, f"a token from {message!r}"


@pytest.mark.parametrize(("message", "complaint"), REFUSED)
def test_a_refused_message_after_good_ones_ends_the_stream_there(
    message: bytes, complaint: str
) -> None:
    tokens = [token_of(5, 1), token_of(0, 2)]
    stream = EncapsulatedStream()
    stream.feed(b"".join(map(encode_encapsulated, tokens)) + message + encode_encapsulated(b"x"))
    assert stream.next_token() == tokens[0]
    assert stream.next_token() == tokens[1]
    with pytest.raises(ProtocolError, match=complaint):
        stream.next_token()


# --- datagrams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 100, MAX_TOKEN_LENGTH])
def test_a_datagram_of_one_framed_token_gives_the_token(size: int) -> None:
    token = token_of(size, size)
    assert decode_encapsulated_datagram(encode_encapsulated(token)) == token


@pytest.mark.parametrize("size", [0, 1, 6])
def test_a_truncated_datagram_is_a_protocol_error(size: int) -> None:
    message = encode_encapsulated(token_of(size, size))
    for cut in range(len(message)):
        with pytest.raises(ProtocolError, match="truncated"):
            decode_encapsulated_datagram(message[:cut])


@pytest.mark.parametrize(
    "trailer", [b"\x00", b"x" * 10, encode_encapsulated(b"second token")], ids=["1", "10", "token"]
)
def test_a_datagram_with_octets_after_the_token_is_a_protocol_error(trailer: bytes) -> None:
    with pytest.raises(ProtocolError, match=f"{len(trailer)} octets after"):
        decode_encapsulated_datagram(encode_encapsulated(b"token") + trailer)


@pytest.mark.parametrize(("message", "complaint"), REFUSED)
def test_a_datagram_of_another_message_is_a_protocol_error(message: bytes, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        decode_encapsulated_datagram(message)


# --- arbitrary bytes ---------------------------------------------------------------------------

#: Bytes that look like framing often enough to get past the header now and then.
framing_like = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.one_of(
            st.builds(frame, st.sampled_from([1, 2, 3, 3, 3, 4]), st.binary(max_size=40)),
            st.just(ABORT),
            st.binary(max_size=6),
        ),
        max_size=6,
    ).map(b"".join),
)


@given(wire=framing_like, data=st.data())
def test_arbitrary_bytes_in_any_split_give_tokens_or_a_protocol_error(
    wire: bytes, data: st.DataObject
) -> None:
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(wire)), max_size=8), label="cuts")))
    stream = EncapsulatedStream()
    got: list[bytes] = []
    try:
        start = 0
        for end in [*cuts, len(wire)]:
            if end > start:  # an empty feed would be the end of the stream
                stream.feed(wire[start:end])
                got += drain(stream)
                start = end
        stream.feed(b"")
        got += drain(stream)
    except ProtocolError:
        pass
    else:
        # accepted to the end: then the bytes were exactly these framed tokens
        assert b"".join(map(encode_encapsulated, got)) == wire
    assert all(len(token) <= MAX_TOKEN_LENGTH for token in got)


@given(framing_like)
def test_arbitrary_datagrams_give_a_token_or_a_protocol_error(datagram: bytes) -> None:
    try:
        token = decode_encapsulated_datagram(datagram)
    except ProtocolError:
        return
    assert encode_encapsulated(token) == datagram
