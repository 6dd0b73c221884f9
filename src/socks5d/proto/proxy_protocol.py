"""The PROXY protocol header of a load balancer, versions 1 (text) and 2 (binary).

A balancer in front of socks5d (HAProxy `send-proxy`/`send-proxy-v2`) begins every connection
with one header naming the client it relays; the server reads it before the SOCKS greeting, the
client library can send one. The quotes are from HAProxy's doc/proxy-protocol.txt.

parser = ProxyHeaderParser()
parser.receive_data(data)               # b"" at EOF
header = parser.next_event()            # ProxyHeader, or NEED_DATA; ProtocolError if invalid
rest = parser.trailing_data             # what followed the header: the SOCKS greeting
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.address import Address
from socks5d.proto.buffer import Cursor, NeedData, ReceiveBuffer
from socks5d.proto.events import NEED_DATA, _NeedData

#: "Seeing this string indicates that this is version 1 of the protocol", with the "exactly one
#: space" that follows it.
V1_PREFIX = b"PROXY "
#: "The binary header format starts with a constant 12 bytes block containing the protocol
#: signature"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: "If the CRLF sequence is not found in the first 107 characters, the receiver should declare
#: the line invalid."
MAX_V1 = 107
#: "the length of the protocol header in bytes is always exactly 16 + this value"; the longest
#: address block (AF_UNIX, "2*108 = 216 bytes") makes 232, the most we accept.
MAX_V2 = 16 + 216

#: "PP2_TYPE_UNIQUE_ID ... an opaque byte sequence of up to 128 bytes"
TLV_UNIQUE_ID = 0x05
MAX_UNIQUE_ID = 128

_LOCAL, _PROXY = 0x0, 0x1
#: The 14th byte ("transport protocol and address family") → the length of its addresses, or
#: None for the combinations we read as UNSPEC: "A receiver is not required to implement other
#: ones, provided that it automatically falls back to the UNSPEC mode for the valid
#: combinations above that it does not support." Any other value "must be rejected as invalid".
_FAMILIES: dict[int, int | None] = {
    0x00: None,  # UNSPEC
    0x11: 4,  # TCP over IPv4
    0x12: 4,  # UDP over IPv4
    0x21: 16,  # TCP over IPv6
    0x22: 16,  # UDP over IPv6
    0x31: None,  # UNIX stream: no IP address to take
    0x32: None,  # UNIX datagram
}

#: "exactly 4 integers in the range [0..255] ... Heading zeroes are not permitted"
_V1_IPV4 = re.compile(rb"(?:(?:0|[1-9][0-9]{0,2})\.){3}(?:0|[1-9][0-9]{0,2})")
#: "series of sets of 4 hexadecimal digits (upper or lower case) delimited by colons": no
#: embedded dotted quad, no zone index
_V1_IPV6 = re.compile(rb"[0-9A-Fa-f:]{2,39}")
#: "a decimal integer in the range [0..65535] inclusive. Heading zeroes are not permitted"
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One PROXY protocol header: whom the balancer relays.

    `source` is None when the header names no client address (v1 `UNKNOWN`, v2 `AF_UNSPEC`
    or `AF_UNIX`): the connection's real endpoints stand, as for no header at all.
    """

    #: 1 (text) or 2 (binary)
    version: int
    #: v2 LOCAL: "the connection was established on purpose by the proxy without being
    #: relayed", a health check
    local: bool
    #: the client's address and port, as the balancer saw them
    source: Address | None
    #: the address and port the client connected to (the balancer's)
    destination: Address | None
    #: the value of the v2 `PP2_TYPE_UNIQUE_ID` TLV, when present
    unique_id: bytes | None = None


def starts_like_header(data: bytes) -> bool:
    """True when `data` (at least one byte) is the start of a v1 or v2 header."""
    head = data[: len(V2_SIGNATURE)]
    return bool(head) and (
        V2_SIGNATURE.startswith(head) or V1_PREFIX.startswith(head[: len(V1_PREFIX)])
    )


def decode_proxy_header(cursor: Cursor) -> ProxyHeader:
    """One header, v1 or v2 by its first bytes; raises `NeedData` until it is complete.

    "A receiver may be configured to support both version 1 and version 2 of the protocol.
    ... otherwise the protocol is not covered by this specification and the connection must
    be dropped." A wrong byte is rejected as soon as it arrives: "It is recommended to abort
    the connection as soon as possible".

    Raises:
        ProtocolError: not a header, or a malformed or oversized one.
    """
    head = cursor.peek(len(V2_SIGNATURE))
    if not head:
        raise NeedData
    if V2_SIGNATURE.startswith(head):
        return _decode_v2(cursor)
    if V1_PREFIX.startswith(head[: len(V1_PREFIX)]):
        return _decode_v1(cursor)
    raise ProtocolError(f"not a PROXY protocol header: {head[:8]!r}")


