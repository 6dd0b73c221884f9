"""The proxies that client interop tests run against, behind one interface: socks5d
(tests/conftest.py's in-process server) and Dante's sockd (a subprocess on loopback).

Running the same real client against Dante checks the test as much as the server: if a
client passes through sockd but not through socks5d, the bug is ours; if it passes neither,
the test is wrong. Each proxy proves passage its own way: socks5d by its access record, sockd
by the line it logs when a session ends, which carries byte counts for both directions:

    pass(1): tcp/connect ]: W -> CLIENT PROXY -> R, W -> EXTERNAL DESTINATION -> R: ...
    pass(1): udp/udpassociate ]: W/n -> CLIENT RELAY -> R/n, W/n -> EXTERNAL DESTINATION -> R/n: ...
    pass(1): tcp/bindreply ]: W -> PEER BOUND -> R, W -> PROXY CLIENT -> R: ...

(W bytes written to, R bytes read from the address pair it stands next to; UDP adds
packet counts; Dante writes addresses as `127.0.0.1.1080`.)

`write_sockd_conf` options (IPv6, `socksmethod: username`, blocked destinations) and
`MicrosocksServer` serve the tests of our client library against third-party servers.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

import pytest

from .conftest import Endpoint, RecordingServer, clean_env

#: Names of the proxies a parametrized test runs against.
PROXY_NAMES = ("socks5d", "dante")
#: Seconds to wait for sockd to accept connections, or for a log line or access record.
WAIT_TIMEOUT = 10.0
#: Where Debian installs sockd (as danted); searched besides PATH.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Crossing:
    """One finished session as a proxy's log tells it: payload bytes each way."""

    #: bytes from the client to the destination (BIND: to the peer that connected)
    bytes_up: int
    #: bytes from the destination (or BIND peer) back to the client
    bytes_down: int


class ProxyUnderTest(Protocol):
    """A SOCKS server under test: where it listens and how it proves passage."""

    name: str
    host: str
    port: int

    def connected(self, destination: Endpoint, protocol: str = "socks5") -> Crossing:
        """Wait for a CONNECT tunnel to `destination` that was granted; its byte counts."""
        ...

    def udp_relayed(self, destination: Endpoint) -> Crossing:
        """Wait for a UDP association that relayed datagrams to and from `destination`."""
        ...

    def bound(self, peer: Endpoint, protocol: str = "socks5") -> Crossing:
        """Wait for a BIND that accepted `peer` and relayed; its byte counts."""
        ...


# --------------------------------------------------------------------------- socks5d


