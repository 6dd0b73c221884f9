"""The anyio driver of a walk through a chain of proxies (`route.walk`), for asyncio and
trio alike: raw non-blocking sockets waited on with anyio (`wait_readable`/`wait_writable`),
names looked up on a worker thread, the first proxy's addresses raced as `net.connect_first`
does. `anyio.py` (CONNECT, BIND) and `anyio_udp.py` (UDP ASSOCIATE) drive their walks here.
"""

from __future__ import annotations

import os
import socket

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import SocketStream

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
from socks5d.client.sync import thread_bridge
from socks5d.client.wire import (
    proxy_header,
    read_once,
)
from socks5d.errors import HostUnreachable, Socks5Error, error_for_oserror
from socks5d.net import (
    ATTEMPT_DELAY,
    IN_PROGRESS,
    SocketAddress,
    Target,
    lookup_blocking,
    most_telling,
    numeric_target,
)
from socks5d.proto import Address, Command, Event
from socks5d.proxies import Proxy


async def lookup(host: str, port: int) -> list[Target]:
    """`net.lookup` without asyncio: the same question to the system's resolver, on a worker
    thread (given up on, not waited for, when the walk's deadline passes)."""
    if (target := numeric_target(host, port)) is not None:
        return [target]
    return await anyio.to_thread.run_sync(lookup_blocking, host, port, abandon_on_cancel=True)


async def _attempt(family: socket.AddressFamily, address: SocketAddress) -> socket.socket:
    """One non-blocking connect: connect_ex, wait writable, SO_ERROR (`net.connect_numeric`)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        error = sock.connect_ex(address)
        if error in IN_PROGRESS:
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_first(targets: list[Target]) -> socket.socket:
    """`net.connect_first` under anyio: the first of `targets` to answer wins.

    RFC 8305 §5: a new attempt "every 250 milliseconds" (`ATTEMPT_DELAY`) or as soon as the
    previous one fails; the rest are cancelled and closed.

    Raises:
        Socks5Error: the most telling error of all the failed attempts.
    """
    if len(targets) == 1:  # nothing to race: no task, no timer
        try:
            return await _attempt(*targets[0])
        except OSError as exc:
            raise error_for_oserror(exc) from exc
    winners: list[socket.socket] = []
    errors: list[Socks5Error] = []

    async def attempt(target: Target, failed: anyio.Event) -> None:
        try:
            winners.append(await _attempt(*target))
        except OSError as exc:
            errors.append(error_for_oserror(exc))
            failed.set()
            return
        group.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            for target in targets:
                failed = anyio.Event()
                group.start_soon(attempt, target, failed)
                with anyio.move_on_after(ATTEMPT_DELAY):
                    await failed.wait()
    except BaseException:
        for sock in winners:
            sock.close()
        raise
    for extra in winners[1:]:
        extra.close()
    if winners:
        return winners[0]
    if not errors:
        raise HostUnreachable("no address to connect to")
    raise most_telling(errors)


async def _dial(step: Dial) -> socket.socket:
    try:
        return await connect_first(step.targets)
    except OSError as exc:  # the proxy itself is unreachable: an OSError, not a reply
        raise unreachable(exc, step.label) from exc


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await anyio.wait_writable(sock)


async def _read_event(sock: socket.socket, link: Link) -> Event:
    """The proxy's next message (see `wire.read_once`: never a byte past it)."""
    while True:
        if link.protection is not None:
            link.protection.check()  # before waiting: a bad token may be all there was
        await anyio.wait_readable(sock)
        try:
            event = read_once(sock, link)
        except BlockingIOError:
            continue
        if event is not None:
            return event


def bridge(sock: socket.socket, link: Link) -> socket.socket:
    """A non-blocking local socket standing for the protected connection `sock` (RFC 1961
    §5): the blocking client's bridge, a thread with the relay's protected engine, which
    needs no event loop of ours (so it serves trio too)."""
    mine = thread_bridge(sock, link)
    mine.setblocking(False)
    return mine


async def drive(
    steps: Walk, at: Position, deadline: anyio.CancelScope | None = None, timeout: float = 0.0
) -> Address:
    """Do what `steps` (a walk or a handshake) ask, on `at`'s socket; with `deadline`, each
    hop gets `timeout` seconds from its start.
    """
    stepper = Stepper(steps)
    for step in stepper:
        if isinstance(step, Lookup):
            stepper.answer = await lookup(step.host, step.port)
        elif isinstance(step, Dial):
            at.label = step.label
            at.sock = await _dial(step)
            if step.proxy.proxy_protocol is not None:
                await _send_all(at.sock, proxy_header(at.sock, step.proxy.proxy_protocol))
        elif isinstance(step, NextHop):
            if deadline is not None:
                deadline.deadline = anyio.current_time() + timeout
            at.enter(step, bridge)
        elif step is READ:
            stepper.answer = await _read_event(at.connected, at.link)
        else:
            assert isinstance(step, bytes)
            await _send_all(at.connected, at.link.outgoing(step))
    return stepper.result


async def through_chain(
    chain: list[Proxy], command: Command, host: str, port: int, timeout: float
) -> tuple[socket.socket, Link, Address]:
    """Walk `chain` (`route.walk`), connecting to the first proxy and each handshake within
    `timeout` seconds. Returns the non-blocking socket, the last handshake's link and the
    (first) reply's address.
    """
    at = Position()
    with at.given_up_on_failure(timeout):
        with anyio.fail_after(timeout) as deadline:
            bound = await drive(walk(chain, command, host, port), at, deadline, timeout)
    return at.connected, at.link, at.reply_address(bound)


async def stream_of(sock: socket.socket) -> SocketStream:
    """`sock` as an anyio stream, which owns it from here on."""
    try:
        return await SocketStream.from_socket(sock)
    except BaseException:
        sock.close()
        raise


# --- CONNECT and BIND -------------------------------------------------------------------------
