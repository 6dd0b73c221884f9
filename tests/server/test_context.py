"""What a handler gets: `SessionContext`, the server's `Services`, the method and command tables.

The handlers and authentication methods know their context, never the session or the server
(no import of session.py or listen.py, not even for type checking); the rules' answer for a
BIND peer or a UDP datagram (`decide`) writes nothing, the answer for the request itself
(`authorize`) decides the session and names the rule in its record; a reload swaps the
services whole, and a session keeps the services it started with.
"""

from __future__ import annotations

import ast
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from socks5d.config import build_config
from socks5d.errors import NotAllowed
from socks5d.proto import Address, AuthMethod, Command
from socks5d.server import Server
from socks5d.server.auth import AUTHENTICATORS
from socks5d.server.session import COMMANDS, Session

SERVER_SOURCES = Path(__file__).parents[2] / "src" / "socks5d" / "server"
#: The modules a session dispatches to, and what they must not import.
HANDLERS = ["auth", "gssapi", "connect", "bind", "udp", "context", "passwords"]
FORBIDDEN = {"socks5d.server.session", "socks5d.server.listen"}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at run time or under TYPE_CHECKING alike."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("module", HANDLERS)
def test_a_handler_imports_its_context_and_never_the_session_or_the_server(module: str) -> None:
    assert imported_modules(SERVER_SOURCES / f"{module}.py") & FORBIDDEN == set()


def test_every_method_and_every_command_has_its_entry_in_the_tables() -> None:
    assert set(AUTHENTICATORS) == {
        AuthMethod.NO_AUTHENTICATION_REQUIRED,
        AuthMethod.USERNAME_PASSWORD,
        AuthMethod.GSSAPI,
    }
    assert set(COMMANDS) == {Command.CONNECT, Command.BIND, Command.UDP_ASSOCIATE}


@pytest.fixture
def server() -> Server:
    config = build_config(
        {"socks": [{"action": "block", "to": ["127.0.0.2/32"]}]}, listen=["127.0.0.1:0"]
    )
    return Server(config)


@pytest.fixture
def session(server: Server) -> Iterator[Session]:
    """A session of `server` on one end of a socket pair (never run)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        peer = ("127.0.0.1", 40000)
        yield Session(
            server.services, server.tunnels, ours, peer, "127.0.0.1:1080", Address.from_host(*peer)
        )


BLOCKED = Address.from_host("127.0.0.2", 80)
ALLOWED = Address.from_host("127.0.0.1", 80)


def test_decide_names_the_rule_that_blocks_and_writes_nothing(session: Session) -> None:
    decision = session.decide(Command.UDP_ASSOCIATE, BLOCKED)
    assert (decision.allowed, decision.rule) == (False, "socks[0]")
    assert session.decide(Command.UDP_ASSOCIATE, ALLOWED).allowed
    assert session.record["rule"] is None


def test_decide_names_the_default_when_no_rule_matches() -> None:
    config = build_config({"rules": {"socks_default": "block"}}, listen=["127.0.0.1:0"])
    ours, theirs = socket.socketpair()
    with ours, theirs:
        server = Server(config)
        peer = ("127.0.0.1", 40000)
        session = Session(
            server.services, server.tunnels, ours, peer, "127.0.0.1:1080", Address.from_host(*peer)
        )
        decision = session.decide(Command.CONNECT, ALLOWED)
    assert (decision.allowed, decision.rule) == (False, "rules.socks_default")


def test_authorize_refuses_the_request_and_its_record_names_the_rule(session: Session) -> None:
    session.authorize(Command.CONNECT, ALLOWED)
    assert session.record["rule"] is None
    with pytest.raises(NotAllowed, match=r"connect to 127\.0\.0\.2:80 blocked by socks\[0\]"):
        session.authorize(Command.CONNECT, BLOCKED)
    assert session.record["rule"] == "socks[0]"


def test_a_reload_swaps_the_services_whole_and_a_session_keeps_its_own(
    server: Server, session: Session
) -> None:
    before = server.services
    server.apply(build_config({}, listen=["127.0.0.1:0"]))
    after = server.services
    assert after is not before
    assert (server.config, server.rules) == (after.config, after.rules)
    # the counters live on: a slot taken before the reload goes back where it came from
    assert after.session_slots is before.session_slots
    assert after.throttle is before.throttle
    assert after.authenticator is before.authenticator
    # the session judges by the rules it started with
    assert session.services is before
    assert not session.decide(Command.CONNECT, BLOCKED).allowed
