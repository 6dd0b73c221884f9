"""Addresses of RFC 1928 §5: ATYP + DST.ADDR/BND.ADDR + port, encoded and decoded.

IPv4, IPv6 and domain-name addresses are distinct types; `Address.host` is an
`ipaddress.IPv4Address`, an `ipaddress.IPv6Address` or a `DomainName`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from socks5d.constants import AddressType
from socks5d.errors import AddressTypeNotSupported, LocalProtocolError, ProtocolError
from socks5d.proto.buffer import Cursor


class DomainName(str):
    """A fully-qualified domain name, resolved by whoever receives it (ATYP X'03')."""

    __slots__ = ()


Host = ipaddress.IPv4Address | ipaddress.IPv6Address | DomainName

#: RFC 1928 §5: "the first octet of the address field contains the number of octets of name
#: that follow" - so a name is at most 255 octets.
MAX_DOMAIN_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Address:
    """A host and a port: DST.ADDR/DST.PORT or BND.ADDR/BND.PORT."""

    host: Host
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise LocalProtocolError(f"port out of range: {self.port}")

    @classmethod
    def from_host(cls, host: str, port: int) -> Address:
        """Build an address from text: an IP literal (IPv6 without brackets) or a domain name."""
        try:
            return cls(ipaddress.ip_address(host), port)
        except ValueError:
            return cls(DomainName(host), port)

    @classmethod
    def unspecified(cls) -> Address:
        """0.0.0.0:0, the address of a failure reply."""
        return cls(ipaddress.IPv4Address(0), 0)

    @property
    def type(self) -> AddressType:
        """The ATYP of this address."""
        if isinstance(self.host, ipaddress.IPv4Address):
            return AddressType.IPV4
        if isinstance(self.host, ipaddress.IPv6Address):
            return AddressType.IPV6
        return AddressType.DOMAIN_NAME

    def __str__(self) -> str:
        if isinstance(self.host, ipaddress.IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def encode_host(host: Host) -> bytes:
    """ATYP and address octets of RFC 1928 §5, without the port."""
    if isinstance(host, ipaddress.IPv4Address):
        return bytes([AddressType.IPV4]) + host.packed
    if isinstance(host, ipaddress.IPv6Address):
        return bytes([AddressType.IPV6]) + host.packed
    name = host.encode("utf-8", "surrogateescape")
    if not 1 <= len(name) <= MAX_DOMAIN_LENGTH:
        raise LocalProtocolError(f"domain name must be 1..255 octets, got {len(name)}")
    return bytes([AddressType.DOMAIN_NAME, len(name)]) + name


def encode_address(address: Address) -> bytes:
    """ATYP, address and port ("in network octet order") of RFC 1928 §4/§6."""
    return encode_host(address.host) + address.port.to_bytes(2, "big")


def decode_host(cursor: Cursor) -> Host:
    """Read ATYP and the address that follows it."""
    address_type = cursor.byte()
    if address_type == AddressType.IPV4:
        return ipaddress.IPv4Address(cursor.take(4))
    if address_type == AddressType.IPV6:
        return ipaddress.IPv6Address(cursor.take(16))
    if address_type == AddressType.DOMAIN_NAME:
        length = cursor.byte()
        if length == 0:
            raise ProtocolError("empty domain name")
        # Names are octets on the wire; surrogateescape keeps any byte and round-trips.
        return DomainName(cursor.take(length).decode("utf-8", "surrogateescape"))
    raise AddressTypeNotSupported(f"unknown address type {address_type:#04x}")


def decode_address(cursor: Cursor) -> Address:
    """Read ATYP, address and port."""
    host = decode_host(cursor)
    return Address(host, cursor.uint16())
