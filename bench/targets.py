"""The proxies under test, each started by the benchmark on 127.0.0.1 and stopped by PID.

    direct            no proxy: the load generator talks to its servers (the baseline)
    socks5d-asyncio   --loop asyncio --relay portable
    socks5d-uvloop    --loop uvloop --relay portable
    socks5d-splice    --loop uvloop --relay splice
    socks5d-proxyv2   socks5d-splice behind a balancer: --proxy-protocol-from 127.0.0.1, and
                      every client connection begins with a PROXY v2 header
    socks5d-routed    socks5d-splice routing every request through a second socks5d-splice
    socks5d-workers   --loop uvloop --relay splice --workers auto
    socks5d           no engine flags (smoke runs; a full run's fallback when the installed
                      socks5d accepts none of the flags above)
    dante             Dante's sockd
    microsocks        microsocks (no UDP)
    pproxy            pproxy, from its own virtual environment (no UDP ASSOCIATE)

A target that cannot run here (program missing, flag not accepted) says why through
`unavailable()`, and the benchmark skips it with that note.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import build, procs

REPO = Path(__file__).resolve().parent.parent
#: Seconds a proxy gets to accept connections after it was started.
START_TIMEOUT = 15.0
#: The username/password variants log in as this user.
USERNAME, PASSWORD = "bench", "secret"
#: Where Debian installs daemons; searched besides PATH.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


class TargetError(Exception):
    """A target did not start or stopped working."""


@dataclass
class Running:
    """A started target: where to send SOCKS5 traffic and which process tree it is."""

    name: str
    #: "127.0.0.1:PORT" of the proxy; None for the direct target
    address: str | None
    child: procs.Child | None
    #: further load generator options every client of this target runs with
    client_options: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return None if self.child is None else self.child.pid

    def check_alive(self) -> None:
        if self.child is not None and not self.child.alive():
            raise TargetError(f"{self.name} exited: {self.child.log_tail()}")


class Workspace:
    """Files one run shares between its targets: configuration, users file, logs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._logs = itertools.count(1)

    def log(self, name: str) -> Path:
        return self.directory / f"{name}-{next(self._logs)}.log"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_accepting(child: procs.Child, port: int) -> bool:
    """Poll the port until it accepts, the child exits, or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not child.alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _program(*names: str) -> str | None:
    search = f"{os.environ.get('PATH', '')}:{_SBIN}"
    for name in names:
        path = shutil.which(name, path=search)
        if path is not None:
            return path
    return None


class Target:
    """A proxy (or the lack of one) that the scenarios run against."""

    name = "target"
    supports_udp = True

    @property
    def client_options(self) -> dict[str, object]:
        """Load generator options its clients run with (`Running.client_options`)."""
        return {}

    #: connrate also runs a username/password variant
    supports_userpass = False

    def unavailable(self) -> str | None:
        """Why this target cannot run here, or None."""
        return None

    def version(self) -> str | None:
        return None

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    @contextlib.contextmanager
    def start(self, workspace: Workspace, *, userpass: bool = False) -> Iterator[Running]:
        """Start on a free loopback port, wait until it accepts, stop when the block ends."""
        last_error = TargetError(f"{self.name} did not start")
        for _ in range(3):  # another process may take the port between probe and bind
            port = _free_port()
            child = procs.Child(
                self.command(port, workspace, userpass=userpass),
                log=workspace.log(self.name),
                env=self.environment(),
            )
            with procs.running(child):
                if not _wait_accepting(child, port):
                    reason = child.log_tail() or f"exit status {child.process.poll()}"
                    last_error = TargetError(f"{self.name} did not start: {reason}")
                    continue
                yield Running(self.name, f"127.0.0.1:{port}", child, dict(self.client_options))
                return
        raise last_error


class Direct(Target):
    name = "direct"

    @contextlib.contextmanager
    def start(self, workspace: Workspace, *, userpass: bool = False) -> Iterator[Running]:
        yield Running(self.name, None, None)


class Socks5d(Target):
    """socks5d from this repository: the run's snapshot of src/ comes first on PYTHONPATH."""

    supports_userpass = True

    def __init__(
        self, name: str, flags: Sequence[str], client_options: dict[str, object] | None = None
    ) -> None:
        self.name = name
        self.flags = tuple(flags)
        self._client_options = dict(client_options or {})

    @property
    def client_options(self) -> dict[str, object]:
        return self._client_options

    def with_config(self, name: str, extra: str) -> Socks5d:
        """This configuration with `extra` appended to the benchmark's configuration file."""
        return _ConfiguredSocks5d(f"{self.name}-{name}", self.flags, self._client_options, extra)

    def unavailable(self) -> str | None:
        accepted = serve_flags()
        if accepted is None:
            return "python3 -m socks5d serve --help failed"
        missing = [flag for flag in self.flags if flag.startswith("--") and flag not in accepted]
        if missing:
            return f"socks5d serve does not accept {', '.join(missing)} yet"
        return None

    def version(self) -> str | None:
        return _socks5d_version()

    def environment(self) -> dict[str, str]:
        return socks5d_environment()

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        command = [sys.executable, "-m", "socks5d", "serve", "--listen", f"127.0.0.1:{port}"]
        command += ["--config", str(socks5d_config(workspace)), *self.flags]
        if userpass:
            command += ["--users", str(socks5d_users(workspace))]
        return command


