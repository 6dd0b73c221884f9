"""Wire fixtures from the RFCs, each paired with the event it decodes to.

The bytes are written out as the RFC diagrams lay them out (hex, in field order), not built
from `socks5d.constants`: a fixture derived from the code under test would agree with
any mistake in it.

RFC 1928 (SOCKS5), RFC 1929 (username/password), RFC 1961 (GSS-API framing only),
SOCKS4.protocol.txt and SOCKS4A.protocol.txt. Every table is a list of `Vector`s; tests
parametrize over the tables and use `Vector.name` as the test id.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from socks5d.proto import (
    Address,
    AuthMethod,
    AuthResult,
    Command,
    CommandReply,
    CommandRequest,
    DomainName,
    Greeting,
    GssapiMessageType,
    GssapiToken,
    MethodSelected,
    Reply,
    Socks4Reply,
    Socks4Request,
    Socks4Response,
    UdpDatagram,
    UserPassAuth,
)


class Vector(NamedTuple):
    """One fixture: its name (the test id), its wire bytes and the event they carry."""

    name: str
    data: bytes
    event: Any


def vector_id(vector: Vector) -> str:
    """`ids=` callback for `pytest.mark.parametrize` over a table of vectors."""
    return vector.name


IPV4 = ipaddress.IPv4Address("192.0.2.1")  # RFC 5737 TEST-NET-1
IPV4_BOUND = ipaddress.IPv4Address("198.51.100.7")  # RFC 5737 TEST-NET-2
IPV6 = ipaddress.IPv6Address("2001:db8::1")  # RFC 3849 documentation prefix
IPV4_UNSPECIFIED = ipaddress.IPv4Address("0.0.0.0")
EXAMPLE = DomainName("example.com")
#: The longest name ATYP X'03' can carry: "the first octet ... contains the number of octets".
LONGEST_NAME = DomainName("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 63)

# Address fields (ATYP, ADDR, PORT) shared by requests, replies and UDP headers.
ATYP_IPV4_192_0_2_1_PORT_80 = bytes.fromhex("01 c0000201 0050")
ATYP_IPV6_2001_DB8__1_PORT_443 = bytes.fromhex("04 20010db8000000000000000000000001 01bb")
ATYP_DOMAIN_EXAMPLE_COM_PORT_80 = bytes.fromhex("03 0b") + b"example.com" + bytes.fromhex("0050")
ATYP_IPV4_UNSPECIFIED_PORT_0 = bytes.fromhex("01 00000000 0000")
ATYP_IPV4_198_51_100_7_PORT_1080 = bytes.fromhex("01 c6336407 0438")

# --- RFC 1928 §3: VER, NMETHODS, METHODS -------------------------------------------------------

GREETING_NOAUTH = bytes([0x05, 0x01, 0x00])
GREETING_GSSAPI = bytes([0x05, 0x01, 0x01])
GREETING_USERPASS = bytes([0x05, 0x01, 0x02])
GREETING_NOAUTH_USERPASS = bytes([0x05, 0x02, 0x00, 0x02])
GREETING_ALL_STANDARD = bytes([0x05, 0x03, 0x00, 0x01, 0x02])
#: "X'80' to X'FE' RESERVED FOR PRIVATE METHODS": any octet may be offered.
GREETING_PRIVATE_METHOD = bytes([0x05, 0x01, 0x80])
#: NMETHODS is "1 to 255"; 255 methods is the largest greeting.
GREETING_255_METHODS = bytes([0x05, 0xFF, *range(255)])

GREETINGS = [
    Vector("GREETING_NOAUTH", GREETING_NOAUTH, Greeting(methods=(0x00,))),
    Vector("GREETING_GSSAPI", GREETING_GSSAPI, Greeting(methods=(0x01,))),
    Vector("GREETING_USERPASS", GREETING_USERPASS, Greeting(methods=(0x02,))),
    Vector("GREETING_NOAUTH_USERPASS", GREETING_NOAUTH_USERPASS, Greeting(methods=(0x00, 0x02))),
    Vector("GREETING_ALL_STANDARD", GREETING_ALL_STANDARD, Greeting(methods=(0x00, 0x01, 0x02))),
    Vector("GREETING_PRIVATE_METHOD", GREETING_PRIVATE_METHOD, Greeting(methods=(0x80,))),
    Vector("GREETING_255_METHODS", GREETING_255_METHODS, Greeting(methods=tuple(range(255)))),
]

#: NMETHODS X'00': outside "1 to 255"; decoded (the server answers X'FF'), never encoded.
GREETING_NO_METHODS = bytes([0x05, 0x00])

# --- RFC 1928 §3: VER, METHOD ------------------------------------------------------------------

METHOD_NOAUTH = bytes([0x05, 0x00])
METHOD_GSSAPI = bytes([0x05, 0x01])
METHOD_USERPASS = bytes([0x05, 0x02])
METHOD_NO_ACCEPTABLE = bytes([0x05, 0xFF])

METHOD_SELECTIONS = [
    Vector("METHOD_NOAUTH", METHOD_NOAUTH, MethodSelected(AuthMethod.NO_AUTHENTICATION_REQUIRED)),
    Vector("METHOD_GSSAPI", METHOD_GSSAPI, MethodSelected(AuthMethod.GSSAPI)),
    Vector("METHOD_USERPASS", METHOD_USERPASS, MethodSelected(AuthMethod.USERNAME_PASSWORD)),
    Vector(
        "METHOD_NO_ACCEPTABLE",
        METHOD_NO_ACCEPTABLE,
        MethodSelected(AuthMethod.NO_ACCEPTABLE_METHODS),
    ),
]

# --- RFC 1928 §4: VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT --------------------------------------

REQUEST_CONNECT_IPV4 = bytes([0x05, 0x01, 0x00]) + ATYP_IPV4_192_0_2_1_PORT_80
REQUEST_CONNECT_IPV6 = bytes([0x05, 0x01, 0x00]) + ATYP_IPV6_2001_DB8__1_PORT_443
REQUEST_CONNECT_DOMAIN = bytes([0x05, 0x01, 0x00]) + ATYP_DOMAIN_EXAMPLE_COM_PORT_80
REQUEST_CONNECT_LONGEST_DOMAIN = (
    bytes([0x05, 0x01, 0x00, 0x03, 0xFF]) + LONGEST_NAME.encode() + bytes.fromhex("ffff")
)
REQUEST_BIND_IPV4 = bytes([0x05, 0x02, 0x00]) + ATYP_IPV4_192_0_2_1_PORT_80
REQUEST_BIND_DOMAIN = bytes([0x05, 0x02, 0x00]) + ATYP_DOMAIN_EXAMPLE_COM_PORT_80
#: §6: "the client MUST use a port number and address of all zeros" when it does not know them.
REQUEST_UDP_ASSOCIATE_UNSPECIFIED = bytes([0x05, 0x03, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
REQUEST_UDP_ASSOCIATE_IPV6 = bytes([0x05, 0x03, 0x00]) + ATYP_IPV6_2001_DB8__1_PORT_443

REQUESTS = [
    Vector(
        "REQUEST_CONNECT_IPV4",
        REQUEST_CONNECT_IPV4,
        CommandRequest(Command.CONNECT, Address(IPV4, 80)),
    ),
    Vector(
        "REQUEST_CONNECT_IPV6",
        REQUEST_CONNECT_IPV6,
        CommandRequest(Command.CONNECT, Address(IPV6, 443)),
    ),
    Vector(
        "REQUEST_CONNECT_DOMAIN",
        REQUEST_CONNECT_DOMAIN,
        CommandRequest(Command.CONNECT, Address(EXAMPLE, 80)),
    ),
    Vector(
        "REQUEST_CONNECT_LONGEST_DOMAIN",
        REQUEST_CONNECT_LONGEST_DOMAIN,
        CommandRequest(Command.CONNECT, Address(LONGEST_NAME, 0xFFFF)),
    ),
    Vector(
        "REQUEST_BIND_IPV4",
        REQUEST_BIND_IPV4,
        CommandRequest(Command.BIND, Address(IPV4, 80)),
    ),
    Vector(
        "REQUEST_BIND_DOMAIN",
        REQUEST_BIND_DOMAIN,
        CommandRequest(Command.BIND, Address(EXAMPLE, 80)),
    ),
    Vector(
        "REQUEST_UDP_ASSOCIATE_UNSPECIFIED",
        REQUEST_UDP_ASSOCIATE_UNSPECIFIED,
        CommandRequest(Command.UDP_ASSOCIATE, Address(IPV4_UNSPECIFIED, 0)),
    ),
    Vector(
        "REQUEST_UDP_ASSOCIATE_IPV6",
        REQUEST_UDP_ASSOCIATE_IPV6,
        CommandRequest(Command.UDP_ASSOCIATE, Address(IPV6, 443)),
    ),
]

# --- RFC 1928 §6: VER, REP, RSV, ATYP, BND.ADDR, BND.PORT --------------------------------------

REPLY_SUCCEEDED = bytes([0x05, 0x00, 0x00]) + ATYP_IPV4_198_51_100_7_PORT_1080
REPLY_SUCCEEDED_IPV6 = bytes([0x05, 0x00, 0x00]) + ATYP_IPV6_2001_DB8__1_PORT_443
REPLY_SUCCEEDED_DOMAIN = bytes([0x05, 0x00, 0x00]) + ATYP_DOMAIN_EXAMPLE_COM_PORT_80
#: BIND's second reply: "BND.PORT and BND.ADDR contain the address and port number of the
#: connecting host".
REPLY_SUCCEEDED_PEER = bytes([0x05, 0x00, 0x00]) + ATYP_IPV4_192_0_2_1_PORT_80
REPLY_GENERAL_FAILURE = bytes([0x05, 0x01, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
REPLY_CONNECTION_NOT_ALLOWED = bytes([0x05, 0x02, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
REPLY_NETWORK_UNREACHABLE = bytes([0x05, 0x03, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
REPLY_HOST_UNREACHABLE = bytes([0x05, 0x04, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
REPLY_CONNECTION_REFUSED = bytes([0x05, 0x05, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
REPLY_TTL_EXPIRED = bytes([0x05, 0x06, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
REPLY_COMMAND_NOT_SUPPORTED = bytes([0x05, 0x07, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
REPLY_ADDRESS_TYPE_NOT_SUPPORTED = bytes([0x05, 0x08, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0

UNSPECIFIED = Address(IPV4_UNSPECIFIED, 0)

#: The failure replies X'01'..X'08', one per REP.
FAILURE_REPLIES = [
    Vector(
        "REPLY_GENERAL_FAILURE",
        REPLY_GENERAL_FAILURE,
        CommandReply(Reply.GENERAL_FAILURE, UNSPECIFIED),
    ),
    Vector(
        "REPLY_CONNECTION_NOT_ALLOWED",
        REPLY_CONNECTION_NOT_ALLOWED,
        CommandReply(Reply.CONNECTION_NOT_ALLOWED, UNSPECIFIED),
    ),
    Vector(
        "REPLY_NETWORK_UNREACHABLE",
        REPLY_NETWORK_UNREACHABLE,
        CommandReply(Reply.NETWORK_UNREACHABLE, UNSPECIFIED),
    ),
    Vector(
        "REPLY_HOST_UNREACHABLE",
        REPLY_HOST_UNREACHABLE,
        CommandReply(Reply.HOST_UNREACHABLE, UNSPECIFIED),
    ),
    Vector(
        "REPLY_CONNECTION_REFUSED",
        REPLY_CONNECTION_REFUSED,
        CommandReply(Reply.CONNECTION_REFUSED, UNSPECIFIED),
    ),
    Vector(
        "REPLY_TTL_EXPIRED",
        REPLY_TTL_EXPIRED,
        CommandReply(Reply.TTL_EXPIRED, UNSPECIFIED),
    ),
    Vector(
        "REPLY_COMMAND_NOT_SUPPORTED",
        REPLY_COMMAND_NOT_SUPPORTED,
        CommandReply(Reply.COMMAND_NOT_SUPPORTED, UNSPECIFIED),
    ),
    Vector(
        "REPLY_ADDRESS_TYPE_NOT_SUPPORTED",
        REPLY_ADDRESS_TYPE_NOT_SUPPORTED,
        CommandReply(Reply.ADDRESS_TYPE_NOT_SUPPORTED, UNSPECIFIED),
    ),
]

REPLIES = [
    Vector(
        "REPLY_SUCCEEDED",
        REPLY_SUCCEEDED,
        CommandReply(Reply.SUCCEEDED, Address(IPV4_BOUND, 1080)),
    ),
    Vector(
        "REPLY_SUCCEEDED_IPV6",
        REPLY_SUCCEEDED_IPV6,
        CommandReply(Reply.SUCCEEDED, Address(IPV6, 443)),
    ),
    Vector(
        "REPLY_SUCCEEDED_DOMAIN",
        REPLY_SUCCEEDED_DOMAIN,
        CommandReply(Reply.SUCCEEDED, Address(EXAMPLE, 80)),
    ),
    Vector(
        "REPLY_SUCCEEDED_PEER",
        REPLY_SUCCEEDED_PEER,
        CommandReply(Reply.SUCCEEDED, Address(IPV4, 80)),
    ),
    *FAILURE_REPLIES,
]

# --- RFC 1929 §2: VER, ULEN, UNAME, PLEN, PASSWD / VER, STATUS ---------------------------------

USERPASS_ALICE = bytes([0x01, 0x05]) + b"alice" + bytes([0x06]) + b"s3cret"
#: A zero PLEN is outside "1 to 255" but some clients send it; it is read, then fails auth.
USERPASS_EMPTY_PASSWORD = bytes([0x01, 0x05]) + b"alice" + bytes([0x00])
#: UNAME and PASSWD are octets; non-ASCII names travel as UTF-8 ("jürgen" is 7 octets).
USERPASS_UTF8 = bytes([0x01, 0x07]) + "jürgen".encode() + bytes([0x05]) + "päss".encode()
USERPASS_LONGEST = bytes([0x01, 0xFF]) + b"u" * 255 + bytes([0xFF]) + b"p" * 255

USERPASS_REQUESTS = [
    Vector("USERPASS_ALICE", USERPASS_ALICE, UserPassAuth("alice", "s3cret")),
    Vector("USERPASS_EMPTY_PASSWORD", USERPASS_EMPTY_PASSWORD, UserPassAuth("alice", "")),
    Vector("USERPASS_UTF8", USERPASS_UTF8, UserPassAuth("jürgen", "päss")),
    Vector("USERPASS_LONGEST", USERPASS_LONGEST, UserPassAuth("u" * 255, "p" * 255)),
]

#: "A STATUS field of X'00' indicates success."
AUTH_SUCCESS = bytes([0x01, 0x00])
#: "If the server returns a `failure' (STATUS value other than X'00') status ..."
AUTH_FAILURE = bytes([0x01, 0x01])
AUTH_FAILURE_OTHER_STATUS = bytes([0x01, 0xFF])

AUTH_RESULTS = [
    Vector("AUTH_SUCCESS", AUTH_SUCCESS, AuthResult(0x00)),
    Vector("AUTH_FAILURE", AUTH_FAILURE, AuthResult(0x01)),
    Vector("AUTH_FAILURE_OTHER_STATUS", AUTH_FAILURE_OTHER_STATUS, AuthResult(0xFF)),
]

# --- RFC 1961: ver, mtyp, len (2 octets, network order), token; abort is ver, 0xff -------------

GSSAPI_AUTHENTICATION = bytes([0x01, 0x01, 0x00, 0x05]) + b"token"
GSSAPI_EMPTY_TOKEN = bytes([0x01, 0x01, 0x00, 0x00])
GSSAPI_PROTECTION_LEVEL = bytes([0x01, 0x02, 0x00, 0x01, 0x01])
GSSAPI_ENCAPSULATION = bytes([0x01, 0x03, 0x01, 0x00]) + bytes(range(256))
GSSAPI_LONGEST_TOKEN = bytes([0x01, 0x01, 0xFF, 0xFF]) + b"\xa5" * 0xFFFF
GSSAPI_ABORT = bytes([0x01, 0xFF])

GSSAPI_MESSAGES = [
    Vector(
        "GSSAPI_AUTHENTICATION",
        GSSAPI_AUTHENTICATION,
        GssapiToken(GssapiMessageType.AUTHENTICATION, b"token"),
    ),
    Vector(
        "GSSAPI_EMPTY_TOKEN",
        GSSAPI_EMPTY_TOKEN,
        GssapiToken(GssapiMessageType.AUTHENTICATION, b""),
    ),
    Vector(
        "GSSAPI_PROTECTION_LEVEL",
        GSSAPI_PROTECTION_LEVEL,
        GssapiToken(GssapiMessageType.PROTECTION_LEVEL, b"\x01"),
    ),
    Vector(
        "GSSAPI_ENCAPSULATION",
        GSSAPI_ENCAPSULATION,
        GssapiToken(GssapiMessageType.ENCAPSULATION, bytes(range(256))),
    ),
    Vector(
        "GSSAPI_LONGEST_TOKEN",
        GSSAPI_LONGEST_TOKEN,
        GssapiToken(GssapiMessageType.AUTHENTICATION, b"\xa5" * 0xFFFF),
    ),
    Vector("GSSAPI_ABORT", GSSAPI_ABORT, GssapiToken(GssapiMessageType.ABORT)),
]

# --- SOCKS4: VN, CD, DSTPORT, DSTIP, USERID, NULL [SOCKS4a: HOST, NULL] ------------------------

#: The classic example: user "Fred" connecting to 66.102.7.99:80.
SOCKS4_CONNECT = bytes.fromhex("04 01 0050 42660763") + b"Fred" + b"\x00"
SOCKS4_CONNECT_NO_USERID = bytes.fromhex("04 01 01bb c0000201") + b"\x00"
#: BIND carries "the IP address of the application server, the destination port used in the
#: primary connection, and the userid".
SOCKS4_BIND = bytes.fromhex("04 02 0015 c0000201") + b"Fred" + b"\x00"
#: SOCKS4a: DSTIP 0.0.0.x with x non-zero, then the name after USERID's NULL.
SOCKS4A_CONNECT = bytes.fromhex("04 01 0050 00000001") + b"Fred\x00" + b"example.com\x00"
SOCKS4A_CONNECT_MARKER_255 = bytes.fromhex("04 01 0050 000000ff") + b"\x00" + b"example.com\x00"
SOCKS4A_BIND = bytes.fromhex("04 02 0015 00000001") + b"\x00" + b"example.com\x00"

FRED = b"Fred"
SOCKS4_REQUESTS = [
    Vector(
        "SOCKS4_CONNECT",
        SOCKS4_CONNECT,
        Socks4Request(Command.CONNECT, Address(ipaddress.IPv4Address("66.102.7.99"), 80), FRED),
    ),
    Vector(
        "SOCKS4_CONNECT_NO_USERID",
        SOCKS4_CONNECT_NO_USERID,
        Socks4Request(Command.CONNECT, Address(IPV4, 443), b""),
    ),
    Vector(
        "SOCKS4_BIND",
        SOCKS4_BIND,
        Socks4Request(Command.BIND, Address(IPV4, 21), FRED),
    ),
    Vector(
        "SOCKS4A_CONNECT",
        SOCKS4A_CONNECT,
        Socks4Request(Command.CONNECT, Address(EXAMPLE, 80), FRED),
    ),
    Vector(
        "SOCKS4A_BIND",
        SOCKS4A_BIND,
        Socks4Request(Command.BIND, Address(EXAMPLE, 21), b""),
    ),
]

#: Any non-zero last octet marks SOCKS4a; our encoder always writes 0.0.0.1, so decode only.
SOCKS4A_DECODE_ONLY = [
    Vector(
        "SOCKS4A_CONNECT_MARKER_255",
        SOCKS4A_CONNECT_MARKER_255,
        Socks4Request(Command.CONNECT, Address(EXAMPLE, 80), b""),
    ),
]

# --- SOCKS4 reply: VN (0), CD, DSTPORT, DSTIP ---------------------------------------------------

SOCKS4_GRANTED = bytes.fromhex("00 5a 0000 00000000")
SOCKS4_GRANTED_BIND = bytes.fromhex("00 5a 0438 c6336407")
SOCKS4_REJECTED = bytes.fromhex("00 5b 0000 00000000")
SOCKS4_IDENTD_UNREACHABLE = bytes.fromhex("00 5c 0000 00000000")
SOCKS4_IDENTD_MISMATCH = bytes.fromhex("00 5d 0000 00000000")

SOCKS4_RESPONSES = [
    Vector("SOCKS4_GRANTED", SOCKS4_GRANTED, Socks4Response(Socks4Reply.GRANTED, UNSPECIFIED)),
    Vector(
        "SOCKS4_GRANTED_BIND",
        SOCKS4_GRANTED_BIND,
        Socks4Response(Socks4Reply.GRANTED, Address(IPV4_BOUND, 1080)),
    ),
    Vector("SOCKS4_REJECTED", SOCKS4_REJECTED, Socks4Response(Socks4Reply.REJECTED, UNSPECIFIED)),
    Vector(
        "SOCKS4_IDENTD_UNREACHABLE",
        SOCKS4_IDENTD_UNREACHABLE,
        Socks4Response(Socks4Reply.IDENTD_UNREACHABLE, UNSPECIFIED),
    ),
    Vector(
        "SOCKS4_IDENTD_MISMATCH",
        SOCKS4_IDENTD_MISMATCH,
        Socks4Response(Socks4Reply.IDENTD_MISMATCH, UNSPECIFIED),
    ),
]

# --- RFC 1928 §7: RSV (2), FRAG, ATYP, DST.ADDR, DST.PORT, DATA ---------------------------------

UDP_IPV4 = bytes([0x00, 0x00, 0x00]) + ATYP_IPV4_192_0_2_1_PORT_80 + b"ping"
UDP_IPV6 = bytes([0x00, 0x00, 0x00]) + ATYP_IPV6_2001_DB8__1_PORT_443 + b"ping"
UDP_DOMAIN = bytes([0x00, 0x00, 0x00]) + ATYP_DOMAIN_EXAMPLE_COM_PORT_80 + b"ping"
UDP_EMPTY_DATA = bytes([0x00, 0x00, 0x00]) + ATYP_IPV4_192_0_2_1_PORT_80
UDP_FRAGMENT = bytes([0x00, 0x00, 0x01]) + ATYP_IPV4_192_0_2_1_PORT_80 + b"part"
#: "The high-order bit of FRAG indicates the end-of-fragment sequence".
UDP_LAST_FRAGMENT = bytes([0x00, 0x00, 0x82]) + ATYP_IPV4_192_0_2_1_PORT_80 + b"end"

UDP_DATAGRAMS = [
    Vector("UDP_IPV4", UDP_IPV4, UdpDatagram(Address(IPV4, 80), b"ping")),
    Vector("UDP_IPV6", UDP_IPV6, UdpDatagram(Address(IPV6, 443), b"ping")),
    Vector("UDP_DOMAIN", UDP_DOMAIN, UdpDatagram(Address(EXAMPLE, 80), b"ping")),
    Vector("UDP_EMPTY_DATA", UDP_EMPTY_DATA, UdpDatagram(Address(IPV4, 80), b"")),
    Vector("UDP_FRAGMENT", UDP_FRAGMENT, UdpDatagram(Address(IPV4, 80), b"part", fragment=1)),
    Vector(
        "UDP_LAST_FRAGMENT",
        UDP_LAST_FRAGMENT,
        UdpDatagram(Address(IPV4, 80), b"end", fragment=0x82),
    ),
]

# --- RFC 1928 §5: ATYP, ADDR, PORT on their own -------------------------------------------------

ADDRESSES = [
    Vector("ATYP_IPV4", ATYP_IPV4_192_0_2_1_PORT_80, Address(IPV4, 80)),
    Vector("ATYP_IPV6", ATYP_IPV6_2001_DB8__1_PORT_443, Address(IPV6, 443)),
    Vector("ATYP_DOMAIN", ATYP_DOMAIN_EXAMPLE_COM_PORT_80, Address(EXAMPLE, 80)),
    Vector("ATYP_IPV4_UNSPECIFIED", ATYP_IPV4_UNSPECIFIED_PORT_0, UNSPECIFIED),
]
