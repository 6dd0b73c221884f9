"""Incremental byte buffer and cursor for the sans-I/O decoders.

Decoders read through a `Cursor`; when the bytes run out it raises `NeedData`, which the
`ReceiveBuffer` turns into "need more" without consuming anything. A decoder therefore never
reads past its message: what follows stays in the buffer for the next message or the relay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from socks5d.errors import ProtocolError

T = TypeVar("T")


class NeedData(Exception):
    """Raised by `Cursor` when the message is not complete yet (internal to `proto`)."""


class Cursor:
    """Reads a message field by field from the front of a byte string."""

    __slots__ = ("_data", "position")

    def __init__(self, data: bytes | bytearray) -> None:
        self._data = data
        self.position = 0

    def take(self, count: int) -> bytes:
        """Return the next `count` bytes, or raise `NeedData` if they have not arrived."""
        end = self.position + count
        if end > len(self._data):
            raise NeedData
        chunk = bytes(self._data[self.position : end])
        self.position = end
        return chunk

    def byte(self) -> int:
        """Return the next single octet."""
        if self.position >= len(self._data):
            raise NeedData
        value = self._data[self.position]
        self.position += 1
        return value

    def uint16(self) -> int:
        """Return the next two octets as a big-endian ("network octet order") integer."""
        return int.from_bytes(self.take(2), "big")

    def peek(self, limit: int) -> bytes:
        """Up to the next `limit` bytes that have arrived, without consuming them."""
        return bytes(self._data[self.position : self.position + limit])

    def until_null(self, limit: int) -> bytes:
        """Return the bytes before the next NUL (consuming it); at most `limit` bytes."""
        end = self._data.find(b"\x00", self.position, self.position + limit + 1)
        if end < 0:
            if len(self._data) - self.position > limit:
                raise ProtocolError(f"NUL-terminated field longer than {limit} bytes")
            raise NeedData
        chunk = bytes(self._data[self.position : end])
        self.position = end + 1
        return chunk


class ReceiveBuffer:
    """Bytes received and not parsed yet, with an upper bound on what it will hold.

    Args:
        max_size: the most bytes held while a message is still incomplete; more means the
            peer sends something no valid message can be, and is a `ProtocolError`.
    """

    __slots__ = ("_data", "eof", "max_size")

    def __init__(self, max_size: int) -> None:
        self._data = bytearray()
        self.max_size = max_size
        self.eof = False

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        """Append received bytes; `b""` records end of stream."""
        if not data:
            self.eof = True
        else:
            self._data += data

    def parse(self, decoder: Callable[[Cursor], T]) -> T | None:
        """Decode one message from the front; consume it and return it, or None if incomplete."""
        cursor = Cursor(self._data)
        try:
            message = decoder(cursor)
        except NeedData:
            if len(self._data) > self.max_size:
                raise ProtocolError(
                    f"{len(self._data)} bytes buffered without a complete message"
                ) from None
            return None
        del self._data[: cursor.position]
        return message

    def take_all(self) -> bytes:
        """Remove and return everything buffered."""
        data = bytes(self._data)
        self._data.clear()
        return data
