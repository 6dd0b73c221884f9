"""Dante's socksify (libdsocks built with GSSAPI, preloaded) carrying unmodified programs
through socks5d with GSSAPI, at each protection level: clear (Dante's extension: nothing
encapsulated), integrity and confidentiality (every byte in RFC 1961 MTYP 3 tokens).

socks5d runs as a real `socks5d serve --auth gssapi --gssapi-keytab ... --gssapi-levels ...`
process (the CLI spellings), its access log read as text lines from stderr; the UDP tests use
the in-process server. Every destination is loopback, which socksify reaches directly unless
SOCKS_AUTOADD_LANROUTES=no, so each test checks the proxy's access record (user, level,
destination, byte counts) as well as the program's output.

Dante's client library cannot share one protected socket between threads: every program here
is single-threaded (curl; Python clients multiplexing with select()).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import select
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from interop.conftest import (
    BigBody,
    Endpoint,
    OriginServer,
    _write_big_body,
    clean_env,
    crossed_proxy,
    curl_command,
    only_record,
    serving,
    sha256_file,
)
from stderr_lines import StderrLines

from .dante import LEVELS, DanteGssapi, socksify_env
from .dante_build import write_socks_conf
from .realm import KerberosRealm
from .traffic import tcp_echo_server, udp_echo_server

#: Seconds for the server process to start, log a line, or exit after SIGTERM.
PROCESS_TIMEOUT = 10.0
#: Upper bound for one client program run through the proxy (each takes well under 2 s).
CLIENT_TIMEOUT = 20.0
#: The odd write sizes of the echo test, in order: single bytes, just over a page, just over
#: a token (65535), just over and under powers of two; 3,121,094 bytes in all.
ECHO_SIZES = (1, 3, 4093, 65537, 100003, 7, 262147, 1000003, 5, 31, 524287, 99991, 2, 1048573)
ECHO_SEED = 0x1961
#: Datagram payload sizes of the UDP test (one of them larger than a 9000-byte jumbo frame).
DATAGRAM_SIZES = (1, 1400, 9000, 30000)

#: A single-threaded echo client, run under socksify: connects to HOST PORT, writes one chunk
#: of each SIZE (deterministic bytes from SEED) while reading the echo in the same select()
#: loop (non-blocking socket), shuts down writing after the last chunk, reads until EOF, and
#: prints what it sent and received (counts and SHA-256) as JSON.
ECHO_CLIENT = r"""
import hashlib, json, random, select, socket, sys, time

host, port, seed, *sizes = sys.argv[1:]
rng = random.Random(int(seed))
chunks = [rng.randbytes(int(size)) for size in sizes]
deadline = time.monotonic() + 15.0
sent, received = hashlib.sha256(), hashlib.sha256()
sent_count = received_count = 0
sock = socket.create_connection((host, int(port)), timeout=10)
sock.setblocking(False)
pending, index, writing = b"", 0, True
while True:
    if not pending and index < len(chunks):
        pending, index = chunks[index], index + 1
    if writing and not pending:
        sock.shutdown(socket.SHUT_WR)
        writing = False
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        sys.exit(f"timed out: sent {sent_count}, received {received_count}")
    readable, writable, _ = select.select([sock], [sock] if pending else [], [], remaining)
    if writable:
        try:
            count = sock.send(pending)
        except BlockingIOError:
            count = 0
        sent.update(pending[:count])
        sent_count += count
        pending = pending[count:]
    if readable:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        if not data:
            break
        received.update(data)
        received_count += len(data)
sock.close()
print(json.dumps({"sent": sent_count, "sent_sha256": sent.hexdigest(),
                  "received": received_count, "received_sha256": received.hexdigest()}))
"""

#: A single-threaded UDP client for socksify: sendto() each payload (argv: HOST PORT SIZES...,
#: payload i is SIZE bytes of a letter), recvfrom() its echo, print them as JSON lines.
UDP_CLIENT = r"""
import hashlib, json, socket, string, sys

host, port, *sizes = sys.argv[1:]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(5.0)
    for index, size in enumerate(sizes):
        payload = string.ascii_letters[index].encode() * int(size)
        sock.sendto(payload, (host, int(port)))
        data, sender = sock.recvfrom(65535)
        print(json.dumps({"sha256": hashlib.sha256(data).hexdigest(),
                          "size": len(data), "from": list(sender)}), flush=True)
