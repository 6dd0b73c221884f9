"""Command line: `socks5d serve`, `socks5d passwd`, `socks5d check-config`.

`main(argv)` returns the exit status, so tests call it in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from socks5d import __version__
from socks5d.config import AUTH_METHODS, LOG_FORMATS, ServerConfig, load_config
from socks5d.errors import ConfigError
from socks5d.server.accesslog import configure_logging
from socks5d.server.listen import Server
from socks5d.users import UserDatabase, set_password

log = logging.getLogger("socks5d.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="socks5d", description="SOCKS5 proxy server")
    parser.add_argument("--version", action="version", version=f"socks5d {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy server in the foreground")
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    serve.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="address to listen on, repeatable; [::1]:1080 for IPv6 (default 127.0.0.1:1080)",
    )
    serve.add_argument(
        "--auth",
        action="append",
        choices=list(AUTH_METHODS),
        help="accepted method, repeatable, in order of preference "
        "(default: none, or userpass alone when --users is given)",
    )
    serve.add_argument("--users", metavar="FILE", help="users file (see `socks5d passwd`)")
    serve.add_argument("--log-format", choices=LOG_FORMATS, help="log line format (default text)")
    serve.add_argument(
        "--allow-open-proxy",
        action="store_true",
        default=None,
        help="allow no-auth on a non-loopback address (an open proxy)",
    )

    serve.add_argument(
        "--no-socks4",
        dest="socks4",
        action="store_false",
        default=None,
        help="do not serve SOCKS4/4a clients (served by default while no-auth is allowed)",
    )

    passwd = commands.add_parser("passwd", help="add a user or change a user's password")
    passwd.add_argument("file", type=Path, metavar="FILE", help="users file, created if missing")
    passwd.add_argument("name", metavar="NAME", help="user name")

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path, metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "passwd":
            return _passwd(args.file, args.name)
        return _check_config(args.file)
    except ConfigError as exc:
        print(f"socks5d: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    config = load_config(
        args.config,
        listen=args.listen,
        auth=args.auth,
        users=args.users,
        log_format=args.log_format,
        allow_open_proxy=args.allow_open_proxy,
        socks4=args.socks4,
    )
    users = UserDatabase.load(config.users_file) if config.users_file else None
    configure_logging(config.log_format, config.log_level)
    try:
        asyncio.run(run_server(config, users))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


async def run_server(config: ServerConfig, users: UserDatabase | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then close every listener and session."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Server(config, users):
            await stop.wait()
            log.info("shutting down")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


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
    return 0


def _check_config(path: Path) -> int:
    config = load_config(path)
    if config.users_file is not None:
        UserDatabase.load(config.users_file)
    listen = ", ".join(str(address) for address in config.listen)
    print(f"{path}: OK (listen {listen})")
    return 0
