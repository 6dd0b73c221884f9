"""Protocol numbers of RFC 1928, RFC 1929, RFC 1961 and SOCKS4/4a, named in the RFCs' words.

Nothing here does I/O; every other module compares against these names instead of bare
wire literals.
"""

from __future__ import annotations

from enum import IntEnum

#: RFC 1928 §3: "The VER field is set to X'05' for this version of the protocol."
SOCKS5_VERSION = 0x05
#: SOCKS4 (SOCKS4.protocol.txt): "VN is the SOCKS protocol version number and should be 4."
SOCKS4_VERSION = 0x04
#: SOCKS4: "VN is the version of the reply code and should be 0."
SOCKS4_REPLY_VERSION = 0x00
#: RFC 1929 §2: "The VER field contains the current version of the subnegotiation, which is X'01'."
USERPASS_VERSION = 0x01
#: RFC 1961 §3: "ver is the protocol version number, here 1".
GSSAPI_VERSION = 0x01
#: RFC 1928 §5: "Fields marked RESERVED (RSV) must be set to X'00'."
RESERVED = 0x00


class AuthMethod(IntEnum):
    """METHOD values of RFC 1928 §3."""

    #: X'00' NO AUTHENTICATION REQUIRED
    NO_AUTHENTICATION_REQUIRED = 0x00
    #: X'01' GSSAPI (RFC 1961)
    GSSAPI = 0x01
    #: X'02' USERNAME/PASSWORD (RFC 1929)
    USERNAME_PASSWORD = 0x02
    #: X'FF' NO ACCEPTABLE METHODS
    NO_ACCEPTABLE_METHODS = 0xFF


class Command(IntEnum):
    """CMD values of RFC 1928 §4 (SOCKS4 uses the same numbers for CONNECT and BIND)."""

    #: CONNECT X'01'
    CONNECT = 0x01
    #: BIND X'02'
    BIND = 0x02
    #: UDP ASSOCIATE X'03'
    UDP_ASSOCIATE = 0x03


class AddressType(IntEnum):
    """ATYP values of RFC 1928 §5."""

    #: IP V4 address: X'01'
    IPV4 = 0x01
    #: DOMAINNAME: X'03'
    DOMAIN_NAME = 0x03
    #: IP V6 address: X'04'
    IPV6 = 0x04


class Reply(IntEnum):
    """REP values of RFC 1928 §6."""

    #: X'00' succeeded
    SUCCEEDED = 0x00
    #: X'01' general SOCKS server failure
    GENERAL_FAILURE = 0x01
    #: X'02' connection not allowed by ruleset
    CONNECTION_NOT_ALLOWED = 0x02
    #: X'03' Network unreachable
    NETWORK_UNREACHABLE = 0x03
    #: X'04' Host unreachable
    HOST_UNREACHABLE = 0x04
    #: X'05' Connection refused
    CONNECTION_REFUSED = 0x05
    #: X'06' TTL expired
    TTL_EXPIRED = 0x06
    #: X'07' Command not supported
    COMMAND_NOT_SUPPORTED = 0x07
    #: X'08' Address type not supported
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class UserPassStatus(IntEnum):
    """STATUS of RFC 1929 §2: "A STATUS field of X'00' indicates success."."""

    #: X'00' success
    SUCCESS = 0x00
    #: any other value is a failure; we send X'01'
    FAILURE = 0x01


class GssapiMessageType(IntEnum):
    """MTYP values of RFC 1961."""

    #: §3: "mtyp is the message type, here 1 to represent an authentication message"
    AUTHENTICATION = 0x01
    #: §4: "mtyp is the message type, here 2 to represent a protection-level negotiation message"
    PROTECTION_LEVEL = 0x02
    #: §5: "mtyp is the message type, here 3 to represent encapsulated user data"
    ENCAPSULATION = 0x03
    #: §3: abort, "+ 0x01 | 0xff +", two octets with no length and no token
    ABORT = 0xFF


class ProtectionLevel(IntEnum):
    """Security context protection levels (RFC 1961 §4.3), and the "clear" level in use.

    §4.3: "The security context protection level sent by client and server must be one of
    the following values".
    """

    #: not in RFC 1961: Dante and the NEC reference implementation send 0 for "no per-message
    #: protection"; nothing is encapsulated after authentication
    CLEAR = 0x00
    #: "1 required per-message integrity"
    INTEGRITY = 0x01
    #: "2 required per-message integrity and confidentiality"
    CONFIDENTIALITY = 0x02
    #: "3 selective per-message integrity or confidentiality based on local client and server
    #: configurations"
    SELECTIVE = 0x03


class Socks4Reply(IntEnum):
    """CD values of a SOCKS4 reply (SOCKS4.protocol.txt)."""

    #: 90: request granted
    GRANTED = 90
    #: 91: request rejected or failed
    REJECTED = 91
    #: 92: request rejected because SOCKS server cannot connect to identd on the client
    IDENTD_UNREACHABLE = 92
    #: 93: request rejected because the client program and identd report different user-ids
    IDENTD_MISMATCH = 93
