"""The asyncio driver of a walk through a chain of proxies (`route.walk`): it dials the first
proxy, writes and reads each handshake's bytes, looks up names, and puts bridges in place of
the socket where a hop protects the next (`bridges.bridge`). `aio.py` (CONNECT, BIND) and
`aio_udp.py` (UDP ASSOCIATE) drive their walks through it.
"""

from __future__ import annotations

import asyncio
import socket

from socks5d.client.bridges import bridge
from socks5d.client.handshake import READ, Link
from socks5d.client.route import (
    Dial,
    Lookup,
    NextHop,
    Position,
    Stepper,
    Walk,
    unreachable,
    walk,
)
from socks5d.client.wire import proxy_header, read_once
from socks5d.errors import Socks5Error
from socks5d.net import connect_first, lookup
from socks5d.proto import Address, Command, Event
from socks5d.proxies import Proxy


async def readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _read_event(sock: socket.socket, link: Link) -> Event:
    """The proxy's next message (see `wire.read_once`)."""
    while True:
        if link.protection is not None:
            link.protection.check()  # before waiting: a bad token may be all there was
        await readable(sock)
        try:
            event = read_once(sock, link)
        except BlockingIOError:
            continue
        if event is not None:
            return event


async def drive(
    steps: Walk, at: Position, deadline: asyncio.Timeout | None = None, timeout: float = 0.0
) -> Address:
    """Do what `steps` (a walk or a handshake) ask, on `at`'s socket; with `deadline`, each
    hop gets `timeout` seconds from its start.
    """
    loop = asyncio.get_running_loop()
    stepper = Stepper(steps)
    for step in stepper:
        if isinstance(step, Lookup):
            stepper.answer = await lookup(step.host, step.port)
        elif isinstance(step, Dial):
            at.label = step.label
            at.sock = await _dial(step)
            if step.proxy.proxy_protocol is not None:
                header = proxy_header(at.sock, step.proxy.proxy_protocol)
                await loop.sock_sendall(at.sock, header)
        elif isinstance(step, NextHop):
            if deadline is not None:
                deadline.reschedule(loop.time() + timeout)
            at.enter(step, bridge)
        elif step is READ:
            stepper.answer = await _read_event(at.connected, at.link)
        else:
            assert isinstance(step, bytes)
            await loop.sock_sendall(at.connected, at.link.outgoing(step))
    return stepper.result


async def _dial(step: Dial) -> socket.socket:
    try:
        return await connect_first(step.targets)
    except (OSError, Socks5Error) as exc:  # the proxy is unreachable: an OSError, no reply
        raise unreachable(exc, step.label) from exc


async def through_chain(
    chain: list[Proxy], command: Command, host: str, port: int, timeout: float
) -> tuple[socket.socket, Link, Address]:
    """Walk `chain` (`route.walk`), connecting to the first proxy and each handshake within
    `timeout` seconds. Returns the socket, the last handshake's link and the (first) reply's
    address. A hop with per-message protection carries the next hops inside it (`bridges.bridge`).
    """
    at = Position()
    with at.given_up_on_failure(timeout):
        async with asyncio.timeout(timeout) as deadline:
            bound = await drive(walk(chain, command, host, port), at, deadline, timeout)
    return at.connected, at.link, at.reply_address(bound)