"""


# --------------------------------------------------------------------------- the server process

#: The access-log fields printed as integers.
_INT_FIELDS = {"bytes_up", "bytes_down", "dropped"}
#: ` key=value` in a text log line; a value with spaces or quotes is a JSON string.
_FIELD = re.compile(r' (\w+)=("(?:[^"\\]|\\.)*"|\S*)')
_LISTENING = re.compile(r" listening on 127\.0\.0\.1:(\d+) ")


def parse_access_line(line: str) -> dict[str, Any] | None:
    """The fields of a text-format access-log line (`... socks5d.access session k=v ...`),
    typed as the in-process records are ("-" is None, byte counts are ints); None for any
    other line.
    """
    _, found, rest = line.partition(" INFO socks5d.access session")
    if not found:
        return None
    fields: dict[str, Any] = {}
    for key, raw in _FIELD.findall(rest):
        value: Any = json.loads(raw) if raw.startswith('"') else raw
        if value == "-":
            value = None
        elif key in _INT_FIELDS:
            value = int(value)
        fields[key] = value
    return fields


class Socks5dProcess:
    """`python -m socks5d serve --listen 127.0.0.1:0 --auth gssapi --gssapi-keytab KEYTAB
    --gssapi-levels LEVELS` with the realm's environment; its stderr read line by line.
    Offers `host`, `port` and `wait_records()` like tests/conftest.py's RunningServer.
    """

    def __init__(self, realm: KerberosRealm, levels: str, directory: Path) -> None:
        env = {key: value for key, value in clean_env().items() if not key.startswith("KRB5")}
        env.update(realm.env)
        self.args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "gssapi",
            "--gssapi-keytab",
            str(realm.service_keytab),
            "--gssapi-levels",
            levels,
        ]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "socks5d", *self.args],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._stderr = StderrLines(self.process, PROCESS_TIMEOUT)
        self.lines: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.host = "127.0.0.1"
        self.port = self._wait_listening()

    def _next_line(self, deadline: float) -> str:
        line = self._stderr.read(deadline, lambda: self.lines).decode(errors="replace")
        self.lines.append(line)
        record = parse_access_line(line)
        if record is not None:
            self.records.append(record)
        return line

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while True:
            match = _LISTENING.search(self._next_line(deadline))
            if match:
                return int(match[1])

    def wait_records(
        self, count: int = 1, timeout: float = PROCESS_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Read the log until it holds at least `count` access records; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            self._next_line(deadline)
        return list(self.records)

    def stop(self) -> int:
        """SIGTERM (by PID), then the exit status; SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.communicate(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate(timeout=PROCESS_TIMEOUT)
        return self.process.returncode


@pytest.fixture
def serve(krb5_realm: KerberosRealm, tmp_path: Path) -> Iterator[Callable[[str], Socks5dProcess]]:
    """`serve("clear,integrity")`: a socks5d process granting those levels."""
    started: list[Socks5dProcess] = []

    def start(levels: str) -> Socks5dProcess:
        server = Socks5dProcess(krb5_realm, levels, tmp_path)
        started.append(server)
        return server

    yield start
    statuses = [server.stop() for server in started]
    assert statuses == [0] * len(started), "socks5d serve did not exit cleanly on SIGTERM"


# --------------------------------------------------------------------------- destinations


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, BigBody]]:
    """An HTTP origin on 127.0.0.1 serving interop's deterministic 50 MB body at /big."""
    body = _write_big_body(tmp_path_factory.mktemp("origin") / "big.bin")
    with OriginServer("127.0.0.1", body) as server, serving(server):
        yield Endpoint("127.0.0.1", server.server_address[1]), body


@pytest.fixture
def echo() -> Iterator[Endpoint]:
    with tcp_echo_server() as endpoint:
        yield endpoint


@pytest.fixture
def udp_echo() -> Iterator[Endpoint]:
    with udp_echo_server() as endpoint:
        yield endpoint


