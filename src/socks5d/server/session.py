"""One client connection: handshake (driving `proto.ServerConnection`), command, relay, log.

The single error boundary of the server is here: any `Socks5Error` raised while serving a
request becomes a reply carrying `exc.reply`, one log line, and a close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from socks5d import proto
from socks5d.errors import AuthFailed, CommandNotSupported, ProtocolError, Socks5Error
from socks5d.proto import AuthMethod, Command, CommandReply, Reply, State
from socks5d.server.accesslog import ACCESS_FIELDS, ACCESS_LOGGER
from socks5d.server.auth import choose_method
from socks5d.server.connect import open_outbound

if TYPE_CHECKING:
    from socks5d.server.listen import Server

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

#: Bytes asked for per read during the handshake.
HANDSHAKE_READ_SIZE = 4096


def format_peer(address: Any) -> str:
    """`host:port`, IPv6 in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _discard_unread(sock: socket.socket) -> None:
    """Read away what the client sent and nobody will read, so that close() sends FIN.

    Closing a socket with unread received data makes the kernel send RST, and an RST can
    destroy a reply the client has not read yet (a failure reply, or the tail of a tunnel).
    """
    try:
        for _ in range(16):  # bounded: a client that keeps sending gets its RST
            if not sock.recv(HANDSHAKE_READ_SIZE):
                break
    except OSError:
        pass  # EAGAIN: nothing more buffered; or the connection is already gone


class Session:
    """Serves one accepted client socket from greeting to close."""

    def __init__(self, server: Server, client: socket.socket, peer: Any, listener: str) -> None:
        self.server = server
        self.client = client
        self.connection = proto.ServerConnection()
        self.started = time.monotonic()
        self.record: dict[str, Any] = dict.fromkeys(ACCESS_FIELDS)
        self.record.update(client=format_peer(peer), listener=listener, bytes_up=0, bytes_down=0)

    async def run(self) -> None:
        """Serve the client; never raises except `CancelledError`."""
        upstream: socket.socket | None = None
        try:
            try:
                async with asyncio.timeout(self.server.config.timeouts.handshake):
                    request = await self._handshake()
            except TimeoutError:
                self.record["outcome"] = "handshake timeout"
                return
            if request is None:
                return
            self.record["command"] = request.command.name.lower()
            self.record["destination"] = str(request.destination)
            upstream = await self._serve_command(request)
            if upstream is not None:
                await self._relay(upstream)
        except ProtocolError as exc:
            self.record["outcome"] = f"protocol error: {exc}"
        except AuthFailed as exc:
            self.record["outcome"] = f"auth failed: {exc}"
        except OSError as exc:
            self.record["outcome"] = f"client error: {exc}"
        except Exception:  # a bug: log it whole, keep the server running
            log.exception("session %s crashed", self.record["client"])
            self.record["outcome"] = "internal error"
        finally:
            if upstream is not None:
                upstream.close()
            _discard_unread(self.client)
            self.client.close()
            self.record["duration"] = round(time.monotonic() - self.started, 6)
            access_log.info("session", extra={"fields": self.record})

    async def _send(self, message: proto.Event) -> None:
        data = self.connection.send(message)
        await asyncio.get_running_loop().sock_sendall(self.client, data)

    async def _handshake(self) -> proto.CommandRequest | None:
        """Negotiate and authenticate; return the request, or None if the session is over."""
        loop = asyncio.get_running_loop()
        connection = self.connection
        while True:
            try:
                event = connection.next_event()
            except ProtocolError as exc:
                if connection.state is State.REPLY:  # a malformed request still gets its REP
                    self.record["reply"] = exc.reply.name.lower()
                    await self._send(CommandReply(exc.reply))
                raise
            if event is proto.NEED_DATA:
                connection.receive_data(await loop.sock_recv(self.client, HANDSHAKE_READ_SIZE))
            elif isinstance(event, proto.Greeting):
                method = choose_method(event.methods, self.server.config.auth)
                await self._send(proto.MethodSelected(method))
                if method == AuthMethod.NO_ACCEPTABLE_METHODS:
                    offered = ",".join(f"{m:#04x}" for m in event.methods) or "none"
                    raise AuthFailed(f"no acceptable method (offered {offered})")
            elif isinstance(event, proto.UserPassAuth):
                self.record["user"] = event.username
                ok = await self.server.authenticator.verify(event.username, event.password)
                status = proto.UserPassStatus.SUCCESS if ok else proto.UserPassStatus.FAILURE
                await self._send(proto.AuthResult(status))
                if not ok:
                    raise AuthFailed(f"wrong username or password for {event.username!r}")
            elif isinstance(event, proto.CommandRequest):
                return event
            elif isinstance(event, proto.ConnectionClosed):
                self.record["outcome"] = "client closed during handshake"
                return None
            else:
                raise ProtocolError(f"unexpected {type(event).__name__}")

    async def _serve_command(self, request: proto.CommandRequest) -> socket.socket | None:
        """Carry out the request and send the reply; return the upstream socket on success."""
        try:
            if request.command != Command.CONNECT:
                raise CommandNotSupported(f"{request.command.name} is not supported")
            upstream = await open_outbound(
                request.destination, self.server.config.timeouts.connect, self.server.resolver
            )
        except Socks5Error as exc:
            self.record["reply"] = exc.reply.name.lower()
            self.record["outcome"] = str(exc)
            await self._send(CommandReply(exc.reply))
            return None
        try:
            bound = proto.Address.from_host(*upstream.getsockname()[:2])
            self.record["reply"] = Reply.SUCCEEDED.name.lower()
            await self._send(CommandReply(Reply.SUCCEEDED, bound))
        except BaseException:
            upstream.close()
            raise
        return upstream

    async def _relay(self, upstream: socket.socket) -> None:
        result = await self.server.relay_engine.relay(
            self.client,
            upstream,
            idle_timeout=self.server.config.timeouts.idle,
            early_data=self.connection.trailing_data,
        )
        self.record["bytes_up"] = result.bytes_up
        self.record["bytes_down"] = result.bytes_down
        self.record["outcome"] = result.reason
