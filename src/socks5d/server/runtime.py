"""How the server process runs: which event loop, how many worker processes (more than one:
server/supervisor.py runs them), and the signals a server process handles.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Callable, Iterable

from socks5d.errors import ConfigError
from socks5d.extras import install_hint

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: A worker that exits within this many seconds of its start failed to start.
STARTUP_SECONDS = 2.0
#: The signals a server's event loop handles (`run_server`).
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}


def unblock_signals(handled: Iterable[signal.Signals]) -> None:
    """Let `handled` through once their handlers are installed (a new worker blocks them)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)


def loop_factory(name: str) -> LoopFactory:
    """The event loop constructor `event_loop` names: "asyncio", "uvloop", or "auto"
    (uvloop when installed).

    Raises:
        ConfigError: "uvloop" asked for and not installed.
    """
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise ConfigError(
                    f"performance.event_loop: uvloop is not installed ({install_hint('fast')})"
                ) from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def worker_count(setting: int) -> int:
    """The `workers` setting as a number: 0 ("auto") is the CPUs this process may use."""
    if setting:
        return setting
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def settle_heap() -> None:
    """Put what exists now out of the cyclic garbage collector's way (`gc.freeze`).

    Called once start-up is done, and again after a reload. The collector's full passes walk
    every tracked object; the modules, configuration and rule indexes made at start-up are
    hundreds of thousands of them, live for the whole run, and hold no garbage. Frozen, they
    are still freed by reference counting; they are only not walked. A session leaves no
    cycle when it ends (tests/server/test_no_cycles.py), so the sessions open at a reload
    may be frozen with the rest. What a reload replaced is collected first: everything is
    unfrozen, collected once, frozen again.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
