"""socks5d behind the real balancer: HAProxy (`mode tcp`, `send-proxy` and `send-proxy-v2`) on
127.0.0.1 in front of two `socks5d serve` instances on 127.0.0.11 and 127.0.0.12, configured
as README's *Running many instances* recipe says. Clients connect from their own loopback
addresses (127.0.0.21, ...), so each instance must see who they are through the PROXY header.

Each instance logs JSON to its own file; the tests read those lines (`Fleet.record`) and the
instances' `/sessions`, never a sleep. HAProxy's own lines (a server marked DOWN) are read
from its stderr.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from server.raw_client import (
    greeting_bytes,
    loopback_address,
    read_reply,
    read_until_eof,
    receive_relayed,
    recv_exactly,
    request_bytes,
    udp_packet,
    udp_socket,
    userpass_bytes,
)
from serving import PROCESS_TIMEOUT, DirectoryWatch, ServeProcess, file_entries
from socks5d.proto import Address, AuthMethod, Command, Reply
from socks5d.proto.proxy_protocol import encode_v2
from socks5d.users import hash_password
from stderr_lines import StderrLines

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
pytestmark = [
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (scripts/test.sh does)"),
    pytest.mark.timeout(90),
]

BALANCER = "127.0.0.1"
INSTANCES = ("127.0.0.11", "127.0.0.12")
USERPASS = AuthMethod.USERNAME_PASSWORD
#: the lowest scrypt cost a users file may hold
COST = (1 << 14, 8, 1)
IO_TIMEOUT = 5.0

INSTANCE_CONFIG = """\
listen = ["{address}:{port}"]
users = "{users}"
log_file = "{log}"

[admin]
listen = "{address}:{admin_port}"

[proxy_protocol]
from = ["{balancer}"]

[udp]
advertise_address = "{address}"

[bind]
address = "{address}"

[limits]
auth_failures_before_block = 3

[[client]]
action = "block"
from = ["127.0.0.66"]
"""

HAPROXY_CONFIG = """\
global
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch

frontend socks
    bind {balancer}:{port}
    default_backend socks5d

