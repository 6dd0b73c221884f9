"""`socks5d.names`: the canonical form of a destination name, and what is no host name.

The canonical form must be what the resolver itself makes of the name: the property tests
check that the system's own IDNA mapping leaves a canonical name as it is, so rules, resolver
and log can never see two different names.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks5d.errors import HostUnreachable
from socks5d.names import BadDestinationName, canonical_destination, canonical_name, escape_octets
from socks5d.proto import Address, DomainName, Reply


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", "localhost"),  # fullwidth
        ("local\u00adhost", "localhost"),  # soft hyphen: mapped to nothing
        ("localhost\u200b", "localhost"),  # zero width space: mapped to nothing
        ("\u2113ocalhost", "localhost"),  # U+2113 script small l: NFKC
        ("L\uff2fCALHOST", "localhost"),
        ("b\u00fccher.example", "xn--bcher-kva.example"),  # A-label
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a\u3002b", "a.b"),  # ideographic full stop separates labels, as in IDNA
        ("\uff11\uff12\uff17.0.0.1", "127.0.0.1"),
        ("2130706433", "2130706433"),  # numbers stay names: the resolver reads them
        ("0x7f.1", "0x7f.1"),
        ("_sip._tcp.example.com", "_sip._tcp.example.com"),
        ("x" * 63 + ".com", "x" * 63 + ".com"),
    ],
)
def test_canonical_form(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "127.0.0.1\x00.example.com",  # NUL: getaddrinfo would stop there
        "example.com\n",
        "exa\x1bmple.com",
        "exa mple.com",
        "a..b",
        ".example.com",
        "example.com..",
        "",
        ".",
        "x" * 64 + ".com",
        ".".join(["a" * 63] * 4),  # 255 characters
        "\udcff.example.com",  # an octet that is no UTF-8 (surrogate-escaped by the decoder)
        "example\u0000com",
        "ex/ample.com",
        "[::1]",
    ],
)
def test_no_host_name_is_a_bad_destination_name_replied_host_unreachable(raw: str) -> None:
    with pytest.raises(BadDestinationName) as caught:
        canonical_name(raw)
    assert isinstance(caught.value, HostUnreachable)
    assert caught.value.reply == Reply.HOST_UNREACHABLE
    assert str(caught.value) == "bad destination name"
    assert caught.value.why


def test_canonical_destination_keeps_addresses_and_canonical_names_as_they_are() -> None:
    ip = Address.from_host("127.0.0.1", 80)
    name = Address(DomainName("example.com"), 443)
    assert canonical_destination(ip) is ip
    assert canonical_destination(name) is name
    assert canonical_destination(Address(DomainName("EXAMPLE.com."), 443)) == name


def test_escape_octets_writes_every_octet_outside_printable_ascii_as_hex() -> None:
    assert escape_octets("127.0.0.1\x00.example.com") == "127.0.0.1\\x00.example.com"
    assert escape_octets('a "b"\\') == "a\\x20\\x22b\\x22\\x5c"
    assert escape_octets("\udcff") == "\\xff"
    assert escape_octets("\u200b") == "\\xe2\\x80\\x8b"


#: Names as octets off the wire, decoded the way the protocol decoder does.
wire_names = st.binary(min_size=1, max_size=255).map(
    lambda octets: octets.decode("utf-8", "surrogateescape")
)
unicode_names = st.text(min_size=1, max_size=80)


@given(st.one_of(wire_names, unicode_names))
def test_a_name_is_canonical_or_refused_and_canonical_names_are_fixed_points(raw: str) -> None:
    try:
        name = canonical_name(raw)
    except BadDestinationName:
        return
    assert name.isascii() and name == name.lower() and len(name) <= 253
    assert "\x00" not in name and not name.endswith(".")
    assert canonical_name(name) == name
    # the resolver's own mapping (the IDNA codec CPython and uvloop apply) changes nothing more
    assert name.encode("idna").decode("ascii") == name
    assert escape_octets(name) == name