def _decode_v1(cursor: Cursor) -> ProxyHeader:
    head = cursor.peek(MAX_V1)
    end = head.find(b"\r\n")
    if end < 0:
        # "The receiver must not tolerate a single CR or LF character to end the line"
        if b"\n" in head or b"\r" in head[:-1]:
            raise ProtocolError("PROXY v1 line ends with a lone CR or LF")
        if len(head) >= MAX_V1:
            raise ProtocolError(f"PROXY v1 line without CRLF in its first {MAX_V1} bytes")
        _check_v1_text(head)
        raise NeedData
    line = cursor.take(end + 2)[:-2]
    _check_v1_text(line)
    if b"\r" in line or b"\n" in line:
        raise ProtocolError("PROXY v1 line holds a lone CR or LF")
    fields = line.split(b" ")
    protocol = fields[1] if len(fields) > 1 else b""
    if protocol == b"UNKNOWN":
        # "the receiver must ignore anything presented before the CRLF is found"
        return ProxyHeader(1, local=False, source=None, destination=None)
    if protocol not in (b"TCP4", b"TCP6") or len(fields) != 6:
        raise ProtocolError(f"malformed PROXY v1 line: {line[:MAX_V1]!r}")
    pattern = _V1_IPV4 if protocol == b"TCP4" else _V1_IPV6
    source_host, destination_host, source_port, destination_port = fields[2:]
    return ProxyHeader(
        1,
        local=False,
        source=Address(_v1_host(pattern, source_host), _v1_port(source_port)),
        destination=Address(_v1_host(pattern, destination_host), _v1_port(destination_port)),
    )


def _check_v1_text(data: bytes) -> None:
    """ "one line of US-ASCII text matching exactly" the format: its prefix, then printables."""
    if not data.startswith(V1_PREFIX[: len(data)]):
        raise ProtocolError(f"not a PROXY protocol header: {data[:8]!r}")
    for octet in data:
        if not 0x20 <= octet < 0x7F and octet not in b"\r\n":
            raise ProtocolError(f"PROXY v1 line holds octet {octet:#04x}")


