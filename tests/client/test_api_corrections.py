"""What a new user expects of the client's API: errors that name the hop and the destination
(the same words from both faces and `socks5d connect`, errno kept on OS-level failures), TLS
to the destination from `open_connection`, `sync.create_connection` as
`socket.create_connection` behaves, `Binding.address` as a `(host, port)` tuple, and a clear
error for `proxy=None`.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable

import pytest

from conftest import RunningServer
from socks5d.client import aio, sync
from socks5d.errors import ConnectionRefused

from .conftest import IO_TIMEOUT, closed_port
from .faces import Face

pytestmark = pytest.mark.timeout(30)


async def test_a_hop_that_replies_a_failure_is_named_with_the_destination(
    face: Face, start_server: Callable[..., RunningServer]
) -> None:
    first, second = start_server(), start_server()
    port = closed_port()
    with pytest.raises(ConnectionRefused) as raised:
        await face.open_connection("127.0.0.1", port, proxy=[first.url(), second.url()])
    assert str(raised.value) == (
        f"proxy 2 of 2 (127.0.0.1:{second.port}) replied X'05' Connection refused "
        f"for 127.0.0.1:{port}"
    )


async def test_one_proxy_is_named_without_a_position(
    face: Face, socks_server: RunningServer
) -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefused, match=re.escape(f"for 127.0.0.1:{port}")) as raised:
        await face.open_connection("127.0.0.1", port, proxy=socks_server.url())
    assert str(raised.value).startswith(f"proxy 127.0.0.1:{socks_server.port} replied X'05'")


async def test_an_unreachable_first_proxy_keeps_its_errno(
    face: Face, socks_server: RunningServer
) -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefusedError) as raised:
        await face.open_connection(
            "example.org", 443, proxy=[f"socks5h://127.0.0.1:{port}", socks_server.url()]
        )
    assert raised.value.errno == errno.ECONNREFUSED
    assert str(raised.value) == (
        f"[Errno {errno.ECONNREFUSED}] could not connect to proxy 1 of 2 (127.0.0.1:{port}): "
        f"{raised.value.strerror.rpartition(': ')[2]}"
    )
    assert raised.value.strerror.startswith("could not connect to proxy 1 of 2 ")
    assert not isinstance(raised.value, ConnectionRefused)  # the proxy is unreachable, no reply


async def test_a_refused_login_names_the_hop(face: Face, start_server) -> None:
    server = start_server(users={"alice": "secret"})
    with pytest.raises(Exception, match=rf"^proxy 127\.0\.0\.1:{server.port}: .*example\.org:80"):
        await face.open_connection(
            "example.org", 80, proxy=server.url("socks5h", user="alice", password="wrong")
        )


def test_socks5d_connect_prints_the_same_message(start_server) -> None:
    first, second = start_server(), start_server()
    port = closed_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "socks5d",
            "connect",
            "--proxy",
            first.url(),
            "--proxy",
            second.url(),
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert (
        f"proxy 2 of 2 (127.0.0.1:{second.port}) replied X'05' Connection refused "
        f"for 127.0.0.1:{port}"
    ) in done.stderr


@pytest.mark.parametrize("bad", [None, 1080, b"socks5://127.0.0.1:1080"])
def test_a_proxy_that_is_no_proxy_is_a_clear_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match=r"proxy must be a proxy URL .* or a Proxy, not "):
        sync.connect("example.org", 80, proxy=bad)  # type: ignore[arg-type]


def test_create_connection_leaves_its_timeout_set_and_binds_the_source(
    socks_server: RunningServer, tcp_echo
) -> None:
    host, port = tcp_echo()
    with socket.socket() as probe:  # a free port on a second loopback address
        probe.bind(("127.0.0.2", 0))
        source = probe.getsockname()
    with sync.create_connection(
        (host, port), timeout=4.5, source_address=source, proxy=socks_server.url()
    ) as sock:
        assert sock.gettimeout() == 4.5
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    record = socks_server.wait_records(1)[0]
    assert record["client"] == f"{source[0]}:{source[1]}"


def test_create_connection_without_a_timeout_is_blocking(
    socks_server: RunningServer, tcp_echo
) -> None:
    with sync.create_connection(tcp_echo(), None, proxy=socks_server.url()) as sock:
        assert sock.gettimeout() is None


async def test_binding_address_is_a_host_port_tuple(face: Face, socks_server) -> None:
    binding = await face.open_bind("127.0.0.1", 0, proxy=socks_server.url())
    host, port = binding.address
    assert (type(host), type(port)) == (str, int)
    reader, writer = await asyncio.open_connection(*binding.address)
    try:
        conn = await binding.accept(timeout=IO_TIMEOUT)
        assert binding.peer == writer.get_extra_info("sockname")[:2]
        await conn.close()
    finally:
        writer.close()
        await writer.wait_closed()
    del reader


async def test_open_connection_speaks_tls_to_the_destination_and_checks_its_name(
    socks_server: RunningServer, tmp_path
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    origin = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = origin.sockets[0].getsockname()[1]
    async with origin:
        reader, writer = await aio.open_connection(
            "localhost", port, proxy=socks_server.url("socks5h"), ssl=client_context
        )
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), IO_TIMEOUT) == b"hello"
        assert writer.get_extra_info("peercert")["subjectAltName"] == (("DNS", "localhost"),)
        writer.close()
        with pytest.raises(ssl.SSLCertVerificationError):  # the name checked: not "localhost"
            await aio.open_connection(
                "localhost",
                port,
                proxy=socks_server.url("socks5h"),
                ssl=client_context,
                server_hostname="other.test",
            )
