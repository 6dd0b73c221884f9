"""Codec tables: every RFC vector decodes to its event (three ways) and encodes back to itself;
malformed bytes raise the error whose `reply` the server sends; encoders refuse what the wire
cannot carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from socks5d.errors import (
    AddressTypeNotSupported,
    CommandNotSupported,
    LocalProtocolError,
    ProtocolError,
)
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
    decode_address,
    decode_udp,
    encode_address,
    encode_udp,
)
from socks5d.proto.buffer import Cursor
from socks5d.proto.gssapi import decode_gssapi, encode_gssapi
from socks5d.proto.rfc1928 import (
    decode_greeting,
    decode_method_selected,
    decode_reply,
    decode_request,
    encode_greeting,
    encode_method_selected,
    encode_reply,
    encode_request,
)
from socks5d.proto.rfc1929 import (
    decode_auth_result,
    decode_userpass,
    encode_auth_result,
    encode_userpass,
)
from socks5d.proto.socks4 import (
    decode_socks4_request,
    decode_socks4_response,
    encode_socks4_request,
    encode_socks4_response,
)
from vectors import (
    ADDRESSES,
    ATYP_IPV4_192_0_2_1_PORT_80,
    ATYP_IPV4_UNSPECIFIED_PORT_0,
    AUTH_RESULTS,
    EXAMPLE,
    GREETING_NO_METHODS,
    GREETINGS,
    GSSAPI_MESSAGES,
    IPV4,
    IPV6,
    METHOD_SELECTIONS,
    REPLIES,
    REQUESTS,
    SOCKS4_REQUESTS,
    SOCKS4_RESPONSES,
    SOCKS4A_DECODE_ONLY,
    UDP_DATAGRAMS,
    UDP_DOMAIN,
    UDP_IPV4,
    UDP_IPV6,
    USERPASS_REQUESTS,
    Vector,
)

from .three_ways import assert_decodes_three_ways, assert_rejects_three_ways, decoder

Decode = Callable[[Cursor], Any]
Encode = Callable[[Any], bytes]

#: (vectors, decoder, encoder) for every TCP message and the bare address field.
CODECS: list[tuple[list[Vector], Decode, Encode]] = [
    (GREETINGS, decode_greeting, encode_greeting),
    (METHOD_SELECTIONS, decode_method_selected, encode_method_selected),
    (REQUESTS, decode_request, encode_request),
    (REPLIES, decode_reply, encode_reply),
    (USERPASS_REQUESTS, decode_userpass, encode_userpass),
    (AUTH_RESULTS, decode_auth_result, encode_auth_result),
    (GSSAPI_MESSAGES, decode_gssapi, encode_gssapi),
    (SOCKS4_REQUESTS, decode_socks4_request, encode_socks4_request),
    (SOCKS4_RESPONSES, decode_socks4_response, encode_socks4_response),
    (ADDRESSES, decode_address, encode_address),
]

ROUND_TRIPS = [
    pytest.param(vector, decode, encode, id=vector.name)
    for vectors, decode, encode in CODECS
    for vector in vectors
]

DECODE_ONLY = [
    pytest.param(vector, decode_socks4_request, id=vector.name) for vector in SOCKS4A_DECODE_ONLY
] + [
    pytest.param(
        Vector("GREETING_NO_METHODS", GREETING_NO_METHODS, Greeting(methods=())),
        decode_greeting,
        id="GREETING_NO_METHODS",
    ),
]


# --- every vector, both directions --------------------------------------------------------------


@pytest.mark.parametrize(("vector", "decode", "encode"), ROUND_TRIPS)
def test_vector_decodes_to_its_event_whole_bytewise_and_with_trailing_bytes(
    vector: Vector, decode: Decode, encode: Encode
) -> None:
    assert_decodes_three_ways(decoder(decode), vector.data, vector.event)


@pytest.mark.parametrize(("vector", "decode", "encode"), ROUND_TRIPS)
def test_event_encodes_to_its_vector(vector: Vector, decode: Decode, encode: Encode) -> None:
    assert encode(vector.event) == vector.data


@pytest.mark.parametrize(("vector", "decode"), DECODE_ONLY)
def test_decode_only_vector_decodes_to_its_event_three_ways(vector: Vector, decode: Decode) -> None:
    assert_decodes_three_ways(decoder(decode), vector.data, vector.event)


@pytest.mark.parametrize("vector", UDP_DATAGRAMS, ids=lambda vector: vector.name)
def test_udp_vector_decodes_to_its_datagram(vector: Vector) -> None:
    assert decode_udp(vector.data) == vector.event


@pytest.mark.parametrize("vector", UDP_DATAGRAMS, ids=lambda vector: vector.name)
def test_udp_datagram_encodes_to_its_vector(vector: Vector) -> None:
    assert encode_udp(vector.event) == vector.data


def test_udp_data_is_everything_after_the_header_even_if_it_looks_like_a_header() -> None:
    datagram = UDP_IPV4[:10] + UDP_IPV4
    assert decode_udp(datagram).data == UDP_IPV4


def test_socks4_userid_of_255_octets_is_accepted() -> None:
    data = bytes.fromhex("04 01 0050 c0000201") + b"u" * 255 + b"\x00"
    expected = Socks4Request(Command.CONNECT, Address(IPV4, 80), b"u" * 255)
    assert_decodes_three_ways(decoder(decode_socks4_request), data, expected)


def test_socks4a_name_of_255_octets_is_accepted() -> None:
    data = bytes.fromhex("04 01 0050 00000001 00") + b"n" * 255 + b"\x00"
    expected = Socks4Request(Command.CONNECT, Address(DomainName("n" * 255), 80))
    assert_decodes_three_ways(decoder(decode_socks4_request), data, expected)


def test_non_utf8_domain_name_octets_survive_decode_and_encode() -> None:
    data = bytes([0x05, 0x01, 0x00, 0x03, 0x04]) + b"\xffab\xfe" + bytes.fromhex("0050")
    request = decode_request(Cursor(data))
    assert encode_request(request) == data


def test_non_utf8_socks4a_name_survives_decode_and_encode() -> None:
    data = bytes.fromhex("04 01 0050 00000001 00") + b"\xffab\xfe" + b"\x00"
    request = decode_socks4_request(Cursor(data))
    assert encode_socks4_request(request) == data


def test_userpass_repr_does_not_show_the_password() -> None:
    assert "s3cret" not in repr(UserPassAuth("alice", "s3cret"))


@pytest.mark.parametrize(
    ("method", "acceptable"),
    [
        (AuthMethod.NO_AUTHENTICATION_REQUIRED, True),
        (AuthMethod.GSSAPI, True),
        (AuthMethod.USERNAME_PASSWORD, True),
        (0x80, True),
        (AuthMethod.NO_ACCEPTABLE_METHODS, False),
    ],
)
def test_method_selected_is_acceptable_unless_no_acceptable_methods(
    method: int, acceptable: bool
) -> None:
    assert MethodSelected(method).acceptable is acceptable


@pytest.mark.parametrize(("status", "success"), [(0x00, True), (0x01, False), (0xFF, False)])
def test_auth_result_succeeds_only_for_status_zero(status: int, success: bool) -> None:
    assert AuthResult(status).success is success


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("192.0.2.1", IPV4),
        ("2001:db8::1", IPV6),
        ("example.com", EXAMPLE),
    ],
)
def test_address_from_host_tells_ip_literals_from_domain_names(text: str, host: Any) -> None:
    address = Address.from_host(text, 80)
    assert address == Address(host, 80)
    assert type(address.host) is type(host)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address(IPV4, 80), "192.0.2.1:80"),
        (Address(IPV6, 443), "[2001:db8::1]:443"),
        (Address(EXAMPLE, 80), "example.com:80"),
    ],
)
def test_address_str_brackets_ipv6_only(address: Address, text: str) -> None:
    assert str(address) == text


# --- malformed bytes -----------------------------------------------------------------------------

BAD_VERSION = [
    pytest.param(decode_greeting, bytes([0x04, 0x01, 0x00]), id="greeting_ver_4"),
    pytest.param(decode_greeting, bytes([0x00, 0x01, 0x00]), id="greeting_ver_0"),
    pytest.param(decode_method_selected, bytes([0x04, 0x00]), id="method_selected_ver_4"),
    pytest.param(
        decode_request,
        bytes([0x04, 0x01, 0x00]) + ATYP_IPV4_192_0_2_1_PORT_80,
        id="request_ver_4",
    ),
    pytest.param(
        decode_reply,
        bytes([0x06, 0x00, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0,
        id="reply_ver_6",
    ),
    # RFC 1929 §2: the sub-negotiation VER is X'01'; X'05' is the classic client mistake.
    pytest.param(decode_userpass, bytes([0x05, 0x01]) + b"a" + bytes([0x01]) + b"p", id="userpass"),
    pytest.param(decode_auth_result, bytes([0x05, 0x00]), id="auth_result_ver_5"),
    pytest.param(decode_gssapi, bytes([0x05, 0x01, 0x00, 0x00]), id="gssapi_ver_5"),
    pytest.param(decode_gssapi, bytes([0x00, 0xFF]), id="gssapi_abort_ver_0"),
    pytest.param(
        decode_socks4_request, bytes.fromhex("05 01 0050 c0000201 00"), id="socks4_request_vn_5"
    ),
    # SOCKS4: "VN is the version of the reply code and should be 0."
    pytest.param(
        decode_socks4_response, bytes.fromhex("04 5a 0000 00000000"), id="socks4_reply_vn_4"
    ),
]


@pytest.mark.parametrize(("decode", "data"), BAD_VERSION)
def test_message_with_bad_version_raises_protocol_error(decode: Decode, data: bytes) -> None:
    assert_rejects_three_ways(decoder(decode), data, ProtocolError)


RESERVED_NOT_ZERO = [
    pytest.param(
        decode_request, bytes([0x05, 0x01, 0x01]) + ATYP_IPV4_192_0_2_1_PORT_80, id="request_01"
    ),
    pytest.param(
        decode_request, bytes([0x05, 0x01, 0xFF]) + ATYP_IPV4_192_0_2_1_PORT_80, id="request_ff"
    ),
    pytest.param(
        decode_reply, bytes([0x05, 0x00, 0x01]) + ATYP_IPV4_UNSPECIFIED_PORT_0, id="reply_01"
    ),
]


@pytest.mark.parametrize(("decode", "data"), RESERVED_NOT_ZERO)
def test_message_with_nonzero_rsv_raises_protocol_error(decode: Decode, data: bytes) -> None:
    assert_rejects_three_ways(decoder(decode), data, ProtocolError)


@pytest.mark.parametrize("command", [0x00, 0x04, 0x80, 0xFF])
def test_request_with_unknown_cmd_raises_command_not_supported(command: int) -> None:
    data = bytes([0x05, command, 0x00]) + ATYP_IPV4_192_0_2_1_PORT_80
    error = assert_rejects_three_ways(decoder(decode_request), data, CommandNotSupported)
    assert error.reply == Reply.COMMAND_NOT_SUPPORTED == 0x07


@pytest.mark.parametrize("command", [0x00, 0x03, 0xFF])
def test_socks4_request_with_unknown_cd_raises_command_not_supported(command: int) -> None:
    data = bytes([0x04, command]) + bytes.fromhex("0050 c0000201 00")
    error = assert_rejects_three_ways(decoder(decode_socks4_request), data, CommandNotSupported)
    assert error.reply == Reply.COMMAND_NOT_SUPPORTED


UNKNOWN_ATYPS = [0x00, 0x02, 0x05, 0xFF]


@pytest.mark.parametrize("address_type", UNKNOWN_ATYPS)
def test_request_with_unknown_atyp_raises_address_type_not_supported(address_type: int) -> None:
    data = bytes([0x05, 0x01, 0x00, address_type]) + bytes.fromhex("c0000201 0050")
    error = assert_rejects_three_ways(decoder(decode_request), data, AddressTypeNotSupported)
    assert error.reply == Reply.ADDRESS_TYPE_NOT_SUPPORTED == 0x08


@pytest.mark.parametrize("address_type", UNKNOWN_ATYPS)
def test_reply_with_unknown_atyp_raises_address_type_not_supported(address_type: int) -> None:
    data = bytes([0x05, 0x00, 0x00, address_type]) + bytes.fromhex("c0000201 0050")
    assert_rejects_three_ways(decoder(decode_reply), data, AddressTypeNotSupported)


ZERO_LENGTH_DOMAIN = [
    pytest.param(decode_request, bytes([0x05, 0x01, 0x00, 0x03, 0x00, 0x00, 0x50]), id="request"),
    pytest.param(decode_reply, bytes([0x05, 0x00, 0x00, 0x03, 0x00, 0x00, 0x50]), id="reply"),
    pytest.param(decode_address, bytes([0x03, 0x00, 0x00, 0x50]), id="address"),
    pytest.param(
        decode_socks4_request, bytes.fromhex("04 01 0050 00000001 00 00"), id="socks4a_request"
    ),
]


@pytest.mark.parametrize(("decode", "data"), ZERO_LENGTH_DOMAIN)
def test_zero_length_domain_raises_protocol_error(decode: Decode, data: bytes) -> None:
    assert_rejects_three_ways(decoder(decode), data, ProtocolError)


@pytest.mark.parametrize("reply", [0x09, 0x7F, 0x80, 0xFF])
def test_reply_with_unassigned_rep_raises_protocol_error(reply: int) -> None:
    data = bytes([0x05, reply, 0x00]) + ATYP_IPV4_UNSPECIFIED_PORT_0
    error = assert_rejects_three_ways(decoder(decode_reply), data, ProtocolError)
    assert error.reply == Reply.GENERAL_FAILURE


@pytest.mark.parametrize("message_type", [0x00, 0x04, 0x80, 0xFE])
def test_gssapi_message_with_unknown_mtyp_raises_protocol_error(message_type: int) -> None:
    data = bytes([0x01, message_type, 0x00, 0x01, 0x00])
    assert_rejects_three_ways(decoder(decode_gssapi), data, ProtocolError)


@pytest.mark.parametrize("status", [0, 89, 94, 0xFF])
def test_socks4_reply_with_unknown_cd_raises_protocol_error(status: int) -> None:
    data = bytes([0x00, status]) + bytes.fromhex("0000 00000000")
    assert_rejects_three_ways(decoder(decode_socks4_response), data, ProtocolError)


def test_socks4_userid_over_255_octets_without_nul_raises_protocol_error() -> None:
    data = bytes.fromhex("04 01 0050 c0000201") + b"u" * 256
    assert_rejects_three_ways(decoder(decode_socks4_request), data, ProtocolError)


def test_socks4a_name_over_255_octets_without_nul_raises_protocol_error() -> None:
    data = bytes.fromhex("04 01 0050 00000001 00") + b"n" * 256
    assert_rejects_three_ways(decoder(decode_socks4_request), data, ProtocolError)


def _header_length(datagram: UdpDatagram) -> int:
    return len(encode_udp(datagram)) - len(datagram.data)


UDP_TRUNCATED = [
    pytest.param(data[:length], id=f"{name}[:{length}]")
    for name, data, event in (
        ("UDP_IPV4", UDP_IPV4, decode_udp(UDP_IPV4)),
        ("UDP_IPV6", UDP_IPV6, decode_udp(UDP_IPV6)),
        ("UDP_DOMAIN", UDP_DOMAIN, decode_udp(UDP_DOMAIN)),
    )
    for length in range(_header_length(event))
]


@pytest.mark.parametrize("datagram", UDP_TRUNCATED)
def test_udp_datagram_shorter_than_its_header_raises_protocol_error(datagram: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_udp(datagram)


@pytest.mark.parametrize("reserved", [b"\x00\x01", b"\x01\x00", b"\xff\xff"])
def test_udp_datagram_with_nonzero_rsv_raises_protocol_error(reserved: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_udp(reserved + UDP_IPV4[2:])


@pytest.mark.parametrize("address_type", UNKNOWN_ATYPS)
def test_udp_datagram_with_unknown_atyp_raises_address_type_not_supported(
    address_type: int,
) -> None:
    with pytest.raises(AddressTypeNotSupported):
        decode_udp(bytes([0x00, 0x00, 0x00, address_type]) + bytes.fromhex("c0000201 0050"))


def test_udp_datagram_with_zero_length_domain_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_udp(bytes([0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x50]) + b"data")


# --- encoders refuse what the wire cannot carry -------------------------------------------------

LONG_NAME = DomainName("a" * 256)
#: 128 characters but 256 octets: the limit is on octets.
LONG_UTF8_NAME = DomainName("é" * 128)


ENCODER_REFUSALS = [
    pytest.param(encode_greeting, Greeting(()), id="greeting_without_methods"),
    pytest.param(
        encode_gssapi,
        GssapiToken(GssapiMessageType.ABORT, b"token"),
        id="gssapi_abort_with_a_token",
    ),
    pytest.param(encode_greeting, Greeting((0x00,) * 256), id="greeting_with_256_methods"),
    pytest.param(
        encode_request,
        CommandRequest(Command.CONNECT, Address(DomainName(""), 80)),
        id="request_with_empty_domain",
    ),
    pytest.param(
        encode_request,
        CommandRequest(Command.CONNECT, Address(LONG_NAME, 80)),
        id="request_with_256_octet_domain",
    ),
    pytest.param(
        encode_request,
        CommandRequest(Command.CONNECT, Address(LONG_UTF8_NAME, 80)),
        id="request_with_128_character_256_octet_domain",
    ),
    pytest.param(
        encode_reply,
        CommandReply(Reply.SUCCEEDED, Address(LONG_NAME, 80)),
        id="reply_with_256_octet_domain",
    ),
    pytest.param(encode_address, Address(DomainName(""), 80), id="address_with_empty_domain"),
    pytest.param(encode_userpass, UserPassAuth("u" * 256, "p"), id="userpass_256_octet_username"),
    pytest.param(encode_userpass, UserPassAuth("u", "p" * 256), id="userpass_256_octet_password"),
    pytest.param(encode_userpass, UserPassAuth("é" * 128, "p"), id="userpass_256_octet_utf8_name"),
    pytest.param(
        encode_gssapi,
        GssapiToken(GssapiMessageType.AUTHENTICATION, b"t" * 0x10000),
        id="gssapi_token_of_65536_octets",
    ),
    pytest.param(
        encode_socks4_request,
        Socks4Request(Command.UDP_ASSOCIATE, Address(IPV4, 80)),
        id="socks4_udp_associate",
    ),
    pytest.param(
        encode_socks4_request,
        Socks4Request(Command.CONNECT, Address(IPV6, 80)),
        id="socks4_ipv6_destination",
    ),
    pytest.param(
        encode_socks4_response,
        Socks4Response(Socks4Reply.GRANTED, Address(IPV6, 80)),
        id="socks4_reply_ipv6_bound",
    ),
    pytest.param(
        encode_socks4_response,
        Socks4Response(Socks4Reply.GRANTED, Address(EXAMPLE, 80)),
        id="socks4_reply_domain_bound",
    ),
    pytest.param(
        encode_udp, UdpDatagram(Address(IPV4, 80), b"", fragment=0x100), id="udp_frag_256"
    ),
    pytest.param(encode_udp, UdpDatagram(Address(IPV4, 80), b"", fragment=-1), id="udp_frag_-1"),
    pytest.param(encode_udp, UdpDatagram(Address(LONG_NAME, 80), b""), id="udp_256_octet_domain"),
    # Known bugs: each encoder returns bytes (or a non-socks5d error) instead of refusing.
    pytest.param(
        encode_socks4_request,
        Socks4Request(Command.CONNECT, Address(ipaddress.IPv4Address("0.0.0.1"), 80)),
        id="socks4_destination_0.0.0.x",
    ),
    pytest.param(
        encode_socks4_request,
        Socks4Request(Command.CONNECT, Address(IPV4, 80), b"Fr\x00ed"),
        id="socks4_userid_with_nul",
    ),
    pytest.param(
        encode_socks4_request,
        Socks4Request(Command.CONNECT, Address(DomainName("a\x00b"), 80)),
        id="socks4a_name_with_nul",
    ),
    pytest.param(
        encode_socks4_request,
        Socks4Request(Command.CONNECT, Address(DomainName(""), 80)),
        id="socks4a_empty_name",
    ),
    pytest.param(
        encode_greeting,
        Greeting((0x100,)),
        id="greeting_method_256",
    ),
    pytest.param(
        encode_method_selected,
        MethodSelected(0x100),
        id="method_selected_256",
    ),
]


@pytest.mark.parametrize(("encode", "message"), ENCODER_REFUSALS)
def test_encoder_refuses_invalid_message_with_local_protocol_error(
    encode: Encode, message: Any
) -> None:
    with pytest.raises(LocalProtocolError):
        encode(message)


@pytest.mark.parametrize("port", [-1, 0x10000])
def test_address_with_port_outside_16_bits_raises_local_protocol_error(port: int) -> None:
    with pytest.raises(LocalProtocolError):
        Address(IPV4, port)
