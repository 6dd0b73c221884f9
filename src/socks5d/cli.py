"""Command line: `socks5d serve`, `passwd`, `check-config`, and the client commands
`connect` and `udp`.

`main(argv)` returns the exit status, so tests call it in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from socks5d import __version__
from socks5d.client import sync
from socks5d.config import ServerConfig, add_flags, flag_values, load_config
from socks5d.errors import ConfigError, ProxyTimeout, Socks5Error
from socks5d.gss import acceptor_credentials
from socks5d.proto import AuthMethod
from socks5d.server import fleet
from socks5d.server.accesslog import configure_logging, reopen_log_file
from socks5d.server.admin import bind_admin
from socks5d.server.control import ControlSockets
from socks5d.server.lifecycle import Loader, run_server
from socks5d.server.notify import ENVIRONMENT_VARIABLE as NOTIFY_VARIABLE
from socks5d.server.notify import Notifier
from socks5d.server.ports import PortReservations
from socks5d.server.runtime import loop_factory, worker_count
from socks5d.server.supervisor import Supervisor, WorkerEnds
from socks5d.users import UserDatabase, permissions_warning, set_password

log = logging.getLogger("socks5d.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="socks5d", description="SOCKS5 proxy server")
    parser.add_argument("--version", action="version", version=f"socks5d {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy server in the foreground")
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    add_flags(serve)  # one per option declared with a flag (socks5d.config.options)

    passwd = commands.add_parser("passwd", help="add a user or change a user's password")
    passwd.add_argument("file", type=Path, metavar="FILE", help="users file, created if missing")
    passwd.add_argument("name", metavar="NAME", help="user name")

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path, metavar="FILE")

    connect = commands.add_parser(
        "connect",
        help="pipe stdin/stdout to HOST PORT through a proxy (an ssh ProxyCommand, like nc -X 5)",
    )
    udp = commands.add_parser(
        "udp", help="send stdin lines as datagrams to HOST PORT through a proxy, print replies"
    )
    for client_command in (connect, udp):
        client_command.add_argument(
            "--proxy",
            action="append",
            required=True,
            metavar="URL",
            help="socks5://[user:pass@]host:port (also socks5h, socks4, socks4a); "
            "repeat to chain proxies",
        )
        client_command.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
        client_command.add_argument("host", metavar="HOST")
        client_command.add_argument("port", type=int, metavar="PORT")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "passwd":
            return _passwd(args.file, args.name)
        if args.command == "connect":
            return _connect(args.proxy, args.host, args.port, args.timeout)
        if args.command == "udp":
            return _udp(args.proxy, args.host, args.port, args.timeout)
        return _check_config(args.file)
    except ConfigError as exc:  # one line per error found
        for line in str(exc).splitlines() or [""]:
            print(f"socks5d: {line}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # Socks5Error is an OSError or carries its message
        print(f"socks5d: {exc}", file=sys.stderr)
        return 1
    except Socks5Error as exc:
        print(f"socks5d: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    def load(*, warn: bool = True) -> tuple[ServerConfig, UserDatabase | None]:
        config = load_config(args.config, flag_values(args))
        if config.users_file is None:
            return config, None
        users = UserDatabase.load(config.users_file)
        if warn:
            _warn_about_users_file(config.users_file)
        return config, users

    config, users = load(warn=False)  # the warning waits for the configured log format
    configure_logging(config.log_format, config.log_level, config.log_file)
    if config.users_file is not None:
        _warn_about_users_file(config.users_file)
    new_loop = loop_factory(config.performance.event_loop)
    workers = worker_count(config.performance.workers)

    def serve(
        config: ServerConfig, users: UserDatabase | None, reload: Loader, **options: Any
    ) -> int:
        try:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                runner.run(run_server(config, users, reload=reload, **options))
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        return 0

    if workers == 1:
        return serve(config, users, load, reuse_port=False)
    # The supervisor: it binds what the workers share (port reservations, the admin socket,
    # one control socket per worker number), then forks (server/supervisor.py).
    reservations = PortReservations()
    control: ControlSockets | None = None
    admin_socket: socket.socket | None = None
    try:
        try:
            shared = replace(config, listen=reservations.update(config.listen))
            if config.admin.listen is not None:
                admin_socket = bind_admin(config.admin.listen)
                control = ControlSockets(workers)
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        #: what a worker started now serves: the configuration of the last reload
        current = (shared, users)
        notifier = Notifier.from_environment()
        os.environ.pop(NOTIFY_VARIABLE, None)  # the supervisor alone speaks to it

        def reload_worker() -> tuple[ServerConfig, UserDatabase | None]:
            new, new_users = load()
            return replace(new, listen=reservations.shared(new.listen)), new_users

        def reload_supervisor() -> None:
            nonlocal current
            new, new_users = load(warn=False)
            added = [str(a) for a in new.listen if a not in reservations.held]
            if added and new.user is not None and os.geteuid() == 0:
                # The kernel lets sockets share a SO_REUSEPORT port only when one uid made
                # them all: the workers serve as `user` now, a worker started later binds as
                # root before it switches, so the two could never share an added port.
                raise ConfigError(
                    f"listen: {', '.join(added)} cannot be added by a reload under "
                    f"performance.workers with user = {new.user!r}: restart to add it"
                )
            current = (replace(new, listen=reservations.update(new.listen)), new_users)
            if new.admin.listen != config.admin.listen:
                log.warning("reload: admin.listen changes only on restart under workers")
            supervisor.drain = new.timeouts.drain

        def run_worker(ends: WorkerEnds) -> int:
            return serve(
                *current,
                reload_worker,
                reuse_port=True,
                notifier=Notifier(ends.notify, pid=os.getpid()),
                control_socket=ends.control,
            )

        def run_admin() -> int:
            assert config.admin.listen is not None and admin_socket is not None and control
            return fleet.run_admin(config.admin.listen, admin_socket, control.paths, new_loop)

        supervisor = Supervisor(
            workers,
            run_worker,
            reservations.sockets,
            drain=config.timeouts.drain,
            notifier=notifier,
            control=None if control is None else control.sockets,
            run_admin=None if control is None else run_admin,
            admin_socket=admin_socket,
            reload=reload_supervisor,
            reopen_log=reopen_log_file,
        )
        return supervisor.run()
    finally:
        reservations.close()
        if control is not None:
            control.close()
        if admin_socket is not None:
            admin_socket.close()


def _warn_about_users_file(path: Path) -> None:
    if (warning := permissions_warning(path)) is not None:
        log.warning("%s", warning)


def _read_password(name: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {name}: ")
        if first != getpass.getpass("Again: "):
            raise ConfigError("passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _passwd(path: Path, name: str) -> int:
    new = set_password(path, name, _read_password(name))
    print(f"{'added' if new else 'changed'} {name} in {path}", file=sys.stderr)
    _print_warning(permissions_warning(path))  # the mode is kept: say what is wrong with it
    return 0


def _print_warning(warning: str | None) -> None:
    if warning is not None:
        print(f"socks5d: warning: {warning}", file=sys.stderr)


def _check_config(path: Path) -> int:
    config = load_config(path)
    if config.users_file is not None:
        UserDatabase.load(config.users_file)
        _print_warning(permissions_warning(config.users_file))  # a warning; still OK
    if AuthMethod.GSSAPI in config.auth:  # the keytab must hold the service's key
        acceptor_credentials(config.gssapi.service, config.gssapi.keytab)
    listen = ", ".join(str(address) for address in config.listen)
    print(f"{path}: OK (listen {listen})")
    return 0


def _copy_stdin_to(sock: socket.socket) -> None:
    """stdin -> socket; at end of input, shut down our sending side (half-close)."""
    try:
        while data := os.read(sys.stdin.fileno(), 65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the connection is gone; the other direction reports it


def _connect(proxies: list[str], host: str, port: int, timeout: float) -> int:
    sock = sync.connect(host, port, proxy=list(proxies), timeout=timeout)
    with sock:
        threading.Thread(target=_copy_stdin_to, args=(sock,), daemon=True).start()
        while data := sock.recv(65536):
            os.write(sys.stdout.fileno(), data)
    return 0


def _udp(proxies: list[str], host: str, port: int, timeout: float) -> int:
    status = 0
    with sync.open_udp(proxy=list(proxies), timeout=timeout) as endpoint:
        for line in sys.stdin.buffer:
            endpoint.sendto(line.rstrip(b"\r\n"), (host, port))
            try:
                data, _ = endpoint.recvfrom(timeout=timeout)
            except ProxyTimeout:
                print(f"socks5d: no reply within {timeout:g} s", file=sys.stderr)
                status = 1
                continue
            sys.stdout.buffer.write(data + b"\n")
            sys.stdout.buffer.flush()
    return status
