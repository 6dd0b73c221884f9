"""Moving bytes between the client and the destination; nothing else in socks5d does.

The seam: an engine takes two connected non-blocking sockets (and bytes the client sent ahead
of the reply), relays until both directions are done or the tunnel is idle too long, and
returns a `RelayResult`. `ENGINES` names the engines a `relay` setting can choose; it is the
one table the setting's spellings (`CHOICES`: the config check, `serve --relay`) and
`select_engine()`, the one place an engine is chosen, come from. The session never knows
which engine runs. Server and client library both use this package; it never imports the
server.

Engines, one module each, imported only when one is built (so that `fcntl`, which only the
splice engine needs, is never imported where it is missing):
- `splice.SpliceEngine` (Linux, the default there): zero-copy. Bytes go socket -> pipe ->
  socket with splice(2) inside the kernel, driven by the event loop's readiness callbacks; no
  task and no buffer per direction, and a pipe only while bytes are in flight (idle tunnels
  hold none).
- `portable.PortableEngine`: `sock_recv` / `sock_sendall`; everywhere, and for relays that
  must see the bytes.
- `protected.ProtectedEngine`: the portable engine wrapping and unwrapping GSS-API
  per-message tokens on the client's side (RFC 1961 §5); one per protected session, so not a
  `relay` setting.

Every engine keeps these promises: both directions run concurrently; a direction reads again
only after everything it read was written (backpressure: at most one read per direction is in
memory); EOF on one side shuts down writing on the other (half-close) and the tunnel ends when
both directions have ended; no traffic either way for `idle_timeout` seconds ends it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from socks5d.relay.seam import (
    DoneCallback,
    RelayEngine,
    RelayResult,
    Tunnel,
    relay,
    shutdown_write,
)

__all__ = [
    "CHOICES",
    "ENGINES",
    "DoneCallback",
    "EngineChoice",
    "RelayEngine",
    "RelayResult",
    "Tunnel",
    "relay",
    "select_engine",
    "shutdown_write",
    "splice_available",
]


@dataclass(frozen=True, slots=True)
class EngineChoice:
    """One engine a `relay` setting can name: how to build it, and whether it works here."""

    #: builds a fresh engine (importing its module only then)
    build: Callable[[], RelayEngine]
    #: True where the engine works on this machine
    available: Callable[[], bool]
    #: what it needs when it is not available, for the error: "Linux (splice(2))"
    requires: str = ""


def _build_splice() -> RelayEngine:
    from socks5d.relay.splice import SpliceEngine

    return SpliceEngine()


def _build_portable() -> RelayEngine:
    from socks5d.relay.portable import PortableEngine

    return PortableEngine()


def splice_available() -> bool:
    """True where the zero-copy engine works: Linux with os.splice (Python 3.10+)."""
    return sys.platform.startswith("linux") and hasattr(os, "splice")


def _everywhere() -> bool:
    return True


#: `relay` setting -> engine, in the order "auto" tries them: the fastest that works here.
ENGINES: dict[str, EngineChoice] = {
    "splice": EngineChoice(_build_splice, splice_available, requires="Linux (splice(2))"),
    "portable": EngineChoice(_build_portable, _everywhere),
}

#: The `relay` setting's spellings: "auto" and every engine's name.
CHOICES: tuple[str, ...] = ("auto", *ENGINES)


def select_engine(name: str = "auto") -> RelayEngine:
    """The engine called `name` (an `ENGINES` name), or for "auto" the first in `ENGINES` that
    works here (splice on Linux, else portable).

    Raises:
        ValueError: `name` is no engine, or one missing here ("splice" off Linux).
    """
    if name == "auto":
        name = next(engine for engine, choice in ENGINES.items() if choice.available())
    choice = ENGINES.get(name)
    if choice is None:
        raise ValueError(f"relay = {name}: not one of {', '.join(CHOICES)}")
    if not choice.available():
        raise ValueError(f"relay = {name} needs {choice.requires}")
    return choice.build()
