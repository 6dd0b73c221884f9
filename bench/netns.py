"""Running the benchmark in a private network namespace.

`python3 -m bench` re-executes itself under `unshare -n` (as root), so that all its traffic
stays on a loopback interface of its own: no host state is touched, and the ephemeral port
range and TIME_WAIT table are set for a connection-rate test without affecting anything else.
Where that is not permitted, the benchmark runs on the host's loopback with a warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Set in the environment of the re-executed benchmark.
MARKER = "SOCKS5D_BENCH_NETNS"
#: Per-namespace settings written inside: every port above 1024 for outgoing connections,
#: and a small TIME_WAIT table so closed connections do not hold ports (Dante, under
#: connection-rate load, otherwise runs out of them).
SYSCTLS = {
    "net/ipv4/ip_local_port_range": "1024 65000",
    "net/ipv4/tcp_max_tw_buckets": "1024",
}


def _namespace_id(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def inside() -> bool:
    """Whether this process is the re-executed benchmark in its own namespace."""
    if os.environ.get(MARKER) != "1":
        return False
    try:
        return _namespace_id("self") != _namespace_id(1)
    except OSError:
        return True  # /proc/1 unreadable: trust the marker


def reexec(argv: Sequence[str], module: str = "bench") -> str:
    """Replace this process with `python3 -m MODULE ARGV` (the benchmark) inside a new network
    namespace.

    Returns only when that is not possible, with the reason (the caller warns and runs on
    the host's loopback).
    """
    unshare = shutil.which("unshare")
    if os.geteuid() != 0:
        return "not root: cannot create a network namespace"
    if unshare is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare -n is not permitted: {probe.stderr.decode(errors='replace').strip()}"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed: cannot bring up loopback in a namespace"
    sys.stdout.flush()
    sys.stderr.flush()
    environment = dict(os.environ, **{MARKER: "1"})
    command = [unshare, "-n", "--", sys.executable, "-m", module, *argv]
    os.execve(unshare, command, environment)


def configure() -> dict[str, str]:
    """Inside the new namespace: bring loopback up and apply `SYSCTLS`.

    Returns:
        Each setting as read back after writing.
    """
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    applied = {}
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        path.write_text(value + "\n")
        applied[key.replace("/", ".")] = " ".join(path.read_text().split())
    return applied


def host_settings() -> dict[str, str]:
    """The same settings as the host has them (when no namespace could be made)."""
    settings = {}
    for key in SYSCTLS:
        try:
            settings[key.replace("/", ".")] = " ".join(
                (Path("/proc/sys") / key).read_text().split()
            )
        except OSError:
            settings[key.replace("/", ".")] = "?"
    return settings
