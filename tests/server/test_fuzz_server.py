"""A hundred thousand random and mutated handshakes against one running server.

The inputs (tests/server/handshake_fuzzer.py, one seeded generator): SOCKS5 greetings of
every kind, RFC 1929 logins (right and wrong), requests of every command and ATYP, SOCKS4 and
SOCKS4a requests; mostly mutated: truncated, bits flipped, bytes inserted, deleted or
duplicated, length octets replaced, two handshakes glued, or plain noise; sent in one to four
writes. A subprocess sends them (its own CPU), 1000 connections at a time, each reading until
EOF or giving up after `READ_TIMEOUT`.

Nothing may leave the machine: the rules block by default and pass only the test's own sinks
on 127.0.0.1 and ::1 (a name matches no network rule, so it is refused before any lookup).
Afterwards the server is alive and serving, every connection was logged once, no session,
task or descriptor is left.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from conftest import START_TIMEOUT, RunningServer
from socks5d.config import build_config
from socks5d.net import unmapped
from socks5d.proto import Address, Command, Reply
from socks5d.server import Server
from socks5d.server.accesslog import ACCESS_LOGGER
from socks5d.users import UserDatabase, hash_password

from .raw_client import loopback_address, open_request, recv_exactly

FUZZ_CONNECTIONS = 100_000
#: Fixed, so a failure can be replayed byte for byte.
SEED = 19281929
CONCURRENCY = 1000
#: How long a fuzz connection waits for the server to close it. Only a UDP association
#: (which lasts as long as its control connection) should need it: every other handshake
#: ends by the server's own deadlines (0.5 s), long before.
READ_TIMEOUT = 3.0
DRIVER = Path(__file__).with_name("handshake_fuzzer.py")
#: Cheapest scrypt: the fuzz checks thousands of passwords, the format is tested elsewhere.
CHEAP_HASH = (2, 1, 1)
BIG = 1_000_000
#: The normal client after the fuzz: the only one the rules let reach `listener`.
CHECKER_CLIENT = "127.0.0.2"


def _open_descriptors(running: RunningServer) -> int:
    """This process's descriptors, less the empty pipes the relay engine keeps for reuse."""
    pooled = getattr(running.server.relay_engine, "pooled_pipes", 0)
    return len(os.listdir("/proc/self/fd")) - 2 * pooled


class Sinks:
    """Where fuzzed requests may lead: a listener on 127.0.0.1 and one on ::1 that accept and
    close (in the driver process), and a port of 127.0.0.1 bound but not listening (refused).
    """

    def __init__(self, stack: ExitStack) -> None:
        self.ipv4 = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        self.ipv6 = stack.enter_context(socket.create_server(("::1", 0), family=socket.AF_INET6))
        # Bound without SO_REUSEADDR: nobody else can take 127.0.0.1 on this port meanwhile.
        self.closed = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        self.closed.bind(("127.0.0.1", 0))

    @property
    def listening(self) -> list[socket.socket]:
        return [self.ipv4, self.ipv6]

    @property
    def addresses(self) -> list[Address]:
        return [loopback_address(sock) for sock in (self.ipv4, self.ipv6, self.closed)]

    def rules(self, checker: Address) -> dict[str, object]:
        """Block everything but exactly these addresses and ports; and `checker` for the
        client that checks the server afterwards (127.0.0.2, where no fuzz comes from).
        """
        ipv4_ports = [str(self.ipv4.getsockname()[1]), str(self.closed.getsockname()[1])]
        return {
            "rules": {"socks_default": "block"},
            "socks": [
                {"action": "pass", "to": ["127.0.0.1/32"], "port": ipv4_ports},
                {"action": "pass", "to": ["::1/128"], "port": [str(self.ipv6.getsockname()[1])]},
                {
                    "action": "pass",
                    "from": [f"{CHECKER_CLIENT}/32"],
                    "to": [f"{checker.host}/32"],
                    "port": [str(checker.port)],
                },
            ],
        }


@pytest.fixture
def sinks() -> Iterator[Sinks]:
    with ExitStack() as stack:
        yield Sinks(stack)


@pytest.fixture
def fuzz_server(sinks: Sinks, listener: socket.socket) -> Iterator[RunningServer]:
    """No-auth and username/password (alice, secret; failures never blocked),
    SOCKS4 on, short deadlines, limits out of the way, only the sinks reachable.
    """
    settings = {
        "timeouts": {"handshake": 0.5, "connect": 0.5},
        "bind": {"timeout": 0.5, "address": "127.0.0.1"},
        "udp": {"address": "127.0.0.1"},
        "limits": {
            "max_sessions": BIG,
            "max_sessions_per_client": BIG,
            "max_handshakes": BIG,
            "max_handshakes_per_client": BIG,
            "max_udp_associations_per_client": BIG,
            "max_bind_listeners_per_client": BIG,
            "auth_failures_before_block": BIG,
        },
        **sinks.rules(loopback_address(listener)),
    }
    config = build_config(
        settings, listen=["127.0.0.1:0"], auth=["none", "userpass"], users="users"
    )
    users = UserDatabase({"alice": hash_password("secret", CHEAP_HASH)})
    running = RunningServer(Server(config, users=users)).start()
    try:
        yield running
    finally:
        running.stop()


