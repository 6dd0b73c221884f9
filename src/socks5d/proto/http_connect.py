"""HTTP/1.1 CONNECT to an upstream proxy, as a client speaks it (RFC 9110 §9.3.6), sans I/O.

    data = encode_connect(destination, "alice", "secret")   # the request
    parser = HttpConnectParser()
    parser.receive_data(received)                            # b"" at EOF
    event = parser.next_event()          # HttpResponse, ConnectionClosed, or NEED_DATA
    rest = parser.trailing_data          # after a 2xx: the tunnel's first bytes

RFC 9110 §9.3.6: "Any 2xx (Successful) response indicates that the sender (and all inbound
proxies) will switch to tunnel mode immediately after the response header section ends".
"""

from __future__ import annotations

import base64
import ipaddress
import re

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.address import Address
from socks5d.proto.buffer import Cursor, NeedData, ReceiveBuffer
from socks5d.proto.events import NEED_DATA, ConnectionClosed, HttpResponse, _NeedData

#: The most bytes of a response head we wait for (status line and header fields).
MAX_HEAD = 16 * 1024
#: RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: ([\t -~\x80-\xff]*))?")
#: What a host may hold in the request target: no space, no line break, no "@" or "/".
_HOST = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%-]+")


def authority(destination: Address) -> str:
    """`host:port` of the request target (RFC 9110 §9.3.6: "the request-target consists of
    only the host name and port number of the tunnel destination"), IPv6 in brackets.

    Raises:
        LocalProtocolError: a name that cannot be written there (space, CR/LF, "/", "@").
    """
    host = destination.host
    if isinstance(host, ipaddress.IPv6Address):
        return f"[{host}]:{destination.port}"
    text = str(host)
    if not isinstance(host, ipaddress.IPv4Address) and not _HOST.fullmatch(text):
        raise LocalProtocolError(f"not a host name for HTTP CONNECT: {text!r}")
    return f"{text}:{destination.port}"


def encode_connect(
    destination: Address, username: str | None = None, password: str | None = None
) -> bytes:
    """The CONNECT request, with Basic credentials (RFC 7617) when `username` is given."""
    target = authority(destination)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if username is not None:
        pair = f"{username}:{password or ''}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(pair).decode('ascii')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def decode_response(cursor: Cursor) -> HttpResponse:
    """One response head; raises `NeedData` until its empty line has arrived.

    Raises:
        ProtocolError: no status line, or a head longer than `MAX_HEAD`.
    """
    head = cursor.peek(MAX_HEAD + 4)
    end = head.find(b"\r\n\r\n")
    if end < 0:
        # Refused as soon as the bytes cannot begin a status line, and the same way whatever
        # the chunks: a first line already ended (CRLF) must hold the whole "HTTP/1.x ".
        line_end = head.find(b"\r\n")
        first = head if line_end < 0 else head[:line_end]
        prefix = first[:9]
        possible = b"HTTP/1.1 ".startswith(prefix) or b"HTTP/1.0 ".startswith(prefix)
        if not possible or (line_end >= 0 and len(first) < 9):
            raise ProtocolError(f"not an HTTP response: {first[:40]!r}")
        if len(head) > MAX_HEAD:
            raise ProtocolError(f"HTTP response head over {MAX_HEAD} bytes")
        raise NeedData
    status_line = cursor.take(end + 4).split(b"\r\n", 1)[0]
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise ProtocolError(f"bad HTTP status line: {status_line[:80]!r}")
    reason = (match.group(2) or b"").decode("utf-8", "backslashreplace")
    return HttpResponse(int(match.group(1)), reason)


class HttpConnectParser:
    """Reads the proxy's answer to CONNECT; what follows a 2xx head is the tunnel's."""

    __slots__ = ("_buffer", "_done")

    def __init__(self) -> None:
        self._buffer = ReceiveBuffer(MAX_HEAD + 4)
        self._done = False

    def receive_data(self, data: bytes) -> None:
        self._buffer.feed(data)

    def next_event(self) -> HttpResponse | ConnectionClosed | _NeedData:
        if self._done:
            return NEED_DATA
        response = self._buffer.parse(decode_response)
        if response is not None:
            self._done = True
            return response
        if self._buffer.eof:
            return ConnectionClosed()
        return NEED_DATA

    @property
    def trailing_data(self) -> bytes:
        return self._buffer.take_all()
