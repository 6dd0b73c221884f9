"""The client's two faces behind one asyncio interface, so a test of what both do is written
once and run per face (conftest.py's `face` fixture): "aio" drives `socks5d.client`
(streams), "sync" drives `socks5d.client.sync` (blocking sockets, on a worker thread so the
event loop and the test's helpers keep running).

    conn = await face.open_connection(host, port, proxy=url)   # a Conn over either
    assert await conn.round_trip(b"data") == b"data"
    binding = await face.open_bind("127.0.0.1", 0, proxy=url)
    async with await face.open_udp(proxy=url) as udp: ...

What only one face has (`connect()`'s non-blocking socket, `accept_socket()`,
`create_connection()`) is tested in test_aio.py and test_sync.py.
"""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Any

from socks5d.client import aio, sync
from socks5d.client.route import HostPort

from .conftest import IO_TIMEOUT, read_until_eof, recv_exactly

FACES = ("aio", "sync")


class Conn:
    """A connection through the proxy: asyncio streams (aio) or a blocking socket (sync)."""

    def __init__(
        self,
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._streams = streams
        self._sock = sock
        if sock is not None:
            sock.settimeout(IO_TIMEOUT)

    @property
    def family(self) -> int:
        """The address family of the socket underneath."""
        if self._streams is not None:
            return int(self._streams[1].get_extra_info("socket").family)
        assert self._sock is not None
        return int(self._sock.family)

    async def read_exactly(self, count: int) -> bytes:
        """Exactly `count` bytes."""
        if self._streams is not None:
            return await asyncio.wait_for(self._streams[0].readexactly(count), IO_TIMEOUT)
        return await asyncio.to_thread(recv_exactly, self._require_sock(), count)

    async def round_trip(self, data: bytes) -> bytes:
        """Send `data`, half-close, and read until EOF; closes the connection."""
        if self._streams is not None:
            reader, writer = self._streams
            try:
                writer.write(data)
                await writer.drain()
                writer.write_eof()
                return await asyncio.wait_for(reader.read(), IO_TIMEOUT)
            finally:
                await self.close()
        sock = self._require_sock()

        def send_and_read() -> bytes:
            with sock:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                return read_until_eof(sock)

        return await asyncio.to_thread(send_and_read)

    async def read_to_eof(self) -> bytes:
        """Everything until the other side closes; closes the connection."""
        if self._streams is not None:
            try:
                return await asyncio.wait_for(self._streams[0].read(), IO_TIMEOUT)
            finally:
                await self.close()
        with self._require_sock() as sock:
            return await asyncio.to_thread(read_until_eof, sock)

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            writer.close()
            await writer.wait_closed()
        elif self._sock is not None:
            self._sock.close()

    def _require_sock(self) -> socket.socket:
        assert self._sock is not None
        return self._sock


class FaceBinding:
    """A BIND in progress, of either face: `address`, `peer`, `await accept()`."""

    def __init__(self, binding: aio.Binding | sync.Binding) -> None:
        self._binding = binding

    @property
    def address(self) -> HostPort:
        return self._binding.address

    @property
    def peer(self) -> HostPort | None:
        return self._binding.peer

    async def accept(self, timeout: float | None = None) -> Conn:
        if isinstance(self._binding, aio.Binding):
            return Conn(streams=await self._binding.accept(timeout=timeout))
        return Conn(sock=await asyncio.to_thread(self._binding.accept, timeout))


class FaceUdp:
    """A UDP association of either face; an async context manager that closes it."""

    def __init__(self, udp: aio.UdpEndpoint | sync.UdpEndpoint) -> None:
        self._udp = udp

    async def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        if isinstance(self._udp, aio.UdpEndpoint):
            await self._udp.sendto(data, address)
        else:
            await asyncio.to_thread(self._udp.sendto, data, address)

    async def recvfrom(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]]:
        if isinstance(self._udp, aio.UdpEndpoint):
            return await self._udp.recvfrom(timeout=timeout)
        return await asyncio.to_thread(self._udp.recvfrom, timeout)

    async def close(self) -> None:
        if isinstance(self._udp, aio.UdpEndpoint):
            await self._udp.close()
        else:
            self._udp.close()

    async def __aenter__(self) -> FaceUdp:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class Face:
    """One face of the client, `name` "aio" or "sync", with asyncio calls for both."""

    def __init__(self, name: str) -> None:
        assert name in FACES
        self.name = name

    def __repr__(self) -> str:
        return self.name

    async def open_connection(self, host: str, port: int, *, proxy: Any) -> Conn:
        """CONNECT: `aio.open_connection`, or `sync.connect`."""
        if self.name == "aio":
            return Conn(streams=await aio.open_connection(host, port, proxy=proxy))
        return Conn(sock=await asyncio.to_thread(sync.connect, host, port, proxy=proxy))

    async def open_bind(self, host: str, port: int, *, proxy: Any) -> FaceBinding:
        if self.name == "aio":
            return FaceBinding(await aio.open_bind(host, port, proxy=proxy))
        return FaceBinding(await asyncio.to_thread(sync.open_bind, host, port, proxy=proxy))

    async def open_udp(self, *, proxy: Any) -> FaceUdp:
        if self.name == "aio":
            return FaceUdp(await aio.open_udp(proxy=proxy))
        return FaceUdp(await asyncio.to_thread(sync.open_udp, proxy=proxy))