@pytest.fixture
def silent_listener() -> Iterator[tuple[Endpoint, socket.socket]]:
    """A listening socket nobody accepts on: a connection that reached it directly would
    wait in its queue (`nothing_connected()`).
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        yield Endpoint("127.0.0.1", listener.getsockname()[1]), listener


def nothing_connected(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


# --------------------------------------------------------------------------- helpers


def run_socksified(
    args: list[str], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=dict(env),
        cwd=cwd,
        timeout=CLIENT_TIMEOUT,
    )


def run_python_socksified(
    source: str, args: list[object], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    """The Python program `source` (written to `cwd`) with `args`, under socksify."""
    script = cwd / "client.py"
    script.write_text(source)
    return run_socksified([sys.executable, str(script), *map(str, args)], env, cwd)


def echo_chunks() -> list[bytes]:
    """The echo client's chunks, made the same way as in ECHO_CLIENT."""
    rng = random.Random(ECHO_SEED)
    return [rng.randbytes(size) for size in ECHO_SIZES]


def assert_gssapi_session(record: dict[str, Any], realm: KerberosRealm, level: str) -> None:
    assert record["protocol"] == "socks5", record
    assert record["user"] == realm.principal("alice"), record
    assert record["auth"] == f"gssapi/{level}", record
    assert record["outcome"] == "closed", record