class _ConfiguredSocks5d(Socks5d):
    """A `Socks5d` whose configuration file has more in it (`Socks5d.with_config`)."""

    def __init__(
        self, name: str, flags: Sequence[str], client_options: dict[str, object], extra: str
    ) -> None:
        super().__init__(name, flags, client_options)
        self.extra = extra

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        config = workspace.directory / f"{self.name}.toml"
        if not config.exists():
            config.write_text(SOCKS5D_CONFIG + self.extra)
        command = super().command(port, workspace, userpass=userpass)
        command[command.index("--config") + 1] = str(config)
        return command


class RoutedSocks5d(Socks5d):
    """socks5d whose one `[[route]]` sends every request through a second socks5d (the
    upstream, the same flags, started first on its own port): the cost of a routing hop
    next to `socks5d-splice` going direct. CPU and memory figures are the front process's
    only; the hop's own cost shows in the rate and the throughput."""

    @contextlib.contextmanager
    def start(self, workspace: Workspace, *, userpass: bool = False) -> Iterator[Running]:
        upstream = Socks5d(f"{self.name}-upstream", self.flags)
        with upstream.start(workspace) as hop:
            config = workspace.directory / f"{self.name}.toml"
            config.write_text(f'{SOCKS5D_CONFIG}\n[[route]]\nvia = ["socks5://{hop.address}"]\n')
            self._config = config
            with super().start(workspace, userpass=userpass) as running:
                yield running

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        command = super().command(port, workspace, userpass=userpass)
        command[command.index("--config") + 1] = str(self._config)
        return command


#: The socks5d source the socks5d targets run: the run's snapshot once `use_socks5d_source`
#: has set it, so that every proxy of a run executes the same code.
_socks5d_source = [REPO / "src"]


def use_socks5d_source(path: Path) -> None:
    """Run socks5d from `path` (a directory holding the socks5d package) from now on."""
    _socks5d_source[0] = path
    _serve_help.clear()


def socks5d_environment() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(_socks5d_source[0]), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


_serve_help: list[set[str] | None] = []


def serve_flags() -> set[str] | None:
    """The options `socks5d serve` accepts, from its --help (asked once)."""
    if not _serve_help:
        result = subprocess.run(
            [sys.executable, "-m", "socks5d", "serve", "--help"],
            capture_output=True,
            text=True,
            env=socks5d_environment(),
            check=False,
        )
        found = set(re.findall(r"--[a-z][a-z0-9-]*", result.stdout))
        _serve_help.append(found if result.returncode == 0 else None)
    return _serve_help[0]


def _socks5d_version() -> str | None:
    result = subprocess.run(
        [sys.executable, "-m", "socks5d", "--version"],
        capture_output=True,
        text=True,
        env=socks5d_environment(),
        check=False,
    )
    return result.stdout.strip() or None


SOCKS5D_CONFIG = """\
# Written by the benchmark: limits high enough for 10,000 tunnels and 64 concurrent clients,
# timeouts long enough that nothing idles out during a run. Access logging stays on.
log_format = "text"
log_level = "info"

[timeouts]
handshake = 60
connect = 10
idle = 86400

[udp]
idle_timeout = 3600

[limits]
max_sessions = 100000
max_sessions_per_client = 100000
max_handshakes = 100000
max_handshakes_per_client = 100000
max_udp_associations_per_client = 1024
"""


def socks5d_config(workspace: Workspace) -> Path:
    path = workspace.directory / "socks5d.toml"
    if not path.exists():
        path.write_text(SOCKS5D_CONFIG)
    return path