def _run_driver(server: RunningServer, sinks: Sinks) -> dict[str, object]:
    endpoints = [f"[{a.host}]:{a.port}" for a in sinks.addresses]
    command = [
        sys.executable,
        "-W",
        "error::ResourceWarning",
        str(DRIVER),
        f"--server={server.host}:{server.port}",
        f"--count={FUZZ_CONNECTIONS}",
        f"--seed={SEED}",
        f"--concurrency={CONCURRENCY}",
        f"--read-timeout={READ_TIMEOUT}",
        *(f"--sink={endpoint}" for endpoint in endpoints),
        *(f"--sink-fd={sock.fileno()}" for sock in sinks.listening),
    ]
    completed = subprocess.run(
        command,
        pass_fds=[sock.fileno() for sock in sinks.listening],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    stats: dict[str, object] = json.loads(completed.stdout)
    return stats


#: What connecting to an unspecified address reaches (Linux): this host's loopback.
_REACHED = {4: ipaddress.IPv4Address("127.0.0.1"), 6: ipaddress.IPv6Address("::1")}


def _endpoint(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    """The address and port a destination reaches (::ffff:a.b.c.d is a.b.c.d, 0.0.0.0 is
    127.0.0.1, :: is ::1); None for a name."""
    host, _, port = text.rpartition(":")
    try:
        address = unmapped(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None
    if address.is_unspecified:
        address = _REACHED[address.version]
    return address, int(port)


@pytest.mark.timeout(300)
def test_a_hundred_thousand_fuzzed_handshakes_leave_the_server_serving_and_clean(
    fuzz_server: RunningServer,
    sinks: Sinks,
    listener: socket.socket,
    settled_active_sessions,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server's records are collected by the fixture; pytest need not keep 100,000 more.
    monkeypatch.setattr(logging.getLogger(ACCESS_LOGGER), "propagate", False)
    caplog.set_level(logging.WARNING)
    descriptors_before = _open_descriptors(fuzz_server)

    started = time.monotonic()
    stats = _run_driver(fuzz_server, sinks)
    duration = time.monotonic() - started
    print(f"{FUZZ_CONNECTIONS} fuzzed handshakes in {duration:.1f} s: {stats}")
    assert stats["sent"] == FUZZ_CONNECTIONS

    # Alive and serving.
    client, reply = open_request(
        fuzz_server, Command.CONNECT, loopback_address(listener), source=CHECKER_CLIENT
    )
    with client:
        assert reply.reply == Reply.SUCCEEDED
        with listener.accept()[0] as destination:
            client.sendall(b"still serving")
            assert recv_exactly(destination, 13) == b"still serving"
            destination.sendall(b"yes")
            assert recv_exactly(client, 3) == b"yes"

    # Every connection was taken (no limit in the way) and logged exactly once.
    records = fuzz_server.wait_records(FUZZ_CONNECTIONS + 1, timeout=START_TIMEOUT * 3)
    assert len(records) == FUZZ_CONNECTIONS + 1
    assert not fuzz_server.server.refused
    outcomes = Counter(str(record["outcome"]).partition(":")[0] for record in records)
    assert outcomes["internal error"] == 0, outcomes
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []

    # Whatever passed the rules went to a sink (a UDP ASSOCIATE names no destination).
    allowed = {_endpoint(str(address)) for address in sinks.addresses}
    allowed.add(_endpoint(str(loopback_address(listener))))  # the checker's
    passed = [
        record
        for record in records
        if record["command"] in ("connect", "bind")
        and record["rule"] is None
        and record["outcome"] != "bad destination name"  # refused before the rules
    ]
    assert passed, "no fuzzed request passed the rules: the sinks were never reached"
    assert {_endpoint(record["destination"]) for record in passed} <= allowed

    # The server ended every connection by itself, except UDP associations, which last as
    # long as their control connection.
    endings = stats["endings"]
    assert isinstance(endings, dict)
    associations = sum(
        record["command"] == "udp_associate" and record["reply"] == "succeeded"
        for record in records
    )
    assert endings.get("timeout", 0) == associations

    assert settled_active_sessions(fuzz_server) == 0
    assert _open_descriptors(fuzz_server) == descriptors_before