class RecordingRelay:
    """A TCP relay on 127.0.0.1 for one connection, keeping every byte it passes each way:
    put between socksify's client and the proxy, it shows what crosses the wire.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(CLIENT_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.to_proxy = bytearray()
        self.to_client = bytearray()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="relay")
        self._thread.start()

    def _run(self) -> None:
        try:
            client, _ = self.listener.accept()
            with client, socket.create_connection(self.upstream, timeout=CLIENT_TIMEOUT) as proxy:
                self._pump(client, proxy)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def _pump(self, client: socket.socket, proxy: socket.socket) -> None:
        peers = {client: (proxy, self.to_proxy), proxy: (client, self.to_client)}
        open_ends = [client, proxy]
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while open_ends:
            remaining = max(deadline - time.monotonic(), 0.0)
            readable, _, _ = select.select(open_ends, [], [], remaining)
            if not readable:
                raise TimeoutError("the relayed session did not end")
            for sock in readable:
                target, kept = peers[sock]
                data = sock.recv(65536)
                if data:
                    kept += data
                    target.sendall(data)
                else:
                    open_ends.remove(sock)
                    with suppress(OSError):
                        target.shutdown(socket.SHUT_WR)

    def join(self) -> None:
        self._thread.join(CLIENT_TIMEOUT)
        self.listener.close()
        assert not self._thread.is_alive(), "the relay did not finish"
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("level", LEVELS)
def test_curl_downloads_50_mb_intact_through_socks5d(
    level: str,
    serve: Callable[[str], Socks5dProcess],
    krb5_realm: KerberosRealm,
    dante_gssapi: DanteGssapi,
    origin: tuple[Endpoint, BigBody],
    tmp_path: Path,
) -> None:
    endpoint, body = origin
    server = serve("clear,integrity,confidentiality")
    env = socksify_env(krb5_realm, dante_gssapi, tmp_path, server.port, level)
    target = tmp_path / "download.bin"
    result = run_socksified(
        curl_command("--output", str(target), endpoint.url("/big")), env, tmp_path
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert target.stat().st_size == body.size
    assert sha256_file(target) == body.sha256
    record = crossed_proxy(server, endpoint.destination, min_bytes_down=body.size)
    assert record["command"] == "connect", record
    assert_gssapi_session(record, krb5_realm, level)


@pytest.mark.parametrize("level", LEVELS)
def test_odd_sized_writes_echo_back_with_half_close(
    level: str,
    serve: Callable[[str], Socks5dProcess],
    krb5_realm: KerberosRealm,
    dante_gssapi: DanteGssapi,
    echo: Endpoint,
    tmp_path: Path,
) -> None:
    server = serve("clear,integrity,confidentiality")
    env = socksify_env(krb5_realm, dante_gssapi, tmp_path, server.port, level)
    args = [echo.host, echo.port, ECHO_SEED, *ECHO_SIZES]
    result = run_python_socksified(ECHO_CLIENT, args, env, tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")

    expected = hashlib.sha256(b"".join(echo_chunks())).hexdigest()
    total = sum(ECHO_SIZES)
    report = json.loads(result.stdout)
    # every byte went out, the same bytes came back, then the echo server's EOF (after ours)
    assert report == {
        "sent": total,
        "sent_sha256": expected,
        "received": total,
        "received_sha256": expected,
    }
    record = crossed_proxy(server, echo.destination, min_bytes_down=total)
    assert (record["bytes_up"], record["bytes_down"]) == (total, total), record
    assert_gssapi_session(record, krb5_realm, level)


@pytest.mark.parametrize(
    ("granted", "asked"),
    [("integrity", "confidentiality"), ("clear,confidentiality", "integrity")],
)
def test_a_level_the_server_does_not_grant_fails_the_client(
    granted: str,
    asked: str,
    serve: Callable[[str], Socks5dProcess],
    krb5_realm: KerberosRealm,
    dante_gssapi: DanteGssapi,
    silent_listener: tuple[Endpoint, socket.socket],
    tmp_path: Path,
) -> None:
    destination, listener = silent_listener
    server = serve(granted)
    env = socksify_env(krb5_realm, dante_gssapi, tmp_path, server.port, asked)
    started = time.monotonic()
    result = run_socksified(curl_command(destination.url("/")), env, tmp_path)
    assert result.returncode != 0, result
    assert time.monotonic() - started < 10.0, "the client hung on the refusal"

    record = only_record(server)
    assert record["user"] == krb5_realm.principal("alice"), record
    assert record["auth"] == "gssapi", record  # no level was agreed
    assert record["command"] is None, record
    assert record["outcome"] == (
        f"auth failed: protection level {asked} not allowed (allowed: {granted})"
    ), record
    # the client did not go around the proxy either
    assert nothing_connected(listener)


@pytest.mark.parametrize("level", LEVELS)
def test_socksified_udp_program_round_trips_datagrams(
    level: str,
    start_server: Callable[..., Any],
    krb5_realm: KerberosRealm,
    dante_gssapi: DanteGssapi,
    udp_echo: Endpoint,
    tmp_path: Path,
) -> None:
    server = start_server(
        auth=["gssapi"],
        gssapi={"keytab": str(krb5_realm.service_keytab), "levels": list(LEVELS)},
    )
    conf = write_socks_conf(tmp_path / "socks-udp.conf", server.port, level, udp=True)
    env = socksify_env(
        krb5_realm, dante_gssapi, tmp_path, server.port, level, extra={"SOCKS_CONF": str(conf)}
    )
    args = [udp_echo.host, udp_echo.port, *DATAGRAM_SIZES]
    result = run_python_socksified(UDP_CLIENT, args, env, tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")

    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert answers == [
        {
            "sha256": hashlib.sha256(string.ascii_letters[index].encode() * size).hexdigest(),
            "size": size,
            # the relay's header was taken off: the echo server itself is the sender
            "from": [udp_echo.host, udp_echo.port],
        }
        for index, size in enumerate(DATAGRAM_SIZES)
    ]
    record = only_record(server)
    assert record["command"] == "udp_associate", record
    assert record["reply"] == "succeeded", record
    assert record["dropped"] == 0, record
    total = sum(DATAGRAM_SIZES)
    assert (record["bytes_up"], record["bytes_down"]) == (total, total), record
    assert_gssapi_session(record, krb5_realm, level)


@pytest.mark.parametrize("level", LEVELS)
def test_only_confidentiality_hides_the_payload_on_the_wire(
    level: str,
    serve: Callable[[str], Socks5dProcess],
    krb5_realm: KerberosRealm,
    dante_gssapi: DanteGssapi,
    echo: Endpoint,
    tmp_path: Path,
) -> None:
    """Between socksify's client and socks5d: the payload is readable at clear and at
    integrity (wrap tokens without confidentiality carry it as it is), and nowhere to be
    seen, either way, at confidentiality.
    """
    server = serve("clear,integrity,confidentiality")
    relay = RecordingRelay((server.host, server.port))
    env = socksify_env(krb5_realm, dante_gssapi, tmp_path, relay.port, level)
    sizes = ECHO_SIZES[:5]
    args = [echo.host, echo.port, ECHO_SEED, *sizes]
    result = run_python_socksified(ECHO_CLIENT, args, env, tmp_path)
    relay.join()
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    total = sum(sizes)
    assert json.loads(result.stdout)["received"] == total

    record = crossed_proxy(server, echo.destination, min_bytes_down=total)
    assert_gssapi_session(record, krb5_realm, level)
    marker = echo_chunks()[4][5000:5064]  # 64 random bytes from the middle of a chunk
    assert len(relay.to_proxy) > total and len(relay.to_client) > total
    visible = level != "confidentiality"
    assert (marker in relay.to_proxy, marker in relay.to_client) == (visible, visible)
