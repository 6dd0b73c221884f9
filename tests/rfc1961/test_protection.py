"""RFC 1961 per-message protection (`socks5d.gss.Protection`) and the protection-level
message (`Acceptor.read_level`), with a real Kerberos context pair made in-process: the
initiator as `socks5d.client` makes it, the acceptor as the server does.

- seal/open round trips at integrity and confidentiality, at the token-size edges and across
  many tokens (each framed token at most 65535 octets), whatever the reads' boundaries;
- a token protected at the other level, tampered with, replayed, reordered or from another
  context is a `ProtocolError`, as is the stream ending inside a token;
- a UDP datagram is one framed token, and nothing else is accepted as one;
- the level octet: wrapped (RFC 1961), unwrapped (the NEC variant, only when allowed), or
  malformed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import gssapi
import pytest

from socks5d.errors import AuthFailed, LocalProtocolError, ProtocolError
from socks5d.gss import (
    Acceptor,
    Protection,
    acceptor_credentials,
    client_level_token,
    client_read_level,
    initiate,
    initiator_step,
)
from socks5d.proto import ProtectionLevel
from socks5d.proto.gssapi import MAX_TOKEN_LENGTH, EncapsulatedStream, encode_encapsulated

from .realm import SERVICE, KerberosRealm

CLEAR = ProtectionLevel.CLEAR
INTEGRITY = ProtectionLevel.INTEGRITY
CONFIDENTIALITY = ProtectionLevel.CONFIDENTIALITY
PROTECTED = [pytest.param(INTEGRITY, id="integrity"), pytest.param(CONFIDENTIALITY, id="conf")]
#: 300 KB: several full tokens and a partial one.
LARGE = 300 * 1024
#: Readable in the wire when not encrypted.
MARKER = b"PLAINTEXT-MARKER-0123456789"


@dataclass
class Pair:
    """Both ends of one established context."""

    initiator: gssapi.SecurityContext
    acceptor: Acceptor

    def protections(
        self, level: ProtectionLevel, acceptor_level: ProtectionLevel | None = None
    ) -> tuple[Protection, Protection]:
        """(client's, server's) protection at `level` (the server's at `acceptor_level`)."""
        return (
            Protection(self.initiator, level),
            Protection(self.acceptor.context, acceptor_level or level),
        )


def establish(realm: KerberosRealm, *, in_sequence: bool = True) -> Pair:
    """A context from alice to rcmd/localhost, tokens looped between the two ends."""
    acceptor = Acceptor(acceptor_credentials(SERVICE, realm.service_keytab))
    initiator = initiate(SERVICE, "localhost", in_sequence=in_sequence)
    token = initiator_step(initiator, None)
    for _ in range(10):  # Kerberos needs one round trip; bounded anyway
        answer = acceptor.step(token)
        if not initiator.complete:
            token = initiator_step(initiator, answer)
        if initiator.complete and acceptor.complete:
            break
    assert initiator.complete and acceptor.complete
    assert acceptor.principal == realm.principal(realm.user)
    return Pair(initiator, acceptor)


@pytest.fixture
def pair(krb5_realm: KerberosRealm) -> Pair:
    return establish(krb5_realm)


@pytest.fixture
def datagram_pair(krb5_realm: KerberosRealm) -> Pair:
    """As the client makes it for UDP ASSOCIATE: no sequence checking."""
    return establish(krb5_realm, in_sequence=False)


def tokens_of(wire: bytes) -> list[bytes]:
    """The tokens of a sealed stream, parsed from its framing."""
    stream = EncapsulatedStream()
    stream.feed(wire)
    stream.feed(b"")
    tokens = []
    while (token := stream.next_token()) is not None:
        tokens.append(token)
    return tokens


def open_in_pieces(protection: Protection, wire: bytes, cuts: list[int]) -> bytes:
    """`wire` given to `open()` in the pieces `cuts` make; never an empty piece (EOF)."""
    plaintext = b""
    start = 0
    for end in [*sorted(set(cuts)), len(wire)]:
        if end > start:
            plaintext += protection.open(wire[start:end])
            start = end
    assert protection.pending == 0
    return plaintext


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def flip(wire: bytes, position: int) -> bytes:
    return wire[:position] + bytes([wire[position] ^ 0x01]) + wire[position + 1 :]


# --- round trips ------------------------------------------------------------------------------


def test_max_plaintext_fills_a_token_to_at_most_65535_octets(pair: Pair) -> None:
    for level in (INTEGRITY, CONFIDENTIALITY):
        sender, _ = pair.protections(level)
        assert 60000 < sender.max_plaintext < MAX_TOKEN_LENGTH
        (token,) = tokens_of(sender.seal(bytes(sender.max_plaintext)))
        assert len(token) <= MAX_TOKEN_LENGTH
    integrity, _ = pair.protections(INTEGRITY)
    confidentiality, _ = pair.protections(CONFIDENTIALITY)
    assert confidentiality.max_plaintext < integrity.max_plaintext, "encryption costs octets"


@pytest.mark.parametrize("level", PROTECTED)
@pytest.mark.parametrize("size", ["0", "1", "max", "max+1", "300KB"])
@pytest.mark.parametrize("direction", ["client-to-server", "server-to-client"])
def test_seal_open_round_trip(
    pair: Pair, level: ProtectionLevel, size: str, direction: str
) -> None:
    client, server = pair.protections(level)
    sender, receiver = (client, server) if direction == "client-to-server" else (server, client)
    length = {
        "0": 0,
        "1": 1,
        "max": sender.max_plaintext,
        "max+1": sender.max_plaintext + 1,
        "300KB": LARGE,
    }[size]
    data = payload(length, length)
    wire = sender.seal(data)
    tokens = tokens_of(wire)
    assert len(tokens) == max(1, math.ceil(length / sender.max_plaintext))
    assert all(len(token) <= MAX_TOKEN_LENGTH for token in tokens)
    assert b"".join(map(encode_encapsulated, tokens)) == wire, "nothing but framed tokens"
    assert receiver.open(wire) == data
    assert receiver.pending == 0


@pytest.mark.parametrize("level", PROTECTED)
def test_each_token_carries_at_most_max_plaintext_octets(
    pair: Pair, level: ProtectionLevel
) -> None:
    sender, _ = pair.protections(level)
    data = payload(LARGE, 7)
    sizes = [
        len(pair.acceptor.context.unwrap(token).message) for token in tokens_of(sender.seal(data))
    ]
    assert sizes[:-1] == [sender.max_plaintext] * (len(sizes) - 1)
    assert sum(sizes) == LARGE


@pytest.mark.parametrize("level", PROTECTED)
def test_open_byte_by_byte_gives_each_token_on_its_last_byte(
    pair: Pair, level: ProtectionLevel
) -> None:
    sender, receiver = pair.protections(level)
    pieces = [b"first", b"", b"third piece"]
    sealed = [sender.seal(piece) for piece in pieces]
    wire = b"".join(sealed)
    ends = {sum(map(len, sealed[: index + 1])): piece for index, piece in enumerate(pieces)}
    for count in range(1, len(wire) + 1):
        plaintext = receiver.open(wire[count - 1 : count])
        assert plaintext == ends.get(count, b""), count
        assert receiver.pending == count - max([0, *(end for end in ends if end <= count)])
    assert receiver.pending == 0


@pytest.mark.parametrize("level", PROTECTED)
def test_open_in_random_splits_gives_the_same_plaintext(pair: Pair, level: ProtectionLevel) -> None:
    sender, receiver = pair.protections(level)
    for seed in range(12):
        rng = random.Random(seed)
        data = payload(rng.choice([1, 100, 70000, 150000]), seed)
        wire = sender.seal(data) + sender.seal(b"tail")
        cuts = [rng.randrange(len(wire) + 1) for _ in range(rng.randrange(1, 40))]
        assert open_in_pieces(receiver, wire, cuts) == data + b"tail", seed


def test_integrity_shows_the_plaintext_confidentiality_hides_it(pair: Pair) -> None:
    integrity, _ = pair.protections(INTEGRITY)
    confidentiality, _ = pair.protections(CONFIDENTIALITY)
    assert MARKER in integrity.seal(MARKER)
    assert MARKER not in confidentiality.seal(MARKER)


def test_there_is_no_protection_at_level_clear(pair: Pair) -> None:
    with pytest.raises(LocalProtocolError, match="clear"):
        Protection(pair.initiator, CLEAR)


# --- tokens that must not be accepted --------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected", "complaint"),
    [
        (INTEGRITY, CONFIDENTIALITY, "without confidentiality at protection level confid"),
        (CONFIDENTIALITY, INTEGRITY, "with confidentiality at protection level integrity"),
    ],
)
def test_a_token_protected_at_the_other_level_is_refused(
    pair: Pair, sent: ProtectionLevel, expected: ProtectionLevel, complaint: str
) -> None:
    sender, receiver = pair.protections(sent, acceptor_level=expected)
    with pytest.raises(ProtocolError, match=complaint):
        receiver.open(sender.seal(b"request"))


