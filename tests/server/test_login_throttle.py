"""Password guessing against a running server (RFC 1929): what one client may try.

At most `auth_failures_before_block` (10) logins per client are checked or failed within
`auth_failure_window`, counted when they start: the 11th parallel login is refused before any
hash. Failures count per user name and over all names; a good login forgives only the failures
of its own name. Reaching the limit in failures blocks the client for `auth_block_time`, with
one warning in the log; a reload lifts every block. Failures are answered at once.

RFC 1929 §2: "If the server returns a `failure' (STATUS value other than X'00') status, it
MUST close the connection." Every refusal here is that failure, then EOF.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from contextlib import ExitStack

import pytest

from conftest import START_TIMEOUT, RunningServer
from socks5d.constants import USERPASS_VERSION
from socks5d.proto import Command, Reply

from .logins import (
    CLIENT,
    LOGIN_SUCCESS,
    connect_from,
    log_in,
    send_login,
    slow_hash_server,
    start_login,
    wait_until_read_by_server,
)
from .raw_client import (
    loopback_address,
    read_reply,
    read_until_eof,
    recv_exactly,
    request_bytes,
    userpass_bytes,
)

#: More parallel logins than the limit: the default `max_handshakes_per_client` admits them all.
PARALLEL = 128
#: scrypt cost of the parallel test: each check takes long enough for all 128 to be under way
#: before the first is done.
PARALLEL_COST = (1 << 14, 8, 1)
#: How long a parallel login may wait for its answer (were every password checked in turn).
ANSWER_TIMEOUT = 40.0
LIMIT = 10
WRONG = "auth failed: wrong username or password for 'alice'"
BLOCKED = "blocked after repeated failed logins"
BLOCK_WARNING = "blocking 127.0.0.1 for 300 s after 10 failed logins"


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def logged_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name.startswith("socks5d")
    ]


def assert_refused_before_greeting(running: RunningServer) -> None:
    """A new connection from 127.0.0.1 is closed without a single octet: it is blocked."""
    with connect_from(running) as late:
        assert read_until_eof(late) == b""


def reload(running: RunningServer) -> None:
    """What SIGHUP does: `Server.apply` with the same configuration and users."""
    server = running.server

    async def apply() -> None:
        server.apply(server.config, server.authenticator.users)

    assert running._loop is not None
    asyncio.run_coroutine_threadsafe(apply(), running._loop).result(START_TIMEOUT)


def outcomes(running: RunningServer, count: int) -> Counter[str]:
    return Counter(record["outcome"] for record in running.wait_records(count))


# --- attempts are counted when they start ---------------------------------------------------------


@pytest.mark.timeout(90)
def test_parallel_logins_from_one_client_get_no_more_password_checks_than_the_limit(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="socks5d")
    with (
        slow_hash_server(
            {"alice": "secret"},
            cost=PARALLEL_COST,
            event_loop=loop_name,
            timeouts={"handshake": ANSWER_TIMEOUT},
        ) as server,
        ExitStack() as stack,
    ):
        sockets = [stack.enter_context(start_login(server)) for _ in range(PARALLEL)]
        # 127 guesses, and the right password last, before the first hash is done. The
        # server is under way with each guess (has read it) when the last one is sent.
        for number, sock in enumerate(sockets[:-1]):
            sock.sendall(userpass_bytes("alice", f"guess-{number}"))
        wait_until_read_by_server(sockets[:-1])
        sockets[-1].sendall(userpass_bytes("alice", "secret"))
        statuses = []
        for sock in sockets:
            sock.settimeout(ANSWER_TIMEOUT)  # all of them checked one after the other: long
            version, status = recv_exactly(sock, 2)
            assert version == USERPASS_VERSION
            statuses.append(status)
            if status != LOGIN_SUCCESS:
                assert read_until_eof(sock) == b""
        assert statuses[-1] != LOGIN_SUCCESS, "the right password, sent last, was checked"
        assert LOGIN_SUCCESS not in statuses
        seen = outcomes(server, PARALLEL)
        assert seen[WRONG] == LIMIT  # exactly the limit of logins had their password checked
        refusals = set(seen) - {WRONG}
        assert refusals <= {
            "auth failed: limit of 10 failed or pending logins per client reached",
            f"auth failed: {BLOCKED}",
        }
        assert_refused_before_greeting(server)
    assert logged_warnings(caplog) == [BLOCK_WARNING]


# --- failures per name and over all names ---------------------------------------------------------


def test_a_good_login_with_an_own_account_does_not_forgive_guesses_at_another(
    start_server,
) -> None:
    server = start_server(users={"alice": "secret", "mallory": "mallory-pw"})
    for guesses in (range(0, 4), range(4, 8)):
        for number in guesses:
            assert log_in(server, "alice", f"guess-{number}") != LOGIN_SUCCESS
        assert log_in(server, "mallory", "mallory-pw") == LOGIN_SUCCESS
    for number in (8, 9):
        assert log_in(server, "alice", f"guess-{number}") != LOGIN_SUCCESS
    assert_refused_before_greeting(server)  # the 10th failure blocked 127.0.0.1
    assert server.server.refused == {BLOCKED: 1}


def test_guesses_at_many_names_add_up_to_one_block(start_server) -> None:
    server = start_server(users={"alice": "secret"}, limits={"auth_failures_before_block": 3})
    for name in ("alice", "bob", "carol"):
        assert log_in(server, name, "guess") != LOGIN_SUCCESS
    assert_refused_before_greeting(server)


def test_a_good_login_forgives_the_failures_of_its_own_name(start_server) -> None:
    server = start_server(users={"alice": "secret"}, limits={"auth_failures_before_block": 3})
    for _ in range(3):
        assert log_in(server, "alice", "typo") != LOGIN_SUCCESS
        assert log_in(server, "alice", "typo") != LOGIN_SUCCESS
        assert log_in(server, "alice", "secret") == LOGIN_SUCCESS
    assert not server.server.refused


# --- no delay -------------------------------------------------------------------------------------


def test_a_failed_login_is_answered_at_once(start_server) -> None:
    # A handshake deadline shorter than any delay the server could add before answering.
    server = start_server(users={"alice": "secret"}, timeouts={"handshake": 0.2})
    assert log_in(server, "alice", "guess") != LOGIN_SUCCESS
    assert server.wait_records(1)[0]["outcome"] == WRONG


# --- the block: logged once, lifted by a reload ---------------------------------------------------


def test_a_block_is_logged_once_and_a_reload_lifts_it_and_clears_the_counts(
    start_server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="socks5d")
    server = start_server(users={"alice": "secret"})
    for number in range(LIMIT):
        assert log_in(server, "alice", f"guess-{number}") != LOGIN_SUCCESS
    for _ in range(3):
        assert_refused_before_greeting(server)
    assert logged_warnings(caplog) == [BLOCK_WARNING]

    reload(server)
    assert log_in(server, "alice", "secret") == LOGIN_SUCCESS
    # The counts are gone too: the limit of failures is whole again.
    for number in range(LIMIT - 1):
        assert log_in(server, "alice", f"again-{number}") != LOGIN_SUCCESS
    assert log_in(server, "alice", "secret") == LOGIN_SUCCESS
    assert logged_warnings(caplog) == [BLOCK_WARNING]


def test_a_blocked_client_cannot_log_in_on_a_connection_opened_before_the_block(
    start_server,
) -> None:
    server = start_server(users={"alice": "secret"}, limits={"auth_failures_before_block": 4})
    with ExitStack() as stack:
        early = [stack.enter_context(start_login(server)) for _ in range(5)]
        for sock in early[:4]:
            assert send_login(sock, "alice", "guess") != LOGIN_SUCCESS
        assert server.wait_records(4)
        assert_refused_before_greeting(server)
        assert send_login(early[4], "alice", "secret") != LOGIN_SUCCESS
    assert server.wait_records(5)[-1]["outcome"] == f"auth failed: {BLOCKED}"


def test_a_block_covers_the_whole_client_prefix_and_no_other(
    start_server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="socks5d")
    server = start_server(
        users={"alice": "secret"},
        limits={"client_prefix_v4": 24, "auth_failures_before_block": 2},
    )
    assert log_in(server, "alice", "guess", source="127.0.0.2") != LOGIN_SUCCESS
    assert log_in(server, "alice", "guess", source="127.0.0.3") != LOGIN_SUCCESS
    with connect_from(server, "127.0.0.4") as neighbour:
        assert read_until_eof(neighbour) == b""
    assert log_in(server, "alice", "secret", source="127.0.1.1") == LOGIN_SUCCESS
    assert logged_warnings(caplog) == ["blocking 127.0.0.0/24 for 300 s after 2 failed logins"]


# --- the wait for a password check ----------------------------------------------------------------


def test_a_request_sent_while_the_password_is_checked_is_served(
    loop_name: str, listener: socket.socket
) -> None:
    with (
        slow_hash_server({"alice": "secret"}, event_loop=loop_name) as server,
        start_login(server, CLIENT) as sock,
    ):
        # The request follows the credentials at once; the check takes a real scrypt.
        sock.sendall(userpass_bytes("alice", "secret"))
        sock.sendall(request_bytes(Command.CONNECT, loopback_address(listener)))
        assert recv_exactly(sock, 2)[1] == LOGIN_SUCCESS
        assert read_reply(sock)[0].reply == Reply.SUCCEEDED
        with listener.accept()[0] as destination:
            sock.sendall(b"ping")
            assert recv_exactly(destination, 4) == b"ping"
