"""The least a Python SOCKS5 server can do per connection: the ceiling socks5d is measured against.

Not a product and not used by socks5d: a CONNECT-only, no-auth, IPv4-only SOCKS5 server with
no rules, limits, timeouts or log, in two forms, to measure what Python and the event loop
cost per connection before any feature is paid for:

- `protocol`: asyncio protocols and transports (uvloop's are C): the handshake in
  `data_received`, the destination opened with `loop.create_connection`, the tunnel relayed
  transport to transport with pause/resume reading as backpressure.
- `coroutine`: one task per connection awaiting `sock_recv`/`sock_sendall`/`sock_connect`, the
  shape of socks5d's session. It also accepts RFC 1929 username/password (any name and
  password, no check): the floor of what a login costs, one round trip more.

    python3 -m bench.ceiling protocol 127.0.0.1:PORT [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
from typing import Any

_METHOD_NONE = b"\x05\x00"
_USERPASS = 0x02
_METHOD_USERPASS = b"\x05\x02"
_LOGIN_OK = b"\x01\x00"
_REPLY_OK = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"


class _Pipe(asyncio.Protocol):
    """One side of a tunnel: what it reads is written to `peer`."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.peer: Any = None
        self.pending = b""
        self.eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def link(self, peer: Any) -> None:
        """From now on write to `peer`, first what came before it."""
        self.peer = peer
        if self.pending:
            peer.write(self.pending)
        if self.eof:
            peer.write_eof()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending += data
        else:
            self.peer.write(data)

    def eof_received(self) -> bool:
        if self.peer is None:
            self.eof = True
        elif self.peer.can_write_eof():
            self.peer.write_eof()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()


class _Client(_Pipe):
    """The client's side: greeting, request, then a pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = b""
        self.stage = 0

    def data_received(self, data: bytes) -> None:
        if self.stage == 2:
            super().data_received(data)
            return
        self.buffer += data
        if self.stage == 0:
            if len(self.buffer) < 2 or len(self.buffer) < 2 + self.buffer[1]:
                return
            self.buffer = self.buffer[2 + self.buffer[1] :]
            self.transport.write(_METHOD_NONE)
            self.stage = 1
        if self.stage == 1 and len(self.buffer) >= 10:
            host = socket.inet_ntoa(self.buffer[4:8])
            (port,) = struct.unpack("!H", self.buffer[8:10])
            self.buffer = self.buffer[10:]
            self.stage = 2
            self.transport.pause_reading()
            asyncio.get_running_loop().create_task(self._connect(host, port))

    async def _connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, outbound = await loop.create_connection(_Pipe, host, port)
        except OSError:
            self.transport.close()
            return
        outbound.link(self.transport)
        self.transport.write(_REPLY_OK)
        self.pending, self.buffer = self.buffer, b""
        self.link(outbound.transport)
        self.transport.resume_reading()


async def _coroutine_session(client: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        greeting = await loop.sock_recv(client, 4096)
        if _USERPASS in greeting[2:]:  # RFC 1929: any name and password are accepted here
            await loop.sock_sendall(client, _METHOD_USERPASS)
            await loop.sock_recv(client, 4096)
            await loop.sock_sendall(client, _LOGIN_OK)
        else:
            await loop.sock_sendall(client, _METHOD_NONE)
        request = await loop.sock_recv(client, 4096)
        host = socket.inet_ntoa(request[4:8])
        (port,) = struct.unpack("!H", request[8:10])
        outbound = socket.socket()
        outbound.setblocking(False)
        await loop.sock_connect(outbound, (host, port))
        await loop.sock_sendall(client, _REPLY_OK)
        del greeting
    except OSError:
        client.close()
        return
    client_t, client_p = await loop.connect_accepted_socket(_Pipe, client)
    out_t, out_p = await loop.connect_accepted_socket(_Pipe, outbound)
    client_p.link(out_t)
    out_p.link(client_t)


async def _serve(form: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    if form == "protocol":
        server = await loop.create_server(_Client, host, port, backlog=1024)
    else:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
        listener.setblocking(False)
        sessions: set[asyncio.Task[None]] = set()
        while True:
            client, _ = await loop.sock_accept(listener)
            task = loop.create_task(_coroutine_session(client))
            sessions.add(task)
            task.add_done_callback(sessions.discard)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.ceiling")
    parser.add_argument("form", choices=["protocol", "coroutine"])
    parser.add_argument("listen", help="HOST:PORT")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(_serve(args.form, host, int(port)))


if __name__ == "__main__":
    main()
