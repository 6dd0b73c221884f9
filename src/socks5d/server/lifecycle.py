"""One server process from start to exit: signals, reload, drain, log reopening, the drop of
privileges, and what the service manager is told (`notify`).

| signal  | what the server does                                                        |
|---------|-----------------------------------------------------------------------------|
| SIGHUP  | reload: configuration, users, listen addresses; all or nothing              |
| SIGTERM | drain: stop accepting, let open sessions go on up to `timeouts.drain` s     |
| SIGTERM | again during the drain: stop at once                                        |
| SIGINT  | stop at once: every session ends (`outcome=server closing`)                 |
| SIGUSR1 | reopen the log file (logrotate); ignored, with a log line, without one      |

Either way the process exits with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
from collections.abc import Callable

from socks5d import __version__
from socks5d.config import ServerConfig
from socks5d.errors import ConfigError
from socks5d.server.accesslog import reopen_log_file
from socks5d.server.admin import AdminServer, LocalSource, bind_admin
from socks5d.server.control import serve_control
from socks5d.server.listen import Server
from socks5d.server.notify import Notifier
from socks5d.server.privileges import drop_privileges, refuse_readable_secrets
from socks5d.server.runtime import settle_heap, unblock_signals
from socks5d.users import UserDatabase

# The process's own lines (ready, reload, drain, stop) keep the logger name they have always
# had, which log filters and alerts match on.
log = logging.getLogger("socks5d.cli")

Loader = Callable[[], tuple[ServerConfig, UserDatabase | None]]

#: The least number of seconds between two `STATUS=` notifications of the session count.
STATUS_INTERVAL = 5.0


class _Control:
    """What the signal handlers of one `run_server` change, and the service manager's view."""

    def __init__(self, server: Server, notifier: Notifier | None, load: Loader | None) -> None:
        self.server = server
        self.notifier = notifier
        self.load = load
        #: None while serving; "drain" after SIGTERM; "stop" after SIGINT or a second SIGTERM
        self.mode: str | None = None
        self.wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._status_timer: asyncio.TimerHandle | None = None
        self._status_sent = -math.inf
        self._status_count = 0

    def terminate(self) -> None:
        """SIGTERM: drain; during a drain, stop at once."""
        if self.mode is None:
            self.mode = "drain"
        elif self.mode == "drain":
            log.info("SIGTERM again: stopping at once")
            self.mode = "stop"
        self.wake.set()

    def interrupt(self) -> None:
        """SIGINT: stop at once."""
        self.mode = "stop"
        self.wake.set()

    def reload(self) -> None:
        """SIGHUP: read the configuration and users again; keep the old ones if that fails.
        The service manager hears RELOADING=1, then READY=1 either way: a configuration serves.
        """
        assert self.load is not None
        if self.server.draining:  # the listeners are closed for good
            log.info("reload ignored: draining")
            return
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            config, users = self.load()
            self.server.reload(config, users)
        except (ConfigError, ValueError, OSError) as exc:
            log.error("reload failed, keeping the previous configuration: %s", exc)
            self.server.stats.count_reload(False)
            self.ready(f"reload failed, previous configuration serving: {exc}")
            return
        settle_heap()  # what the reload replaced is collected; the new configuration frozen
        log.info("configuration reloaded")
        self.server.stats.count_reload(True)
        self.ready(self.listening())

    def listening(self) -> str:
        """The status line of a server that accepts."""
        names = ", ".join(f"{host}:{port}" for host, port in self.server.addresses)
        return f"listening on {names}, {self.server.active_sessions} sessions open"

    def ready(self, status: str) -> None:
        """READY=1 with `status` and the session count."""
        if self.notifier is not None:
            count = self.server.active_sessions
            self.notifier.send(READY=1, STATUS=status, SESSIONS=count)
            self._status_count = count

    def sessions_changed(self) -> None:
        """The open-session count may have changed: tell the service manager, at most once
        every `STATUS_INTERVAL` seconds."""
        if self.notifier is None or self._status_timer is not None:
            return
        wait = self._status_sent + STATUS_INTERVAL - self._loop.time()
        if wait > 0:
            self._status_timer = self._loop.call_later(wait, self._send_status)
        else:
            self._send_status()

    def _send_status(self) -> None:
        self._status_timer = None
        count = self.server.active_sessions
        if self.notifier is None or count == self._status_count:
            return
        self._status_count = count
        self._status_sent = self._loop.time()
        # SESSIONS= is what a supervisor of worker processes adds up.
        self.notifier.send(STATUS=f"{count} sessions open", SESSIONS=count)

    async def serve(self) -> None:
        """Return when the server is to stop: after a drain, or at once."""
        await self.wake.wait()
        self.wake.clear()
        server = self.server
        if self.notifier is not None:
            self.notifier.stopping(f"stopping, {server.active_sessions} sessions open")
        if self.mode != "drain":
            return
        drain = asyncio.create_task(server.drain(server.config.timeouts.drain))
        stop = asyncio.create_task(self.wake.wait())
        try:
            await asyncio.wait({drain, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not drain.done():
                drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        if not drain.cancelled() and drain.result() == 0:  # else `drain` said what it closed
            log.info("drained: every session ended")

    def close(self) -> None:
        if self._status_timer is not None:
            self._status_timer.cancel()


def _reopen_log() -> None:
    """SIGUSR1: reopen the log file by its name (logrotate's `postrotate`)."""
    try:
        reopened = reopen_log_file()
    except OSError as exc:
        log.error("SIGUSR1: %s; still writing to the log file opened before", exc)
        return
    if reopened:
        log.info("log file reopened")
    else:
        log.info("SIGUSR1 ignored: no log file to reopen (logging to stderr)")


async def run_server(
    config: ServerConfig,
    users: UserDatabase | None = None,
    reload: Loader | None = None,
    *,
    reuse_port: bool = False,
    notifier: Notifier | None = None,
    control_socket: socket.socket | None = None,
) -> None:
    """Serve until stopped by a signal (see the module docstring). SIGHUP reloads the
    configuration through `reload`, without touching established tunnels.

    Args:
        reuse_port: listen beside the other worker processes (SO_REUSEPORT).
        notifier: where READY, RELOADING, STOPPING and STATUS go; `NOTIFY_SOCKET`'s socket
            when not given.
        control_socket: a worker's control socket, answered while the server runs
            (server/control.py).

    Raises:
        ConfigError: secrets readable by everyone while serving as root, or `user` cannot
            be switched to.
        OSError: a listen address cannot be bound (`ListenError`: the message names it).
    """
    refuse_readable_secrets(config)
    loop = asyncio.get_running_loop()
    own_notifier = notifier is None
    if notifier is None:
        notifier = Notifier.from_environment()
    server = Server(config, users, reuse_port=reuse_port)
    control = _Control(server, notifier, reload)
    handlers = {
        signal.SIGTERM: control.terminate,
        signal.SIGINT: control.interrupt,
        signal.SIGUSR1: _reopen_log,
    }
    if reload is not None:  # before listening: a SIGHUP must never find the default action
        handlers[signal.SIGHUP] = control.reload
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    unblock_signals(handlers)
    try:
        async with server, contextlib.AsyncExitStack() as services:
            if control_socket is not None:  # a worker's, under `--workers` with admin.listen
                await services.enter_async_context(serve_control(server, control_socket))
            elif config.admin.listen is not None and not reuse_port:
                # One process: the endpoint runs on this loop, bound before the drop.
                endpoint = AdminServer(
                    config.admin.listen, LocalSource(server), sock=bind_admin(config.admin.listen)
                )
                await services.enter_async_context(endpoint)  # it logs its address
            # "bind the listeners, open the log file, then setgid/setuid before serving"
            drop_privileges(config.user, config.group)
            log.info(
                "socks5d %s ready: %s event loop, %s relay, pid %d",
                __version__,
                "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
                type(server.relay_engine).__name__.removesuffix("Engine").lower(),
                os.getpid(),
            )
            settle_heap()
            control.ready(control.listening())
            server.watch_sessions(control.sessions_changed)
            await control.serve()
            log.info("shutting down")
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
        control.close()
        if own_notifier and notifier is not None:
            notifier.close()
    log.info("stopped")
