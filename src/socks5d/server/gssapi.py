"""GSS-API authentication of one session (RFC 1961): the security context (MTYP 1), the
protection level (MTYP 2), and from then on, at integrity or confidentiality, a session whose
messages and tunnel go through `Protection` (`SessionContext.protect`).
"""

from __future__ import annotations

import asyncio
import contextlib

from socks5d import proto
from socks5d.errors import AuthFailed, ProtocolError
from socks5d.gss import Acceptor, Protection, level_name
from socks5d.proto import GssapiMessageType, ProtectionLevel, State
from socks5d.proto.gssapi import encode_gssapi
from socks5d.server.context import SessionContext


async def authenticate_gssapi(session: SessionContext) -> None:
    """RFC 1961: establish the security context (MTYP 1), agree the protection level
    (MTYP 2), and from then on protect everything (MTYP 3) when the level asks for it.

    Raises:
        AuthFailed: after sending the abort message: §3.8 "If the server refuses the
            client's connection for any reason (GSS-API authentication failure or
            otherwise), it will return: + 0x01 | 0xff +".
    """
    settings = session.services.config.gssapi
    credentials = session.services.gssapi_credentials
    assert credentials is not None
    try:
        negotiation = Acceptor(credentials)
        while not negotiation.complete:
            token = await _message(session, GssapiMessageType.AUTHENTICATION)
            # §3.7: "In all continue/confirmation cases, the server uses the same message
            # type as for the client -> server interaction"; the last token (mutual
            # authentication) goes out even though the context is complete.
            answer = negotiation.step(token)
            if answer:
                await session.send(proto.GssapiToken(GssapiMessageType.AUTHENTICATION, answer))
        session.user = session.record["user"] = negotiation.principal
        token = await _message(session, GssapiMessageType.PROTECTION_LEVEL)
        asked, unwrapped = negotiation.read_level(
            token, accept_unwrapped=settings.accept_unwrapped_level
        )
        granted = ProtectionLevel.CLEAR if settings.answer_clear else asked
        if granted not in settings.levels:
            # Never a lower level than asked for: a client that does not check the answer
            # (Dante's) would go on protecting what we no longer unwrap.
            allowed = ",".join(level_name(level) for level in sorted(settings.levels))
            raise AuthFailed(
                f"protection level {level_name(asked)} not allowed (allowed: {allowed})"
            )
        answer = negotiation.level_token(granted, unwrapped=unwrapped)
        await session.send(proto.GssapiToken(GssapiMessageType.PROTECTION_LEVEL, answer))
    except (AuthFailed, ProtocolError):
        session.services.stats.auth("gssapi", False)
        await _abort(session)
        raise
    session.services.stats.auth("gssapi", True)
    session.connection.authentication_complete()
    session.record["auth"] = f"gssapi/{level_name(granted)}"
    if granted != ProtectionLevel.CLEAR:
        protection = Protection(negotiation.context, granted)
        session.protect(protection)
        # The client may already have sent its request: bytes past the level message.
        # (Part of a token stays in `protection` until the rest arrives; b"" would be EOF.)
        pending = session.connection.trailing_data
        if pending and (plaintext := protection.open(pending)):
            session.connection.receive_data(plaintext)


async def _abort(session: SessionContext) -> None:
    """Send the abort message, unless the client's own abort or close ended it."""
    abort = proto.GssapiToken(GssapiMessageType.ABORT)
    if session.connection.state is State.CLOSED:
        return
    if session.connection.state is State.ERROR:  # the client's bytes broke the framing
        data = encode_gssapi(abort)
    else:
        data = session.connection.send(abort)
    with contextlib.suppress(OSError):
        await asyncio.get_running_loop().sock_sendall(session.client, data)


async def _message(session: SessionContext, expected: GssapiMessageType) -> bytes:
    """The token of the client's next RFC 1961 message, which must be of type `expected`."""
    event = await session.next_event()
    if isinstance(event, proto.GssapiToken):
        if event.message_type == GssapiMessageType.ABORT:
            raise AuthFailed("the client aborted the GSS-API negotiation")
        if event.message_type != expected:
            raise AuthFailed(
                f"GSS-API message type {event.message_type:#04x} where {expected:#04x} was expected"
            )
        return event.token
    if isinstance(event, proto.ConnectionClosed):
        raise AuthFailed("the client closed during the GSS-API negotiation")
    raise ProtocolError(f"unexpected {type(event).__name__}")