class Socks5dUnderTest:
    """socks5d; proof of passage is its access record."""

    name = "socks5d"

    def __init__(self, server: RecordingServer) -> None:
        self.server = server
        self.host = server.host
        self.port = server.port

    def wait_record(self, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The latest access record for which `matches` holds; waits for it to be logged."""
        count = 1
        while True:
            records = self.server.wait_records(count, timeout=WAIT_TIMEOUT)
            matching = [record for record in records if matches(record)]
            if matching:
                return matching[-1]
            count = len(records) + 1  # wait for the next record, not for time to pass

    def connected(self, destination: Endpoint, protocol: str = "socks5") -> Crossing:
        record = self.wait_record(
            lambda r: r["command"] == "connect" and r["destination"] == destination.destination
        )
        assert record["protocol"] == protocol, record
        assert record["reply"] == _granted(protocol), record
        return Crossing(record["bytes_up"], record["bytes_down"])

    def udp_relayed(self, destination: Endpoint) -> Crossing:
        # The request's DST.ADDR names the client's own address, not a destination: RFC 1928
        # §6. A test makes one association, so the command identifies it.
        record = self.wait_record(lambda r: r["command"] == "udp_associate")
        assert record["protocol"] == "socks5", record
        assert record["reply"] == "succeeded", record
        assert record["dropped"] == 0, record
        return Crossing(record["bytes_up"], record["bytes_down"])

    def bound(self, peer: Endpoint, protocol: str = "socks5") -> Crossing:
        # The access record names the BIND request's DST, not the peer that connected.
        record = self.wait_record(lambda r: r["command"] == "bind")
        assert record["protocol"] == protocol, record
        assert record["reply"] == _granted(protocol), record
        return Crossing(record["bytes_up"], record["bytes_down"])


def _granted(protocol: str) -> str:
    return "succeeded" if protocol == "socks5" else "granted"


# --------------------------------------------------------------------------- Dante's sockd


def dante_address(endpoint: Endpoint) -> str:
    """How Dante logs an address: `127.0.0.1.1080`."""
    return f"{endpoint.host}.{endpoint.port}"


def sockd_binary() -> str:
    """The sockd executable (Debian: /usr/sbin/danted); fails the test when missing."""
    search = f"{os.environ.get('PATH', '')}:{_SBIN}"
    for name in ("danted", "sockd"):
        path = shutil.which(name, path=search)
        if path is not None:
            return path
    pytest.fail("Dante's sockd is not installed; scripts/test.sh installs dante-server")


def write_sockd_conf(
    path: Path,
    port: int,
    *,
    ipv6: bool = False,
    socksmethod: str = "none",
    blocked: Sequence[Endpoint] = (),
) -> Path:
    """A minimal sockd.conf: no authentication, loopback on both sides, every command,
    a log line when each session starts and ends (with its byte counts) or is blocked (with
    its destination), all to stderr.

    The options serve the client-library tests; the defaults give the configuration above.

    Args:
        ipv6: also listen on [::1]:`port`, add ::1 as a second external address, and pass
            loopback to loopback across both families.
        socksmethod: `username` checks RFC 1929 credentials against the system's accounts.
        blocked: destinations a `socks block` rule refuses ahead of every pass rule.
    """
    users = ""
    if os.geteuid() == 0:
        # sockd refuses to run client sessions as root without being told; as another user
        # it runs as that user and needs no setting.
        users = "user.privileged: root\nuser.unprivileged: nobody\n"
    internal = f"internal: 127.0.0.1 port = {port}\n"
    external = "external: 127.0.0.1\n"
    networks = ["127.0.0.0/8"]
    anywhere = "0.0.0.0/0"
    if ipv6:
        internal += f"internal: ::1 port = {port}\n"
        external += "external: ::1\n"
        networks.append("::1/128")
        anywhere = "0/0"  # Dante: "matches all IP addresses, be they IPv4 or IPv6"
    client_rules = "".join(
        f"client pass {{\n    from: {network} to: {network}\n    log: error\n}}\n"
        for network in networks
    )
    block_rules = "".join(
        "socks block {\n"
        f"    from: {anywhere} to: {endpoint.host}/{128 if ':' in endpoint.host else 32}"
        f" port = {endpoint.port}\n"
        "    log: connect error\n"
        "}\n"
        for endpoint in blocked
    )
    pass_rules = "".join(
        "socks pass {\n"
        f"    from: {source} to: {target}\n"
        "    command: bind connect udpassociate bindreply udpreply\n"
        "    log: connect disconnect error\n"
        "}\n"
        for source, target in itertools.product(networks, networks)
    )
    path.write_text(
        "logoutput: stderr\n"
        f"{internal}"
        f"{external}"
        "clientmethod: none\n"
        f"socksmethod: {socksmethod}\n"
        f"{users}"
        f"{client_rules}"
        f"{block_rules}"
        f"{pass_rules}"
        "socks block {\n"  # what no rule passes is blocked anyway; this logs it
        f"    from: {anywhere} to: {anywhere}\n"
        "    log: connect error\n"
        "}\n"
    )
    return path


class LoggedServer:
    """A third-party server run as a subprocess and stopped by its PID; its stderr log is
    collected line by line. Subclasses give the command line for `self.port`.
    """

    name = "server"
    #: the server writes its log to stdout (tinyproxy in the foreground), not stderr
    log_on_stdout = False

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.lines: list[str] = []
        self.condition = threading.Condition()
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        """The command line that serves on `self.host`:`self.port`."""
        raise NotImplementedError

    def start(self, attempts: int = 3) -> Self:
        """Start on a free port and wait until it accepts connections.

        The port is found by binding port 0 and letting it go, so another process may take
        it first; the server then exits at once and the next attempt picks another port.
        """
        for _ in range(attempts):
            self.port = _free_port(self.host)
            self._spawn(self.command())
            if self._wait_accepting():
                return self
            self.stop()
        raise AssertionError(f"{self.name} did not start:\n{self.log()}")

    def _spawn(self, command: list[str]) -> None:
        self.lines = []
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.log_on_stdout else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if self.log_on_stdout else subprocess.PIPE,
            env=clean_env(),
        )
        self.process = process
        self._reader = threading.Thread(target=self._collect, args=(process,), daemon=True)
        self._reader.start()

    def _collect(self, process: subprocess.Popen[bytes]) -> None:
        stream = process.stdout if self.log_on_stdout else process.stderr
        assert stream is not None
        # Children share the pipe: it reaches EOF once every one of them has exited.
        for raw in stream:
            with self.condition:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.condition.notify_all()
        with self.condition:
            self.condition.notify_all()

    def _wait_accepting(self) -> bool:
        """Poll the port with connection attempts, a bounded number of times."""
        assert self.process is not None
        for _ in range(int(WAIT_TIMEOUT / 0.05)):
            if self.process.poll() is not None:
                return False  # exited: port taken, or a configuration error
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return True
            except OSError:
                with self.condition:  # a new log line (e.g. "running") ends the pause early
                    self.condition.wait(0.05)
        return False

    def stop(self) -> None:
        """Terminate the server by its PID (it stops its children), collect the rest of its
        log.
        """
        process, reader = self.process, self._reader
        if process is None or reader is None:
            return
        self.process = self._reader = None
        try:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(WAIT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(WAIT_TIMEOUT)
            reader.join(WAIT_TIMEOUT)
            assert not reader.is_alive(), f"a {self.name} child kept its log pipe open"
        finally:
            stream = process.stdout if self.log_on_stdout else process.stderr
            assert stream is not None
            stream.close()

    def log(self) -> str:
        with self.condition:
            return "\n".join(self.lines)


class DanteServer(LoggedServer):
    """sockd as a subprocess on 127.0.0.1."""

    name = "dante"

    def __init__(self, directory: Path, **conf_options: Any) -> None:
        super().__init__("127.0.0.1")
        self.directory = directory
        #: keyword options of `write_sockd_conf` (IPv6, authentication, blocked destinations)
        self.conf_options = conf_options

    def command(self) -> list[str]:
        conf = write_sockd_conf(self.directory / "sockd.conf", self.port, **self.conf_options)
        pidfile = self.directory / "sockd.pid"
        return [sockd_binary(), "-f", str(conf), "-p", str(pidfile), "-N", "1"]

    # -- proof of passage

    def wait_log(self, pattern: str) -> re.Match[str]:
        """The first log line matching `pattern` (a regex); waits for it to be written."""
        compiled = re.compile(pattern)
        seen = 0

        def find() -> re.Match[str] | None:
            nonlocal seen
            for line in self.lines[seen:]:
                if match := compiled.search(line):
                    return match
            seen = len(self.lines)
            return None

        with self.condition:
            found = self.condition.wait_for(find, WAIT_TIMEOUT)
            if found is None:
                raise AssertionError(f"sockd logged no line matching {pattern!r}:\n{self.log()}")
            return found

    def connected(self, destination: Endpoint, protocol: str = "socks5") -> Crossing:
        # Dante logs SOCKS4 and SOCKS5 sessions alike.
        match = self.wait_log(
            r"pass\(\d+\): tcp/connect \]: \d+ -> \S+ \S+ -> \d+, "
            rf"(?P<up>\d+) -> \S+ {re.escape(dante_address(destination))} -> (?P<down>\d+)"
        )
        return Crossing(int(match["up"]), int(match["down"]))

    def udp_relayed(self, destination: Endpoint) -> Crossing:
        # Client-side counts include the UDP request headers; these are the payloads.
        match = self.wait_log(
            r"pass\(\d+\): udp/udpassociate \]: \S+ -> \S+ \S+ -> \S+, "
            rf"(?P<up>\d+)/\d+ -> \S+ {re.escape(dante_address(destination))} "
            r"-> (?P<down>\d+)/\d+"
        )
        return Crossing(int(match["up"]), int(match["down"]))

    def bound(self, peer: Endpoint, protocol: str = "socks5") -> Crossing:
        match = self.wait_log(
            rf"pass\(\d+\): tcp/bindreply \]: (?P<up>\d+) -> {re.escape(dante_address(peer))} "
            r"\S+ -> (?P<down>\d+), \d+ -> \S+ \S+ -> \d+"
        )
        return Crossing(int(match["up"]), int(match["down"]))


def _free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------- microsocks


def microsocks_binary() -> str:
    """The microsocks executable; fails the test when missing."""
    path = shutil.which("microsocks", path=f"{os.environ.get('PATH', '')}:{_SBIN}")
    if path is None:
        pytest.fail("microsocks is not installed; scripts/test.sh installs microsocks")
    return path


class MicrosocksServer(LoggedServer):
    """microsocks (CONNECT only, SOCKS5 only) as a subprocess on loopback.

    Proof of passage: one stderr line per CONNECT it carried out, naming the destination as
    the client sent it (a name stays a name); it logs nothing for a refused request:

        client[4] 127.0.0.1: connected to localhost:8080
    """

    name = "microsocks"

    def __init__(
        self, host: str = "127.0.0.1", username: str | None = None, password: str | None = None
    ) -> None:
        super().__init__(host)
        self.credentials = [] if username is None else ["-u", username, "-P", password or ""]

    def command(self) -> list[str]:
        return [microsocks_binary(), "-i", self.host, "-p", str(self.port), *self.credentials]

    @property
    def url(self) -> str:
        """`socks5://HOST:PORT` (no credentials)."""
        return f"socks5://{Endpoint(self.host, self.port).netloc}"

    def connected(self, destination: str) -> str:
        """The log line of a CONNECT to `destination` as the client named it (`HOST:PORT`,
        IPv6 without brackets); waits for it to be written.
        """
        suffix = f": connected to {destination}"
        with self.condition:
            found = self.condition.wait_for(
                lambda: next((line for line in self.lines if line.endswith(suffix)), None),
                WAIT_TIMEOUT,
            )
        if found is None:
            raise AssertionError(f"microsocks logged no CONNECT to {destination}:\n{self.log()}")
        return found


# --------------------------------------------------------------------------- tinyproxy


class TinyproxyServer(LoggedServer):
    """tinyproxy, an HTTP proxy, in the foreground on loopback: CONNECT to any port, Basic
    credentials when given. Proof of passage: its log line for each request,

        CONNECT   Dec 04 01:42:38.311 [281]: Request (file descriptor 4): CONNECT HOST:PORT HTTP/1.1
    """

    name = "tinyproxy"
    log_on_stdout = True

    def __init__(
        self, directory: Path, username: str | None = None, password: str | None = None
    ) -> None:
        super().__init__("127.0.0.1")
        self.directory = directory
        self.username, self.password = username, password

    def command(self) -> list[str]:
        binary = shutil.which("tinyproxy", path=f"{os.environ.get('PATH', '')}:{_SBIN}")
        if binary is None:
            pytest.fail("tinyproxy is not installed; scripts/test.sh installs tinyproxy")
        conf = self.directory / "tinyproxy.conf"
        credentials = (
            "" if self.username is None else f"BasicAuth {self.username} {self.password}\n"
        )
        # no ConnectPort line: CONNECT to every port is allowed
        conf.write_text(
            f"Port {self.port}\nListen {self.host}\nTimeout 60\nLogLevel Connect\n"
            f"MaxClients 100\nAllow 127.0.0.1\n{credentials}"
        )
        return [binary, "-d", "-c", str(conf)]

    @property
    def url(self) -> str:
        credentials = "" if self.username is None else f"{self.username}:{self.password}@"
        return f"http://{credentials}{self.host}:{self.port}"

    def requested(self, target: str) -> str:
        """The log line of a CONNECT to `target` (`HOST:PORT`); waits for it to be written."""
        suffix = f"): CONNECT {target} HTTP/1.1"
        with self.condition:
            found = self.condition.wait_for(
                lambda: next((line for line in self.lines if line.endswith(suffix)), None),
                WAIT_TIMEOUT,
            )
        if found is None:
            raise AssertionError(f"tinyproxy logged no CONNECT to {target}:\n{self.log()}")
        return found


# --------------------------------------------------------------------------- socksify


def write_socksify_conf(path: Path, proxy: ProxyUnderTest, proxyprotocol: str = "socks_v5") -> Path:
    """A Dante client socks.conf sending everything IPv4 through `proxy`, every command
    allowed: without `bindreply` and `udpreply` socksify does not route BIND and UDP.

    Run socksify with `socksify_env()`: loopback is a "LAN" it would reach directly.
    """
    path.write_text(
        "route {\n"
        f"    from: 0.0.0.0/0 to: 0.0.0.0/0 via: {proxy.host} port = {proxy.port}\n"
        f"    proxyprotocol: {proxyprotocol}\n"
        "    method: none\n"
        "    command: bind connect udpassociate bindreply udpreply\n"
        "}\n"
    )
    return path
