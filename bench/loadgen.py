"""Driving bench/loadgen.c: its servers (echo, sink, source, UDP echo) and its client modes.

Every client run is one process that prints one JSON line; a run that fails prints
`{"error": ...}` and exits non-zero, and becomes a `LoadgenError` here.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs

#: Seconds a client run may take beyond its own duration (setup, tunnels, draining).
RUN_MARGIN = 60.0
#: Seconds to wait for a server's or an idle holder's ready line.
READY_TIMEOUT = 10.0

Figures = dict[str, Any]


class LoadgenError(Exception):
    """A load generator run failed or printed no result."""


@dataclass(frozen=True)
class Ports:
    """Where the load generator's servers listen on 127.0.0.1."""

    echo: int
    sink: int
    source: int
    udp: int


def _read_line(stream: Any, timeout: float) -> str:
    """One line from a child's stdout pipe, waiting at most `timeout` seconds for it."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise LoadgenError(f"no output within {timeout:.0f} s")
    return stream.readline().decode(errors="replace")


def _parse(line: str) -> Figures:
    try:
        figures = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LoadgenError(f"unreadable output {line!r}") from exc
    if "error" in figures:
        raise LoadgenError(figures["error"])
    return dict(figures)


class Loadgen:
    """The compiled load generator."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    @contextlib.contextmanager
    def servers(self, log: Path) -> Iterator[tuple[procs.Child, Ports]]:
        """Echo, sink, source and UDP echo servers, for the duration of the block."""
        child = procs.Child(
            [str(self.binary), "server"], log=log, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        with procs.running(child):
            assert child.process.stdout is not None
            line = _read_line(child.process.stdout, READY_TIMEOUT)
            yield child, Ports(**_parse(line))

    def run(
        self,
        mode: str,
        destination: int,
        proxy: str | None,
        *,
        credentials: tuple[str, str] | None = None,
        cpus: set[int] | None = None,
        time_limit: float,
        client_options: Mapping[str, object] | None = None,
        **options: object,
    ) -> Figures:
        """Run one client mode to its end and return its figures.

        Args:
            destination: the 127.0.0.1 port of the server the traffic is for.
            proxy: "127.0.0.1:PORT" of the SOCKS5 proxy, or None to connect directly.
            credentials: username and password (RFC 1929).
            cpus: pin the load generator to these CPUs.
            time_limit: seconds the run may take in all before it counts as failed.
            client_options, options: further `--name value` options: the target's
                (`Running.client_options`), and the mode's.
        """
        command = [*self._command(mode, destination, proxy, credentials)]
        for name, value in {**(client_options or {}), **options}.items():
            command += [f"--{name}", str(value)]
        child = procs.Child(command, stdout=subprocess.PIPE, cpus=cpus)
        with procs.running(child):
            try:
                output, _ = child.process.communicate(timeout=time_limit)
            except subprocess.TimeoutExpired as exc:
                raise LoadgenError(f"{mode} did not finish within {time_limit:.0f} s") from exc
        lines = output.decode(errors="replace").strip().splitlines()
        if not lines:
            raise LoadgenError(f"{mode} exited {child.process.returncode} without a result")
        return _parse(lines[-1])

    @contextlib.contextmanager
    def hold_idle(
        self,
        destination: int,
        proxy: str | None,
        *,
        tunnels: int,
        timeout: float,
        client_options: Mapping[str, object] | None = None,
        mode: str = "idle",
    ) -> Iterator[Figures]:
        """Open `tunnels` tunnels (or, `mode="associations"`, UDP associations) and hold them
        for the block; yields the ready figures (held, failed, seconds) and adds `still_open`
        once the holder has let go.
        """
        command = self._command(mode, destination, proxy, None)
        command += ["--tunnels", str(tunnels), "--timeout", str(timeout)]
        for name, value in (client_options or {}).items():
            command += [f"--{name}", str(value)]
        child = procs.Child(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        with procs.running(child):
            assert child.process.stdin is not None and child.process.stdout is not None
            ready = _parse(_read_line(child.process.stdout, timeout + READY_TIMEOUT))
            yield ready
            child.process.stdin.close()
            with contextlib.suppress(LoadgenError, ValueError):
                ready.update(_parse(_read_line(child.process.stdout, READY_TIMEOUT)))

    def _command(
        self, mode: str, destination: int, proxy: str | None, credentials: tuple[str, str] | None
    ) -> list[str]:
        command = [str(self.binary), mode, "--dest", f"127.0.0.1:{destination}"]
        if proxy is not None:
            command += ["--proxy", proxy]
        if credentials is not None:
            command += ["--user", credentials[0], "--password", credentials[1]]
        return command