@pytest.mark.parametrize("level", PROTECTED)
@pytest.mark.parametrize("where", ["token-header", "middle", "last-octet"])
def test_a_tampered_token_does_not_verify(pair: Pair, level: ProtectionLevel, where: str) -> None:
    sender, receiver = pair.protections(level)
    wire = sender.seal(MARKER * 4)
    position = {"token-header": 4 + 3, "middle": len(wire) // 2, "last-octet": len(wire) - 1}[where]
    with pytest.raises(ProtocolError, match="does not verify"):
        receiver.open(flip(wire, position))


@pytest.mark.parametrize("level", PROTECTED)
def test_a_replayed_token_is_refused(pair: Pair, level: ProtectionLevel) -> None:
    sender, receiver = pair.protections(level)
    wire = sender.seal(b"once")
    assert receiver.open(wire) == b"once"
    with pytest.raises(ProtocolError, match="does not verify"):
        receiver.open(wire)


@pytest.mark.parametrize("level", PROTECTED)
def test_tokens_before_a_bad_one_are_delivered_then_the_error(
    pair: Pair, level: ProtectionLevel
) -> None:
    """What verified is not lost with the read it came in; the error follows it."""
    sender, receiver = pair.protections(level)
    good = sender.seal(b"good")
    assert receiver.open(good + good + sender.seal(b"later")) == b"good"
    with pytest.raises(ProtocolError, match="does not verify"):
        receiver.check()
    with pytest.raises(ProtocolError, match="does not verify"):
        receiver.open(b"")


def test_check_passes_while_nothing_failed(pair: Pair) -> None:
    sender, receiver = pair.protections(INTEGRITY)
    assert receiver.open(sender.seal(b"fine")) == b"fine"
    receiver.check()


@pytest.mark.parametrize("level", PROTECTED)
def test_a_reordered_stream_is_refused(pair: Pair, level: ProtectionLevel) -> None:
    sender, receiver = pair.protections(level)
    first, second = sender.seal(b"first"), sender.seal(b"second")
    with pytest.raises(ProtocolError, match="does not verify"):
        receiver.open(second + first)


def test_a_token_of_another_context_does_not_verify(pair: Pair, krb5_realm: KerberosRealm) -> None:
    other = establish(krb5_realm)
    stranger, _ = other.protections(INTEGRITY)
    _, receiver = pair.protections(INTEGRITY)
    with pytest.raises(ProtocolError, match="does not verify"):
        receiver.open(stranger.seal(b"hello"))


@pytest.mark.parametrize(
    "framing",
    [b"\x01\x01", b"\x01\x02", b"\x02\x03", b"\x01\xff"],
    ids=["mtyp1", "mtyp2", "v2", "abort"],
)
def test_a_token_in_other_framing_is_refused(pair: Pair, framing: bytes) -> None:
    sender, receiver = pair.protections(INTEGRITY)
    wire = sender.seal(b"hello")
    with pytest.raises(ProtocolError):
        receiver.open(framing + wire[2:])


@pytest.mark.parametrize("level", PROTECTED)
def test_the_stream_ending_inside_a_token_is_refused(pair: Pair, level: ProtectionLevel) -> None:
    sender, receiver = pair.protections(level)
    first, second = sender.seal(b"complete"), sender.seal(b"cut short")
    assert receiver.open(first + second[:-5]) == b"complete"
    assert receiver.pending == len(second) - 5
    with pytest.raises(ProtocolError, match="ended inside"):
        receiver.open(b"")


@pytest.mark.parametrize("level", PROTECTED)
def test_the_stream_ending_at_a_token_boundary_is_the_end(
    pair: Pair, level: ProtectionLevel
) -> None:
    sender, receiver = pair.protections(level)
    assert receiver.open(sender.seal(b"all")) == b"all"
    assert receiver.open(b"") == b""


def test_pending_counts_the_octets_of_an_incomplete_token(pair: Pair) -> None:
    sender, receiver = pair.protections(INTEGRITY)
    wire = sender.seal(b"some data")
    assert receiver.open(wire[:10]) == b""
    assert receiver.pending == 10
    assert receiver.open(wire[10:]) == b"some data"
    assert receiver.pending == 0


# --- datagrams --------------------------------------------------------------------------------


@pytest.mark.parametrize("level", PROTECTED)
@pytest.mark.parametrize("size", [0, 1, 512, 60000])
def test_datagram_round_trip(datagram_pair: Pair, level: ProtectionLevel, size: int) -> None:
    client, server = datagram_pair.protections(level)
    data = payload(size, size)
    datagram = client.seal_datagram(data)
    assert len(tokens_of(datagram)) == 1
    assert server.open_datagram(datagram) == data
    assert client.open_datagram(server.seal_datagram(data[::-1])) == data[::-1]


def test_datagrams_may_arrive_out_of_order_but_not_twice(datagram_pair: Pair) -> None:
    client, server = datagram_pair.protections(INTEGRITY)
    first, second = client.seal_datagram(b"first"), client.seal_datagram(b"second")
    assert server.open_datagram(second) == b"second"
    assert server.open_datagram(first) == b"first"
    with pytest.raises(ProtocolError, match="does not verify"):
        server.open_datagram(first)


def test_a_datagram_too_long_for_one_token_is_not_sealed(datagram_pair: Pair) -> None:
    client, _ = datagram_pair.protections(CONFIDENTIALITY)
    client.seal_datagram(bytes(client.max_plaintext))
    with pytest.raises(LocalProtocolError, match="too long"):
        client.seal_datagram(bytes(client.max_plaintext + 1))


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda wire: wire + b"\x00", id="trailing-octet"),
        pytest.param(lambda wire: wire + wire, id="two-tokens"),
        pytest.param(lambda wire: wire[:-1], id="truncated-token"),
        pytest.param(lambda wire: wire[:3], id="truncated-header"),
        pytest.param(lambda wire: b"", id="empty"),
        pytest.param(lambda wire: b"\x01\x01" + wire[2:], id="mtyp-1"),
        pytest.param(lambda wire: b"\x01\xff", id="abort"),
        pytest.param(lambda wire: flip(wire, len(wire) // 2), id="tampered"),
    ],
)
def test_a_datagram_that_is_not_exactly_one_good_token_is_refused(
    datagram_pair: Pair, mangle: Callable[[bytes], bytes]
) -> None:
    client, server = datagram_pair.protections(INTEGRITY)
    wire = client.seal_datagram(b"a datagram")
    with pytest.raises(ProtocolError):
        server.open_datagram(mangle(wire))