def _v1_host(
    pattern: re.Pattern[bytes], text: bytes
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """ "The advertised protocol family dictates what format to use.\""""
    if pattern.fullmatch(text):
        try:
            return ipaddress.ip_address(text.decode("ascii"))
        except ValueError:
            pass
    raise ProtocolError(f"bad address in PROXY v1 line: {text!r}")


def _v1_port(text: bytes) -> int:
    if _V1_PORT.fullmatch(text) and int(text) <= 0xFFFF:
        return int(text)
    raise ProtocolError(f"bad port in PROXY v1 line: {text!r}")


def _decode_v2(cursor: Cursor) -> ProxyHeader:
    cursor.take(len(V2_SIGNATURE))
    version_command = cursor.byte()
    # "it must always be sent as \x2 and the receiver must only accept this value"
    if version_command >> 4 != 2:
        raise ProtocolError(f"PROXY v2 header of version {version_command >> 4}")
    # "other values are unassigned ... Receivers must drop connections presenting unexpected
    # values here."
    command = version_command & 0x0F
    if command not in (_LOCAL, _PROXY):
        raise ProtocolError(f"PROXY v2 header with command {command:#x}")
    family = cursor.byte()
    if family not in _FAMILIES:
        raise ProtocolError(f"PROXY v2 header with family and protocol {family:#04x}")
    length = cursor.uint16()
    if 16 + length > MAX_V2:
        raise ProtocolError(f"PROXY v2 header of {16 + length} bytes (at most {MAX_V2})")
    block = cursor.take(length)
    if command == _LOCAL:
        # "must use the real connection endpoints and discard the protocol block including
        # the family which is ignored"
        return ProxyHeader(2, local=True, source=None, destination=None)
    if family == 0x00:  # "The receiver should ignore address information."
        return ProxyHeader(2, local=False, source=None, destination=None)
    size = _FAMILIES[family]
    if size is None:  # AF_UNIX: "The addresses are exactly 108 bytes each."
        _need(block, 216, family)
        return ProxyHeader(2, False, None, None, _unique_id(block[216:]))
    _need(block, 2 * size + 4, family)
    make = ipaddress.IPv4Address if size == 4 else ipaddress.IPv6Address
    ports = 2 * size
    return ProxyHeader(
        2,
        local=False,
        source=Address(make(block[:size]), int.from_bytes(block[ports : ports + 2], "big")),
        destination=Address(
            make(block[size:ports]), int.from_bytes(block[ports + 2 : ports + 4], "big")
        ),
        unique_id=_unique_id(block[ports + 4 :]),
    )


def _need(block: bytes, size: int, family: int) -> None:
    if len(block) < size:
        raise ProtocolError(
            f"PROXY v2 address block of {len(block)} bytes, family {family:#04x} needs {size}"
        )


def _unique_id(tlvs: bytes) -> bytes | None:
    """Walk the TLVs after the addresses: "A receiver may choose to skip over and ignore the
    TLVs it is not interested in"; each must fit the header, and the unique ID is kept."""
    unique_id = None
    position = 0
    while position < len(tlvs):
        if position + 3 > len(tlvs):
            raise ProtocolError("PROXY v2 TLV truncated")
        kind = tlvs[position]
        size = int.from_bytes(tlvs[position + 1 : position + 3], "big")
        value = tlvs[position + 3 : position + 3 + size]
        if len(value) != size:
            raise ProtocolError(f"PROXY v2 TLV {kind:#04x} overruns the header")
        if kind == TLV_UNIQUE_ID:
            if size > MAX_UNIQUE_ID:
                raise ProtocolError(f"PROXY v2 unique ID of {size} bytes (at most 128)")
            unique_id = value
        position += 3 + size
    return unique_id


class ProxyHeaderParser:
    """Reads one header from the front of a connection, sans I/O."""

    __slots__ = ("_buffer", "_header")

    def __init__(self) -> None:
        self._buffer = ReceiveBuffer(MAX_V2)
        self._header: ProxyHeader | None = None

    def receive_data(self, data: bytes) -> None:
        """Bytes received; `b""` at EOF."""
        self._buffer.feed(data)

    def next_event(self) -> ProxyHeader | _NeedData:
        """The header once complete, else `NEED_DATA`.

        Raises:
            ProtocolError: invalid, or the connection ended before the header did ("The
                receiver must also reject incoming connections containing partial protocol
                headers").
        """
        if self._header is None:
            self._header = self._buffer.parse(decode_proxy_header)
            if self._header is None:
                if self._buffer.eof:
                    raise ProtocolError(
                        f"connection closed after {len(self._buffer)} bytes of a PROXY header"
                    )
                return NEED_DATA
        return self._header

    @property
    def trailing_data(self) -> bytes:
        """The bytes received after the header (the SOCKS greeting), once it is complete."""
        return self._buffer.take_all() if self._header is not None else b""


def encode_v1(source: Address, destination: Address) -> bytes:
    """A v1 line naming `source` (the client) and `destination` (the address it reached)."""
    family = _family(source, destination)
    protocol = "TCP4" if family == 4 else "TCP6"
    line = f"PROXY {protocol} {source.host} {destination.host} {source.port} {destination.port}\r\n"
    return line.encode("ascii")


def encode_v2(
    source: Address | None,
    destination: Address | None,
    *,
    local: bool = False,
    unique_id: bytes | None = None,
) -> bytes:
    """A v2 header: PROXY with `source` and `destination` (AF_UNSPEC when they are None), or
    LOCAL (`local`), with a `PP2_TYPE_UNIQUE_ID` TLV when `unique_id` is given."""
    if source is None or destination is None:
        family, block = 0x00, b""
    else:
        size = _family(source, destination)
        family = 0x11 if size == 4 else 0x21
        block = (
            _packed(source)
            + _packed(destination)
            + source.port.to_bytes(2, "big")
            + destination.port.to_bytes(2, "big")
        )
    if unique_id is not None:
        if len(unique_id) > MAX_UNIQUE_ID:
            raise LocalProtocolError(f"unique ID of {len(unique_id)} bytes (at most 128)")
        block += bytes([TLV_UNIQUE_ID]) + len(unique_id).to_bytes(2, "big") + unique_id
    command = _LOCAL if local else _PROXY
    return V2_SIGNATURE + bytes([0x20 | command, family]) + len(block).to_bytes(2, "big") + block


def _family(source: Address, destination: Address) -> int:
    """4 or 16: the address size both share ("matches the same family")."""
    kinds = {type(source.host), type(destination.host)}
    if kinds == {ipaddress.IPv4Address}:
        return 4
    if kinds == {ipaddress.IPv6Address}:
        return 16
    raise LocalProtocolError(f"a PROXY header needs two IP addresses of one family: {kinds}")


def _packed(address: Address) -> bytes:
    host = address.host
    assert isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address)
    return host.packed