def socks5d_users(workspace: Workspace) -> Path:
    """A users file with USERNAME, made by `socks5d passwd` (password on stdin)."""
    path = workspace.directory / "users"
    if not path.exists():
        result = subprocess.run(
            [sys.executable, "-m", "socks5d", "passwd", str(path), USERNAME],
            input=f"{PASSWORD}\n",
            capture_output=True,
            text=True,
            env=socks5d_environment(),
            check=False,
        )
        if result.returncode != 0:
            raise TargetError(f"socks5d passwd failed: {result.stderr.strip()}")
    return path


class Dante(Target):
    """Dante's sockd (Debian package dante-server, installed as /usr/sbin/danted)."""

    name = "dante"

    def unavailable(self) -> str | None:
        if _program("sockd", "danted") is None:
            return "Dante's sockd is not installed (Debian package dante-server)"
        return None

    def version(self) -> str | None:
        binary = _program("sockd", "danted")
        if binary is None:
            return None
        result = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
        return (result.stdout + result.stderr).strip().split(".  ")[0] or None

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        config = workspace.directory / f"sockd-{port}.conf"
        config.write_text(sockd_config(port))
        binary = _program("sockd", "danted")
        assert binary is not None
        pidfile = workspace.directory / f"sockd-{port}.pid"
        return [binary, "-f", str(config), "-p", str(pidfile), "-N", "1"]


def sockd_config(port: int) -> str:
    """Loopback in and out, no authentication, every command, one log line per session."""
    users = ""
    if os.geteuid() == 0:  # sockd will not serve clients as root unless told to
        users = "user.privileged: root\nuser.unprivileged: nobody\n"
    return (
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: 127.0.0.1\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        f"{users}"
        "timeout.negotiate: 60\n"
        "timeout.io: 86400\n"
        "client pass {\n"
        "    from: 127.0.0.0/8 to: 0.0.0.0/0\n"
        "    log: error\n"
        "}\n"
        "socks pass {\n"
        "    from: 127.0.0.0/8 to: 0.0.0.0/0\n"
        "    command: connect udpassociate udpreply\n"
        "    log: disconnect error\n"
        "}\n"
    )


class Microsocks(Target):
    name = "microsocks"
    supports_udp = False

    def unavailable(self) -> str | None:
        if _program("microsocks") is None:
            return "microsocks is not installed (Debian package microsocks)"
        return None

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        binary = _program("microsocks")
        assert binary is not None
        return [binary, "-i", "127.0.0.1", "-p", str(port)]


class Pproxy(Target):
    """pproxy in bench/.build/pproxy-venv; its SOCKS5 server answers CONNECT only."""

    name = "pproxy"
    supports_udp = False

    def unavailable(self) -> str | None:
        return build.pproxy_note()

    def version(self) -> str | None:
        result = subprocess.run(
            [str(build.PPROXY_BINARY), "--version"], capture_output=True, text=True, check=False
        )
        return result.stdout.strip() or None

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        return [str(build.PPROXY_BINARY), "-l", f"socks5://127.0.0.1:{port}"]


#: Every target of a full run, in table order.
FULL = (
    Direct(),
    Socks5d("socks5d-asyncio", ("--loop", "asyncio", "--relay", "portable")),
    Socks5d("socks5d-uvloop", ("--loop", "uvloop", "--relay", "portable")),
    Socks5d("socks5d-splice", ("--loop", "uvloop", "--relay", "splice")),
    # every connection from a load balancer on this host, with a PROXY v2 header
    Socks5d(
        "socks5d-proxyv2",
        ("--loop", "uvloop", "--relay", "splice", "--proxy-protocol-from", "127.0.0.1"),
        {"proxy-protocol": 2},
    ),
    # every request through a second socks5d (a [[route]] upstream)
    RoutedSocks5d("socks5d-routed", ("--loop", "uvloop", "--relay", "splice")),
    Socks5d("socks5d-workers", ("--loop", "uvloop", "--relay", "splice", "--workers", "auto")),
    Dante(),
    Microsocks(),
    Pproxy(),
)
#: socks5d with no engine flags: what smoke runs use, whatever the installed socks5d accepts.
PLAIN_SOCKS5D = Socks5d("socks5d", ())
#: The third-party proxies socks5d is compared with.
PEERS = ("dante", "microsocks", "pproxy")


def by_name() -> dict[str, Target]:
    return {target.name: target for target in (*FULL, PLAIN_SOCKS5D)}


def is_socks5d(name: str) -> bool:
    return name == "socks5d" or name.startswith("socks5d-")