# --- the protection-level message -----------------------------------------------------------------


@pytest.mark.parametrize("level", list(ProtectionLevel))
def test_a_wrapped_level_is_read(pair: Pair, level: ProtectionLevel) -> None:
    token = client_level_token(pair.initiator, level, unwrapped=False)
    assert len(token) > 1
    for accept_unwrapped in (False, True):
        assert pair.acceptor.read_level(token, accept_unwrapped=accept_unwrapped) == (level, False)
        token = client_level_token(pair.initiator, level, unwrapped=False)  # no replay


@pytest.mark.parametrize("level", [CLEAR, INTEGRITY, CONFIDENTIALITY])
def test_the_answer_is_wrapped_like_the_request(pair: Pair, level: ProtectionLevel) -> None:
    wrapped = pair.acceptor.level_token(level, unwrapped=False)
    assert len(wrapped) > 1
    assert client_read_level(pair.initiator, wrapped, unwrapped=False) == level
    unwrapped = pair.acceptor.level_token(level, unwrapped=True)
    assert unwrapped == bytes([level])
    assert client_read_level(pair.initiator, unwrapped, unwrapped=True) == level


@pytest.mark.parametrize("level", [INTEGRITY, CONFIDENTIALITY])
def test_an_unwrapped_level_is_read_only_when_allowed(pair: Pair, level: ProtectionLevel) -> None:
    token = client_level_token(pair.initiator, level, unwrapped=True)
    assert token == bytes([level])
    assert pair.acceptor.read_level(token, accept_unwrapped=True) == (level, True)
    with pytest.raises(AuthFailed, match="unwrapped"):
        pair.acceptor.read_level(token, accept_unwrapped=False)


