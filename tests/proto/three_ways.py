"""The one helper that runs every decoder check three ways.

1. whole: the message arrives in one piece and is consumed exactly;
2. one byte at a time: nothing is decoded until the last byte arrives;
3. with trailing bytes: the message is decoded and the bytes after it stay unconsumed
   (`ReceiveBuffer.take_all()` for a bare decoder, `trailing_data` for a state machine).

A "reader" is whatever is being checked: a bare decoder behind a `ReceiveBuffer`, or a
`ServerConnection`/`ClientConnection` brought to the state where it expects the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pytest

from socks5d.errors import Socks5Error
from socks5d.proto import NEED_DATA
from socks5d.proto.buffer import Cursor, ReceiveBuffer

#: Bytes that follow a message: the start of another greeting, then relay payload.
TRAILER = bytes([0x05, 0x01, 0x00]) + b"GET / HTTP/1.1\r\n"

#: Large enough that the buffer bound never interferes with a codec check.
_UNBOUNDED = 1 << 20


class Reader(Protocol):
    """Bytes in, at most one message out, the rest left alone."""

    def feed(self, data: bytes) -> None: ...

    def read(self) -> Any:
        """The decoded message, or None while it is incomplete."""

    def leftover(self) -> bytes:
        """Everything received and not consumed by `read()`."""


class DecoderReader:
    """A bare `decode_*(cursor)` function behind a `ReceiveBuffer`."""

    def __init__(self, decoder: Callable[[Cursor], Any]) -> None:
        self._decoder = decoder
        self._buffer = ReceiveBuffer(_UNBOUNDED)

    def feed(self, data: bytes) -> None:
        self._buffer.feed(data)

    def read(self) -> Any:
        return self._buffer.parse(self._decoder)

    def leftover(self) -> bytes:
        return self._buffer.take_all()


class Parser(Protocol):
    """Bytes in, events out: a `Connection`, or a one-message parser (`ProxyHeaderParser`,
    `HttpConnectParser`)."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Any: ...

    @property
    def trailing_data(self) -> bytes: ...


class ConnectionReader:
    """A state machine (or parser) already brought to the state in which it reads the
    message."""

    def __init__(self, connection: Parser) -> None:
        self.connection = connection

    def feed(self, data: bytes) -> None:
        self.connection.receive_data(data)

    def read(self) -> Any:
        event = self.connection.next_event()
        return None if event is NEED_DATA else event

    def leftover(self) -> bytes:
        return self.connection.trailing_data


def decoder(decode: Callable[[Cursor], Any]) -> Callable[[], Reader]:
    """Reader factory for a bare decoder."""
    return lambda: DecoderReader(decode)


def connection(make: Callable[[], Parser]) -> Callable[[], Reader]:
    """Reader factory for a state machine or parser; `make` returns it in the reading
    state."""
    return lambda: ConnectionReader(make())


def assert_decodes_three_ways(new_reader: Callable[[], Reader], data: bytes, expected: Any) -> None:
    """`data` decodes to `expected` whole, byte by byte, and with `TRAILER` appended."""
    reader = new_reader()
    reader.feed(data)
    assert reader.read() == expected, "whole"
    assert reader.leftover() == b"", "whole: every byte of the message is consumed"

    reader = new_reader()
    for count in range(1, len(data)):
        reader.feed(data[count - 1 : count])
        assert reader.read() is None, f"decoded after {count} of {len(data)} bytes"
    reader.feed(data[-1:])
    assert reader.read() == expected, "one byte at a time"
    assert reader.leftover() == b"", "one byte at a time: nothing left over"

    reader = new_reader()
    reader.feed(data + TRAILER)
    assert reader.read() == expected, "with trailing bytes"
    assert reader.leftover() == TRAILER, "trailing bytes are not consumed"


def assert_rejects_three_ways(
    new_reader: Callable[[], Reader], data: bytes, error: type[Socks5Error]
) -> Socks5Error:
    """`data` raises `error` whole, by its last byte when fed one at a time, and with `TRAILER`.

    Returns:
        The exception of the whole-buffer run, for checks of its `reply`.
    """
    with pytest.raises(error) as whole:
        reader = new_reader()
        reader.feed(data)
        reader.read()

    reader = new_reader()
    with pytest.raises(error):
        for count in range(1, len(data) + 1):
            reader.feed(data[count - 1 : count])
            assert reader.read() is None, f"decoded a message from invalid bytes {data!r}"

    with pytest.raises(error):
        reader = new_reader()
        reader.feed(data + TRAILER)
        reader.read()

    return whole.value
