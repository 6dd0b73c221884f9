"""The machinery both roles share: a receive buffer, a state, and one transition table.

A role (`ServerConnection`, `ClientConnection`) declares per state which decoder reads the
peer's next message and, per (state, message type), the state that follows a message sent or
received. Anything not in the table is out of order: a received one is a `ProtocolError`, a
sent one a `LocalProtocolError` (our bug). Either leaves the connection in `State.ERROR`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum, auto
from typing import Any, ClassVar

from socks5d.errors import LocalProtocolError, ProtocolError
from socks5d.proto.buffer import Cursor, ReceiveBuffer
from socks5d.proto.events import (
    NEED_DATA,
    CommandRequest,
    ConnectionClosed,
    Event,
    Socks4Request,
    _NeedData,
)


class State(Enum):
    """Where a connection is in the handshake."""

    GREETING = auto()  #: before the version identifier/method selection message
    METHOD = auto()  #: greeting sent/received, method selection pending
    USERPASS = auto()  #: RFC 1929 request pending
    USERPASS_STATUS = auto()  #: RFC 1929 status pending
    GSSAPI = auto()  #: RFC 1961 context establishment and protection-level negotiation
    REQUEST = auto()  #: authenticated; SOCKS request pending
    REPLY = auto()  #: request made; first reply pending
    SECOND_REPLY = auto()  #: BIND: second reply (the peer connected) pending
    SOCKS4_REPLY = auto()  #: SOCKS4 request made; reply pending
    SOCKS4_SECOND_REPLY = auto()  #: SOCKS4 BIND: second reply pending
    ESTABLISHED = auto()  #: handshake done; what follows belongs to the relay
    CLOSED = auto()  #: the handshake ended in a refusal or the peer closed
    ERROR = auto()  #: a protocol error happened; nothing more may be sent or received


#: The next state: a fixed one, or a function of the connection and the message.
Transition = State | Callable[[Any, Any], State]
#: Reads one message of the peer; gets the connection too, for role settings.
Decoder = Callable[[Any, Cursor], Event]


def plain(decoder: Callable[[Cursor], Event]) -> Decoder:
    """Adapt a decoder that needs only the cursor to the table's `Decoder` signature."""
    return lambda _connection, cursor: decoder(cursor)


class Connection:
    """Common driver; see `ServerConnection` and `ClientConnection`."""

    #: state -> decoder of the message the peer sends in it
    decoders: ClassVar[Mapping[State, Decoder]] = {}
    #: (state, message type) -> next state, for messages we receive
    received: ClassVar[Mapping[tuple[State, type], Transition]] = {}
    #: (state, message type) -> next state, for messages we send
    sent: ClassVar[Mapping[tuple[State, type], Transition]] = {}
    #: message type -> encoder
    encoders: ClassVar[Mapping[type, Callable[[Any], bytes]]] = {}
    #: state -> state to enter when the peer's message in it is malformed but still deserves
    #: an answer (a bad request gets a reply with the error's REP); absent states go to ERROR
    answerable_errors: ClassVar[Mapping[State, State]] = {}

    def __init__(self, max_buffer: int = 0x10000 + 4) -> None:
        self.state = State.GREETING
        self._buffer = ReceiveBuffer(max_buffer)
        #: the SOCKS request, once sent or received
        self.request: CommandRequest | Socks4Request | None = None

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; `b""` means the peer closed its sending side."""
        self._buffer.feed(data)

    def next_event(self) -> Event | _NeedData:
        """Parse the peer's next message, or return `NEED_DATA`.

        Raises:
            ProtocolError: the bytes break the protocol (the error's `reply` says what to send).
        """
        decoder = self.decoders.get(self.state)
        if decoder is None:
            if self.state in (State.CLOSED, State.ERROR):
                raise LocalProtocolError(f"no more events in state {self.state.name}")
            return NEED_DATA  # our turn to send
        try:
            event = self._buffer.parse(lambda cursor: decoder(self, cursor))
            if event is None:
                if not self._buffer.eof:
                    return NEED_DATA
                self.state = State.CLOSED
                return ConnectionClosed(len(self._buffer))
            self.state = self._follow(self.received, event, ProtocolError)
        except ProtocolError:
            self.state = self.answerable_errors.get(self.state, State.ERROR)
            raise
        self._received(event)
        return event

    def _received(self, event: Event) -> None:
        """Hook for a role to remember what it received (the request, the chosen method)."""

    def send(self, message: Event) -> bytes:
        """Return the bytes of `message` and move to the state it leads to.

        Raises:
            LocalProtocolError: `message` is not allowed in the current state.
        """
        encoder = self.encoders.get(type(message))
        try:
            if encoder is None:
                raise LocalProtocolError(f"cannot send {type(message).__name__}")
            data = encoder(message)
            self.state = self._follow(self.sent, message, LocalProtocolError)
        except LocalProtocolError:
            self.state = State.ERROR
            raise
        return data

    def _follow(
        self,
        table: Mapping[tuple[State, type], Transition],
        message: Event,
        error: type[ProtocolError] | type[LocalProtocolError],
    ) -> State:
        transition = table.get((self.state, type(message)))
        if transition is None:
            raise error(f"{type(message).__name__} out of order in state {self.state.name}")
        return transition if isinstance(transition, State) else transition(self, message)

    def authentication_complete(self) -> None:
        """Leave the GSS-API sub-negotiation: the SOCKS request comes next."""
        if self.state is not State.GSSAPI:
            raise LocalProtocolError(f"not negotiating GSS-API (state {self.state.name})")
        self.state = State.REQUEST

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the last parsed message; once established, the relay's."""
        return self._buffer.take_all()
