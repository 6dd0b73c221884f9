"""Dante's socksify carrying programs that know nothing of SOCKS over UDP ASSOCIATE and BIND,
through socks5d and through Dante's sockd.

The programs (tests/interop/programs/) use plain sockets: socksify's preloaded library turns
sendto()/recvfrom() into UDP ASSOCIATE and bind()/listen()/accept() into BIND. Every address
involved is loopback, which socksify would reach directly but for SOCKS_AUTOADD_LANROUTES=no,
so each test checks the proxy's own log as well as the program's output.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TOOL_TIMEOUT, Endpoint, clean_env, run_tool, socksify_env
from .proxies import Crossing, ProxyUnderTest, write_socksify_conf

PROGRAMS = Path(__file__).parent / "programs"
UDP_CLIENT = PROGRAMS / "udp_echo_client.py"
BIND_SERVER = PROGRAMS / "bind_accept.py"
#: What the peer sends to the BIND program; the program answers it upper-cased.
PEER_PAYLOAD = b"hello from the peer that connected to the BIND address\n"


def socksify_udp_round_trips(proxy: ProxyUnderTest, echo: Endpoint, conf_path: Path) -> int:
    """Run the UDP program under socksify through `proxy` to `echo`; check that every answer
    came back as from the echo server itself; return the payload bytes each way."""
    conf = write_socksify_conf(conf_path, proxy)
    messages = ["first datagram", "second, a little longer, datagram"]
    command = [sys.executable, str(UDP_CLIENT), echo.host, str(echo.port), *messages]
    result = run_tool(["socksify", *command], env=socksify_env(conf))
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    # The relay unwraps the answers: the program sees them come from the echo server itself.
    assert answers == [{"data": text, "from": [echo.host, echo.port]} for text in messages]
    return sum(len(text) for text in messages)


def test_socksify_carries_a_udp_program_over_udp_associate(proxy, udp_echoes, tmp_path) -> None:
    echo = udp_echoes["127.0.0.1"]
    payload = socksify_udp_round_trips(proxy, echo, tmp_path / "socks.conf")
    assert proxy.udp_relayed(echo) == Crossing(bytes_up=payload, bytes_down=payload)


@pytest.mark.parametrize(
    ("proxyprotocol", "protocol"), [("socks_v5", "socks5"), ("socks_v4", "socks4")]
)
def test_socksify_turns_a_listening_program_into_a_bind(
    proxy, tmp_path, proxyprotocol, protocol
) -> None:
    if shutil.which("socksify") is None:
        pytest.fail("socksify is not installed; scripts/test.sh installs it", pytrace=False)
    conf = write_socksify_conf(tmp_path / "socks.conf", proxy, proxyprotocol=proxyprotocol)
    stderr_path = tmp_path / "bind_accept.stderr"
    with (
        stderr_path.open("wb") as stderr,
        subprocess.Popen(
            ["socksify", sys.executable, str(BIND_SERVER)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=clean_env(socksify_env(conf)),
        ) as program,
    ):
        try:
            # getsockname() under socksify: the address the proxy listens on for us
            host, port = _first_line(program).split()
            with socket.create_connection((host, int(port)), timeout=TOOL_TIMEOUT) as peer:
                peer.sendall(PEER_PAYLOAD)
                peer.shutdown(socket.SHUT_WR)  # the program answers at EOF
                answer = _read_to_eof(peer)
                peer_host, peer_port = peer.getsockname()
            program.wait(TOOL_TIMEOUT)
            assert program.stdout is not None
            accepted_from = program.stdout.read().decode().split()
        finally:
            if program.poll() is None:
                program.kill()
                program.wait()
    assert program.returncode == 0, stderr_path.read_text()
    assert host == "127.0.0.1"
    assert answer == PEER_PAYLOAD.upper()
    # accept() returned the peer's address: the proxy's second reply carried it
    assert accepted_from == [peer_host, str(peer_port)]
    crossing = proxy.bound(Endpoint(peer_host, peer_port), protocol=protocol)
    assert crossing == Crossing(bytes_up=len(PEER_PAYLOAD), bytes_down=len(PEER_PAYLOAD))


def _first_line(program: subprocess.Popen[bytes]) -> str:
    """The program's first line of output, waiting at most TOOL_TIMEOUT for it."""
    assert program.stdout is not None
    ready, _, _ = select.select([program.stdout], [], [], TOOL_TIMEOUT)
    assert ready, "the program printed no address"
    line = program.stdout.readline().decode()
    assert line, f"the program exited without printing an address (status {program.wait()})"
    return line


def _read_to_eof(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received
