"""Hostile or broken clients in bulk: the server keeps serving and leaks nothing."""

from __future__ import annotations

import os
import random
import socket
import struct

from conftest import RunningServer
from socks5d.proto import AuthMethod, Reply

from .raw_client import (
    connect,
    greeting_bytes,
    loopback_address,
    open_tunnel,
    read_until_eof,
    recv_exactly,
)

GARBAGE_CONNECTIONS = 500
GARBAGE_KINDS = 6
#: Fixed, so a failure can be replayed byte for byte.
SEED = 1928


def _open_descriptors(running: RunningServer) -> int:
    """This process's descriptors, less the empty pipes the relay engine keeps for reuse."""
    pooled = getattr(running.server.relay_engine, "pooled_pipes", 0)
    return len(os.listdir("/proc/self/fd")) - 2 * pooled


def _garbage(rng: random.Random, index: int) -> bytes:
    """Bytes that are no valid handshake, cut at various depths of the protocol."""
    noise = rng.randbytes(rng.randrange(1, 300))
    kind = index % GARBAGE_KINDS
    if kind == 0:  # anything at all
        return noise
    if kind == 1:  # a SOCKS5 version octet, then anything
        return b"\x05" + noise
    if kind == 2:  # a valid greeting, then a broken request
        return greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED) + noise
    if kind == 3:  # a greeting that promises more methods than it sends
        return bytes([5, 255]) + noise[:200]
    if kind == 4:  # a request header with an unknown command, then anything
        command = rng.choice([0x00, 0x04, 0x09, 0xFF])
        address_type = rng.choice([0x00, 0x01, 0x03, 0x04, 0x05])
        header = bytes([5, command, 0, address_type])
        return greeting_bytes(AuthMethod.NO_AUTHENTICATION_REQUIRED) + header + noise
    return b""  # nothing


def _reset_on_close(sock: socket.socket) -> None:
    """Make close() send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_garbage_connections_leave_the_server_serving_with_no_session_or_descriptor_left(
    start_server, listener: socket.socket, settled_active_sessions
) -> None:
    # SOCKS4 off: random bytes starting 04 01 would be a CONNECT to a random address, and no
    # test may send traffic beyond loopback.
    # Handshake limits raised: every garbage connection must reach a session (the limits
    # have tests of their own).
    server = start_server(
        socks4=False,
        timeouts={"handshake": 0.5, "connect": 0.5},
        limits={"max_handshakes_per_client": GARBAGE_CONNECTIONS + 1},
    )
    descriptors_before = _open_descriptors(server)
    rng = random.Random(SEED)
    stalling: list[socket.socket] = []
    try:
        for index in range(GARBAGE_CONNECTIONS):
            sock = connect(server)
            sock.sendall(_garbage(rng, index))
            ending = (index // GARBAGE_KINDS) % 3  # every kind meets every ending
            if ending == 0:  # stays open until the server gives up on it
                stalling.append(sock)
                continue
            if ending == 1:
                _reset_on_close(sock)
            sock.close()

        # Served while hundreds of broken handshakes are still pending.
        client, reply = open_tunnel(server, loopback_address(listener))
        with client:
            assert reply.reply == Reply.SUCCEEDED
            destination, _ = listener.accept()
            with destination:
                client.sendall(b"still serving")
                assert recv_exactly(destination, 13) == b"still serving"
                destination.sendall(b"yes")
                assert recv_exactly(client, 3) == b"yes"

        for sock in stalling:  # each one ends with the server's FIN, at the latest on timeout
            read_until_eof(sock)
    finally:
        for sock in stalling:
            sock.close()

    records = server.wait_records(GARBAGE_CONNECTIONS + 1)
    assert len(records) == GARBAGE_CONNECTIONS + 1
    assert sum(record["reply"] == "succeeded" for record in records) == 1
    assert settled_active_sessions(server) == 0
    assert _open_descriptors(server) == descriptors_before
