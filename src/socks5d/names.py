"""Destination names (ATYP X'03') in their one canonical form: what rules match, the resolver
resolves and the access log records (pure: no I/O).

RFC 1928 §5 leaves the octets of a DST.ADDR name to the client: "X'03' the address field
contains a fully-qualified domain name". The system resolver does not take them as they come:
`getaddrinfo` stops at the first NUL octet, and Python's resolver (CPython's and uvloop's alike)
first maps a non-ASCII name with IDNA (RFC 3490 ToASCII with nameprep, RFC 3491: NFKC
compatibility mapping, case folding, and "commonly mapped to nothing" characters such as
U+00AD SOFT HYPHEN and U+200B ZERO WIDTH SPACE removed). A rule that compared the raw octets
would judge a name other than the one connected to: `127.0.0.1\\x00.example.com` would pass as a
subdomain of `example.com`, a fullwidth `localhost` (U+FF4C...) would slip past a block of
`localhost`.

So a name is canonicalised once, where it enters (the request of every command and protocol,
and each UDP datagram), with the very mapping the resolver applies, to its ASCII (A-label) form:
lower case, one trailing dot removed. The resolver is then handed that canonical ASCII name, on
which its own mapping does nothing more. A name that is not a host name after the mapping is
refused with X'04' before any lookup.
"""

from __future__ import annotations

import re

from socks5d.errors import HostUnreachable
from socks5d.proto.address import Address, DomainName

#: RFC 1035 §2.3.4: "labels 63 octets or less"; "names 255 octets or less" on the wire, which
#: is 253 characters in dotted text without the trailing dot.
MAX_LABEL = 63
MAX_NAME = 253

#: A host name in canonical form: labels of letters, digits, hyphens (RFC 1123 §2.1) and the
#: underscore found in real DNS names, 1 to 63 octets each, separated by single dots.
_CANONICAL = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")


class BadDestinationName(HostUnreachable):
    """DST.ADDR is not a host name (X'04': no host of that name can be reached)."""

    def __init__(self, why: str) -> None:
        super().__init__("bad destination name")
        #: what is wrong with it, for debug logs
        self.why = why


def canonical_name(name: str) -> str:
    """The canonical form of a destination name: IDNA-mapped to ASCII, lower case, without one
    trailing dot.

    Args:
        name: the name as decoded from the wire (UTF-8 with surrogate escapes) or written in a
            rule.

    Raises:
        BadDestinationName: a NUL or other control character, an empty label, a label over 63
            octets, a name over 253, or characters the IDNA mapping refuses.
    """
    if name.isascii():
        # ToASCII leaves an all-ASCII label as it is (RFC 3490 §4.1 step 3 applies only to
        # non-ASCII labels); only the case is folded, as DNS compares without case.
        text = name.lower()
    else:
        try:
            # The codec CPython's socket module and uvloop apply before getaddrinfo.
            text = name.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise BadDestinationName(f"not a name IDNA can map: {exc}") from None
    if text.endswith("."):
        text = text[:-1]
    if len(text) > MAX_NAME:
        raise BadDestinationName(f"{len(text)} characters, at most {MAX_NAME}")
    if _CANONICAL.fullmatch(text) is None:
        raise BadDestinationName(_fault(text))
    return text


def _fault(text: str) -> str:
    """Why `text` is not a canonical host name (for the log)."""
    for label in text.split("."):
        if not label:
            return "an empty label"
        if len(label) > MAX_LABEL:
            return f"a label of {len(label)} octets, at most {MAX_LABEL}"
    return "a character that is not a letter, digit, hyphen or underscore"


def escape_octets(name: str) -> str:
    """`name`'s octets as printable ASCII: `\\xNN` for anything but printable ASCII other than
    space, quote and backslash (for the log, where the raw name must not act on a terminal).
    """
    data = name.encode("utf-8", "surrogateescape")
    return "".join(
        chr(octet) if 0x21 <= octet <= 0x7E and octet not in b'"\\' else f"\\x{octet:02x}"
        for octet in data
    )


def canonical_destination(destination: Address) -> Address:
    """`destination` with its name in canonical form (`canonical_name`); an IP address, or a
    name already canonical, is returned as it is.

    Raises:
        BadDestinationName: as `canonical_name`.
    """
    host = destination.host
    if not isinstance(host, DomainName):
        return destination
    name = canonical_name(host)
    if name == host:
        return destination
    return Address(DomainName(name), destination.port)