def test_the_client_refuses_an_unwrapped_answer_it_did_not_ask_for(pair: Pair) -> None:
    with pytest.raises(AuthFailed, match="unwrapped"):
        client_read_level(pair.initiator, b"\x02", unwrapped=False)


@pytest.mark.parametrize(
    ("octets", "complaint"),
    [
        (b"", "0 octets, not 1"),
        (b"\x01\x02", "2 octets, not 1"),
        (b"\x02\x00\x00\x00", "4 octets, not 1"),
        (b"\x04", "unknown protection level 0x04"),
        (b"\xff", "unknown protection level 0xff"),
    ],
)
@pytest.mark.parametrize("accept_unwrapped", [False, True])
def test_a_wrapped_level_of_the_wrong_length_or_value_is_refused(
    pair: Pair, octets: bytes, complaint: str, accept_unwrapped: bool
) -> None:
    token = pair.initiator.wrap(octets, False).message
    with pytest.raises(AuthFailed, match=complaint):
        pair.acceptor.read_level(token, accept_unwrapped=accept_unwrapped)


def test_an_unwrapped_unknown_level_is_refused(pair: Pair) -> None:
    with pytest.raises(AuthFailed, match="unknown protection level 0x07"):
        pair.acceptor.read_level(b"\x07", accept_unwrapped=True)


@pytest.mark.parametrize(
    "token", [b"", b"\x00\x01", b"garbage level token", bytes(64)], ids=["empty", "2", "text", "0s"]
)
def test_a_level_token_that_does_not_unwrap_is_refused(pair: Pair, token: bytes) -> None:
    with pytest.raises(AuthFailed, match="does not unwrap"):
        pair.acceptor.read_level(token, accept_unwrapped=True)


def test_a_tampered_level_token_is_refused(pair: Pair) -> None:
    token = client_level_token(pair.initiator, CONFIDENTIALITY, unwrapped=False)
    with pytest.raises(AuthFailed, match="does not unwrap"):
        pair.acceptor.read_level(flip(token, len(token) - 1), accept_unwrapped=False)
