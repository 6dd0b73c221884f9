"""Connections from a trusted load balancer: the PROXY protocol header first, then SOCKS.

A connection from a `[proxy_protocol] from` network must begin with a header (v1 or v2,
`proto.proxy_protocol`); its source address is the client from then on, for the rules, the
limits, the throttle, UDP and the log, the balancer's address is kept as `via`. "The receiver
MUST NOT start processing the connection before it receives a complete and valid PROXY
protocol header" (HAProxy's doc/proxy-protocol.txt): until it has, the connection holds one of
the handshakes in all (`Slots.reserve`), none of a client's, and the handshake timeout runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

from socks5d.errors import ProtocolError, Socks5Error, UnsupportedVersion
from socks5d.net import discard_unread, unmapped
from socks5d.proto import Address
from socks5d.proto.events import _NeedData
from socks5d.proto.proxy_protocol import MAX_V2, ProxyHeader, ProxyHeaderParser, starts_like_header
from socks5d.server.context import IPAddress, Services, SessionContext

log = logging.getLogger(__name__)

#: `admit(client, listener)`: None when `client` may start a session (it then holds a
#: session and a handshake slot), else why not.
Admit = Callable[[IPAddress, str], "str | None"]
#: `start(client_socket, address, listener, started)`: the session of `address`, not run yet.
Start = Callable[[socket.socket, Address, str, float], "Serving"]


class Serving(SessionContext, Protocol):
    """A session to run (`session.Session`, which imports this module)."""

    async def run(self) -> None: ...


#: The outcome of a session that began with a header while not from a trusted balancer.
UNTRUSTED = "PROXY header from an untrusted source"


async def read_header(client: socket.socket) -> tuple[ProxyHeader, bytes] | None:
    """The header and the bytes that came after it (the SOCKS greeting, when in the same
    segment); None when the connection ends before its first byte (a balancer's TCP check).
    Reads at most a header's worth at a time.

    Raises:
        ProtocolError: not a header, a malformed one, or EOF before its end.
    """
    loop = asyncio.get_running_loop()
    parser = ProxyHeaderParser()
    data = await loop.sock_recv(client, MAX_V2)
    if not data:
        return None
    parser.receive_data(data)
    while isinstance(event := parser.next_event(), _NeedData):
        parser.receive_data(await loop.sock_recv(client, MAX_V2))
    return event, parser.trailing_data


def client_address(header: ProxyHeader, peer: Address) -> Address:
    """Whom the session serves: the header's source, unmapped as an accepted address is; the
    real peer when the header names none ("SHOULD accept the connection and use the real
    connection's parameters as if there were no PROXY protocol header")."""
    if header.source is None:
        return peer
    host = header.source.host
    assert not isinstance(host, str)
    return Address(unmapped(host), header.source.port)


async def serve_proxied(
    services: Services,
    client: socket.socket,
    peer: Address,
    listener: str,
    admit: Admit,
    start: Start,
) -> None:
    """Read the header from the balancer at `peer`, admit the client it names and serve its
    session (`start`), or close. Holds a reserved handshake until the header is read.
    """
    started = time.monotonic()
    balancer = str(peer)
    stats = services.stats
    try:
        received = await _read(client, services.config.timeouts.handshake)
    except BaseException:  # cancelled: the server is closing
        client.close()
        raise
    finally:
        services.handshake_slots.unreserve()
    if received is None:
        log.debug("%s on %s closed before its PROXY header", balancer, listener)
        _close(client)
        return
    if isinstance(received, str):
        stats.proxy_header("invalid")
        log.warning(
            "refused %s on %s: %s",
            balancer,
            listener,
            received,
            extra={"fields": {"via": balancer, "listener": listener}},
        )
        _close(client)
        return
    header, trailing = received
    if header.local:
        # v2 LOCAL: "the connection was established on purpose by the proxy without being
        # relayed" - a health check: it has its answer, no session is served
        stats.proxy_header("local")
        log.debug("PROXY LOCAL from %s on %s: closed", balancer, listener)
        _close(client)
        return
    stats.proxy_header("proxied")
    address = client_address(header, peer)
    host = address.host
    assert not isinstance(host, str)
    refusal = admit(host, listener)
    if refusal is not None:
        log.info(
            "refused %s via %s on %s: %s",
            address,
            balancer,
            listener,
            refusal,
            extra={"fields": {"client": str(address), "via": balancer, "listener": listener}},
        )
        _close(client)
        return
    session = start(client, address, listener, started)
    session.record.update(via=balancer, unique_id=_unique_id(header.unique_id))
    if trailing:
        session.connection.receive_data(trailing)
    await session.run()


async def _read(client: socket.socket, timeout: float) -> tuple[ProxyHeader, bytes] | str | None:
    """`read_header` within `timeout`, or why not (a string), or None: closed at once."""
    try:
        async with asyncio.timeout(timeout):
            return await read_header(client)
    except TimeoutError:
        return "handshake timeout before the PROXY header ended"
    except ProtocolError as exc:
        return f"bad PROXY header: {exc}"
    except OSError as exc:
        return f"client error: {exc}"


def untrusted_header(exc: Socks5Error, session: SessionContext) -> str | None:
    """`UNTRUSTED` when the session (not from `[proxy_protocol] from`) failed because its
    first bytes are a PROXY header, counted and warned of; else None. Such a header is
    refused: "it would open a major security breach by allowing untrusted parties to spoof
    their connection addresses" (HAProxy's doc/proxy-protocol.txt).
    """
    if not isinstance(exc, UnsupportedVersion) or not starts_like_header(exc.head):
        return None
    session.services.stats.proxy_header("untrusted")
    log.warning("refused %s: %s", session.peer, UNTRUSTED)
    return UNTRUSTED


def _close(client: socket.socket) -> None:
    discard_unread(client)  # else the close is an RST
    client.close()


def _unique_id(value: bytes | None) -> str | None:
    """`PP2_TYPE_UNIQUE_ID` for the log; the formatter escapes what is not printable."""
    return None if value is None else value.decode("utf-8", "backslashreplace")