backend socks5d
    balance source
    option httpchk GET /healthz
    http-check expect status 200
    default-server {send_proxy} check inter 100ms fall 2 rise 1 source {balancer}
{servers}
"""


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Instance:
    address: str
    process: ServeProcess
    log: Path

    @property
    def port(self) -> int:
        return self.process.listeners()[0][1]

    @property
    def admin_port(self) -> int:
        (entry,) = [e for e in self.process.entries if e["message"].startswith("admin endpoint")]
        return int(entry["message"].rpartition(":")[2])

    def sessions(self) -> list[dict[str, Any]]:
        status, body = _get(self.address, self.admin_port, "/sessions")
        assert status == 200, body
        listed: list[dict[str, Any]] = json.loads(body)
        return listed


def _get(host: str, port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=IO_TIMEOUT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


@dataclass
class Fleet:
    """The balancer and its instances; `port` is the balancer's."""

    port: int
    instances: list[Instance]
    haproxy: subprocess.Popen[bytes]
    haproxy_lines: StderrLines
    directory: Path
    seen: set[tuple[int, int]] = field(default_factory=set)

    @property
    def address(self) -> tuple[str, int]:
        return BALANCER, self.port

    def record(self, client: str, timeout: float = PROCESS_TIMEOUT) -> tuple[int, dict[str, Any]]:
        """The next access record, on any instance, of the client at IP `client`: the index
        of the instance and the record."""

        def find() -> tuple[int, dict[str, Any]] | None:
            for index, instance in enumerate(self.instances):
                for line, entry in enumerate(file_entries(instance.log)):
                    if (index, line) in self.seen or entry["logger"] != "socks5d.access":
                        continue
                    if entry["client"].rpartition(":")[0] == client:
                        self.seen.add((index, line))
                        return index, entry
            return None

        watch = DirectoryWatch(self.directory)
        try:
            return watch.until(find, time.monotonic() + timeout, f"a record of {client}")
        finally:
            watch.close()

    def haproxy_line(self, text: str, timeout: float = PROCESS_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            line = self.haproxy_lines.read(deadline, lambda: seen).decode(errors="replace")
            seen.append(line)
            if text in line:
                return line

    def connect_from(self, source: str) -> socket.socket:
        sock = socket.create_connection(self.address, IO_TIMEOUT, source_address=(source, 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def stop(self) -> None:
        if self.haproxy.poll() is None:
            self.haproxy.terminate()
        self.haproxy.communicate(timeout=PROCESS_TIMEOUT)
        for instance in self.instances:
            instance.process.kill()


def start_instance(
    directory: Path, name: str, address: str, port: int = 0, admin_port: int = 0
) -> Instance:
    """One `socks5d serve` of the fleet, with its own configuration file and log file."""
    log = directory / f"{name}.log"
    config = directory / f"{name}.toml"
    settings = {"users": directory / "users", "log": log, "balancer": BALANCER}
    config.write_text(
        INSTANCE_CONFIG.format(address=address, port=port, admin_port=admin_port, **settings)
    )
    return Instance(address, ServeProcess("--config", str(config), log_file=log), log)


def start_fleet(directory: Path, send_proxy: str) -> Fleet:
    """Two instances, then HAProxy in front of them; each instance's own configuration."""
    directory.mkdir(parents=True, exist_ok=True)
    users = directory / "users"
    users.write_text(f"alice:{hash_password('right', COST)}\n")
    users.chmod(0o600)
    instances: list[Instance] = []
    haproxy: subprocess.Popen[bytes] | None = None
    try:
        for number, address in enumerate(INSTANCES, 1):
            instances.append(start_instance(directory, f"instance{number}", address))
        servers = "\n".join(
            f"    server s{n} {i.address}:{i.port} port {i.admin_port}"
            for n, i in enumerate(instances, 1)
        )
        port = free_port(BALANCER)
        haproxy_config = directory / "haproxy.cfg"
        haproxy_config.write_text(
            HAPROXY_CONFIG.format(
                balancer=BALANCER, port=port, send_proxy=send_proxy, servers=servers
            )
        )
        assert HAPROXY is not None
        check = subprocess.run([HAPROXY, "-c", "-f", str(haproxy_config)], capture_output=True)
        assert check.returncode == 0, check.stderr.decode()
        with (
            tempfile.TemporaryDirectory() as short,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        ):
            notify.bind(f"{short}/notify")  # a short path: sun_path holds 108 bytes
            # -Ws: master-worker mode, which says READY=1 on NOTIFY_SOCKET once it listens
            haproxy = subprocess.Popen(
                [HAPROXY, "-Ws", "-f", str(haproxy_config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "NOTIFY_SOCKET": f"{short}/notify"},
            )
            wait_ready(notify, haproxy)
        return Fleet(port, instances, haproxy, StderrLines(haproxy, PROCESS_TIMEOUT), directory)
    except BaseException:
        if haproxy is not None:
            haproxy.kill()
            haproxy.communicate(timeout=PROCESS_TIMEOUT)
        for instance in instances:
            instance.process.kill()
        raise


def wait_ready(notify: socket.socket, haproxy: subprocess.Popen[bytes]) -> None:
    """Until HAProxy's READY=1 on the notify socket (the service manager's protocol)."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while True:
        ready, _, _ = select.select([notify], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"haproxy not ready in time (exit status {haproxy.poll()})"
        if b"READY=1" in notify.recv(4096).split(b"\n"):
            return


@pytest.fixture(scope="module", params=["send-proxy", "send-proxy-v2"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    running = start_fleet(tmp_path_factory.mktemp(request.param), request.param)
    yield running
    running.stop()


@pytest.fixture
def destination() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(IO_TIMEOUT)
        yield sock


def log_in(sock: socket.socket, password: str = "right") -> int:
    """Offer username/password as alice; the RFC 1929 STATUS."""
    sock.sendall(greeting_bytes(USERPASS))
    assert recv_exactly(sock, 2) == bytes([5, USERPASS])
    sock.sendall(userpass_bytes("alice", password))
    return recv_exactly(sock, 2)[1]


def request(sock: socket.socket, command: Command, target: Address) -> Address:
    """Log in, send the request; the (first) reply's BND, which must be a success."""
    assert log_in(sock) == 0
    sock.sendall(request_bytes(command, target))
    reply, _ = read_reply(sock)
    assert reply.reply == Reply.SUCCEEDED, reply
    return reply.bound


def tunnel(
    fleet: Fleet, source: str, destination: socket.socket
) -> tuple[socket.socket, socket.socket]:
    """A CONNECT through the balancer from `source`: (client end, destination end)."""
    sock = fleet.connect_from(source)
    try:
        request(sock, Command.CONNECT, loopback_address(destination))
        far, _ = destination.accept()
    except BaseException:
        sock.close()
        raise
    far.settimeout(IO_TIMEOUT)
    return sock, far


def exchange(client: socket.socket, far: socket.socket, tag: bytes) -> None:
    client.sendall(b"up " + tag)
    assert recv_exactly(far, 3 + len(tag)) == b"up " + tag
    far.sendall(b"down " + tag)
    assert recv_exactly(client, 5 + len(tag)) == b"down " + tag


# --- through the balancer ------------------------------------------------------------------------


def test_connect_with_a_login_logs_the_real_client_and_the_balancer(
    fleet: Fleet, destination: socket.socket
) -> None:
    client, far = tunnel(fleet, "127.0.0.21", destination)
    with client, far:
        exchange(client, far, b"through haproxy")
        local_port = client.getsockname()[1]
    _, record = fleet.record("127.0.0.21")
    assert record["client"] == f"127.0.0.21:{local_port}"
    assert record["via"].rpartition(":")[0] == BALANCER
    assert (record["user"], record["reply"]) == ("alice", "succeeded")


def test_client_rules_match_the_real_client(fleet: Fleet, destination: socket.socket) -> None:
    with fleet.connect_from("127.0.0.66") as blocked:  # `[[client]] block from 127.0.0.66`
        blocked.sendall(greeting_bytes(USERPASS))
        assert read_until_eof(blocked) == b""
    client, far = tunnel(fleet, "127.0.0.67", destination)  # the same balancer, allowed
    with client, far:
        exchange(client, far, b"allowed")
    assert fleet.record("127.0.0.67")[1]["reply"] == "succeeded"


def test_the_login_throttle_blocks_only_the_guessing_client(fleet: Fleet) -> None:
    """The guesser's three failures block it (on the instance `balance source` sends it to);
    another client of that same instance still logs in."""
    guesser = "127.0.0.31"
    for _ in range(3):
        with fleet.connect_from(guesser) as sock:
            assert log_in(sock, "wrong") != 0
    guessed_at = {fleet.record(guesser)[0] for _ in range(3)}
    assert len(guessed_at) == 1  # one instance saw every guess
    with fleet.connect_from(guesser) as sock:  # blocked: closed before the method selection
        sock.sendall(greeting_bytes(USERPASS))
        assert read_until_eof(sock) == b""
    neighbours = 0
    for last in range(32, 48):
        other = f"127.0.0.{last}"
        with fleet.connect_from(other) as sock:
            assert log_in(sock) == 0, f"{other} was refused"
        index, _ = fleet.record(other)
        neighbours += index in guessed_at
    assert neighbours, "no other client landed on the guesser's instance"


def test_udp_associate_goes_to_the_instance_advertised_address(fleet: Fleet) -> None:
    """The control connection comes through the balancer; the datagrams go straight to the
    instance that serves it, from the client, which the header named."""
    client_ip = "127.0.0.51"
    with (
        udp_socket(client_ip) as client,
        udp_socket("127.0.0.1") as echo,
        fleet.connect_from(client_ip) as control,
    ):
        anywhere = Address(ipaddress.IPv4Address(0), 0)
        relay = request(control, Command.UDP_ASSOCIATE, anywhere)
        assert str(relay.host) in INSTANCES
        (serving,) = [i for i in fleet.instances if i.address == str(relay.host)]
        assert [s["client"].rpartition(":")[0] for s in serving.sessions()] == [client_ip]
        target = loopback_address(echo)
        client.sendto(udp_packet(target, b"datagram up"), (str(relay.host), relay.port))
        data, sender = echo.recvfrom(0x10000)
        assert data == b"datagram up"
        echo.sendto(b"datagram down", sender)
        answer = receive_relayed(client)
        assert (answer.data, answer.destination) == (b"datagram down", target)


def test_bind_first_reply_names_the_serving_instance(fleet: Fleet) -> None:
    with fleet.connect_from("127.0.0.52") as sock:
        bound = request(sock, Command.BIND, Address(ipaddress.IPv4Address("127.0.0.1"), 0))
        (serving,) = [i for i in fleet.instances if i.sessions()]
        assert str(bound.host) == serving.address  # its own `[bind] address`


def test_a_header_sent_straight_to_an_instance_is_refused(fleet: Fleet) -> None:
    """A client that skips the balancer cannot name another client."""
    instance = fleet.instances[0]
    with socket.create_connection(
        (instance.address, instance.port), IO_TIMEOUT, source_address=("127.0.0.53", 0)
    ) as sock:
        spoofed = Address(ipaddress.IPv4Address("127.0.0.31"), 1)
        sock.sendall(encode_v2(spoofed, Address(ipaddress.IPv4Address(instance.address), 1)))
        assert read_until_eof(sock) == b""
    _, record = fleet.record("127.0.0.53")
    assert record["outcome"] == "PROXY header from an untrusted source"


def test_health_checks_see_healthz(fleet: Fleet) -> None:
    for instance in fleet.instances:
        assert _get(instance.address, instance.admin_port, "/healthz") == (200, b"ok\n")


# --- one instance killed -------------------------------------------------------------------------


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_an_instance_killed_costs_no_new_session_and_no_tunnel_of_the_other(
    tmp_path: Path,
    destination: socket.socket,
    send_proxy: str,
    record_property: Callable[..., None],
) -> None:
    running = start_fleet(tmp_path / "fleet", send_proxy)
    opened: list[tuple[socket.socket, socket.socket]] = []
    try:
        # tunnels from several clients until each instance carries at least one
        by_instance: dict[str, list[int]] = {}
        for last in range(70, 90):
            client, far = tunnel(running, f"127.0.0.{last}", destination)
            opened.append((client, far))
            port = client.getsockname()[1]
            for instance in running.instances:
                if any(s["client"] == f"127.0.0.{last}:{port}" for s in instance.sessions()):
                    by_instance.setdefault(instance.address, []).append(len(opened) - 1)
            if len(by_instance) == 2:
                break
        assert len(by_instance) == 2, by_instance
        victim, survivor = running.instances
        victim.process.process.send_signal(signal.SIGKILL)
        victim.process.process.wait(PROCESS_TIMEOUT)

        # new sessions from every client until HAProxy has marked the victim down
        failures = attempts = 0
        down = False
        while not down and attempts < 200:
            attempts += 1
            source = f"127.0.0.{70 + attempts % 20}"
            try:
                client, far = tunnel(running, source, destination)
            except (OSError, AssertionError):
                failures += 1
            else:
                with client, far:
                    exchange(client, far, b"new")
            down = _marked_down(running)
        assert down or running.haproxy_line("is DOWN")
        record_property("failures_before_mark_down", failures)
        record_property("attempts_before_mark_down", attempts)
        print(f"{send_proxy}: {failures} failed of {attempts} new sessions before the mark-down")
        assert failures == 0, f"{failures} of {attempts} new sessions failed"

        for _ in range(10):  # after the mark-down: all on the survivor
            client, far = tunnel(running, "127.0.0.99", destination)
            with client, far:
                exchange(client, far, b"after")
        for index in by_instance[survivor.address]:  # the survivor's tunnels go on
            exchange(*opened[index], b"untouched")
    finally:
        for client, far in opened:
            client.close()
            far.close()
        running.stop()


def _marked_down(fleet: Fleet) -> bool:
    """Whether HAProxy has written its DOWN line yet (a read that does not wait)."""
    try:
        fleet.haproxy_line("is DOWN", timeout=0)
    except AssertionError:
        return False
    return True


def test_a_rolling_restart_loses_no_session(
    tmp_path: Path, destination: socket.socket, record_property: Callable[..., None]
) -> None:
    """README's rolling restart: SIGTERM one instance (it stops accepting and its /healthz
    answers 503, so HAProxy marks it down), its open tunnel goes on until it ends, then the
    process exits 0 and a new one on the same addresses is marked up again. New sessions
    through the balancer succeed all along."""
    directory = tmp_path / "fleet"
    running = start_fleet(directory, "send-proxy-v2")
    opened: list[tuple[socket.socket, socket.socket]] = []
    try:
        old, _ = running.instances
        held = None
        for last in range(70, 90):  # a tunnel on the instance to restart
            client, far = tunnel(running, f"127.0.0.{last}", destination)
            opened.append((client, far))
            port = client.getsockname()[1]
            if any(s["client"] == f"127.0.0.{last}:{port}" for s in old.sessions()):
                held = (client, far)
                break
        assert held is not None, "no tunnel landed on the first instance"
        address, port, admin_port = old.address, old.port, old.admin_port
        old.process.signal(signal.SIGTERM)
        old.process.wait_message("draining")

        failures = attempts = 0
        while not _marked_down(running) and attempts < 200:
            attempts += 1
            try:
                client, far = tunnel(running, f"127.0.0.{70 + attempts % 20}", destination)
            except (OSError, AssertionError):
                failures += 1
            else:
                with client, far:
                    exchange(client, far, b"during the drain")
        assert attempts < 200 or running.haproxy_line("is DOWN")
        record_property("failures_during_drain", failures)
        assert failures == 0, f"{failures} of {attempts} new sessions failed during the drain"

        exchange(*held, b"still open")  # the draining instance's tunnel goes on
        for sock in held:
            sock.close()
        assert old.process.wait_exit() == 0

        new = start_instance(directory, "instance1-new", address, port, admin_port)
        running.instances[0] = new
        running.haproxy_line("is UP")
        after = [tunnel(running, f"127.0.0.{last}", destination) for last in range(70, 90)]
        opened.extend(after)
        assert new.sessions(), "no new session reached the restarted instance"
        for pair in after:
            exchange(*pair, b"after the restart")
    finally:
        for client, far in opened:
            client.close()
            far.close()
        running.stop()
