"""Every row of `ERROR_FOR_REPLY` and of `error_for_oserror`: each error knows its REP."""

from __future__ import annotations

import errno
import socket

import pytest

from socks5d.errors import (
    ERROR_FOR_REPLY,
    AddressTypeNotSupported,
    CommandNotSupported,
    ConnectionRefused,
    HostUnreachable,
    NetworkUnreachable,
    NotAllowed,
    ProtocolError,
    Socks5Error,
    TTLExpired,
    error_for_oserror,
)
from socks5d.proto import Reply

REPLY_ROWS = [
    (Reply.GENERAL_FAILURE, Socks5Error),
    (Reply.CONNECTION_NOT_ALLOWED, NotAllowed),
    (Reply.NETWORK_UNREACHABLE, NetworkUnreachable),
    (Reply.HOST_UNREACHABLE, HostUnreachable),
    (Reply.CONNECTION_REFUSED, ConnectionRefused),
    (Reply.TTL_EXPIRED, TTLExpired),
    (Reply.COMMAND_NOT_SUPPORTED, CommandNotSupported),
    (Reply.ADDRESS_TYPE_NOT_SUPPORTED, AddressTypeNotSupported),
]


@pytest.mark.parametrize(
    ("reply", "error"), REPLY_ROWS, ids=[reply.name for reply, _ in REPLY_ROWS]
)
def test_error_for_reply_maps_each_failure_rep_to_the_class_that_sends_it(
    reply: Reply, error: type[Socks5Error]
) -> None:
    assert ERROR_FOR_REPLY[reply] is error
    assert error.reply == reply


def test_error_for_reply_has_a_row_for_every_failure_rep_and_none_for_success() -> None:
    assert set(ERROR_FOR_REPLY) == set(Reply) - {Reply.SUCCEEDED}


@pytest.mark.parametrize(
    ("error", "base"),
    [
        (NetworkUnreachable, OSError),
        (HostUnreachable, OSError),
        (ConnectionRefused, ConnectionRefusedError),
        (TTLExpired, TimeoutError),
        (CommandNotSupported, ProtocolError),
        (AddressTypeNotSupported, ProtocolError),
    ],
)
def test_error_is_also_the_builtin_callers_already_catch(
    error: type[Socks5Error], base: type[BaseException]
) -> None:
    assert issubclass(error, base)
    assert issubclass(error, Socks5Error)


def _os_error(number: int) -> OSError:
    # OSError(errno, ...) picks the matching subclass (ConnectionRefusedError, TimeoutError...).
    return OSError(number, f"{errno.errorcode[number]} from connect()")


OSERROR_ROWS = [
    pytest.param(_os_error(errno.ECONNREFUSED), ConnectionRefused, id="ECONNREFUSED"),
    pytest.param(_os_error(errno.ENETUNREACH), NetworkUnreachable, id="ENETUNREACH"),
    pytest.param(_os_error(errno.ENETDOWN), NetworkUnreachable, id="ENETDOWN"),
    pytest.param(_os_error(errno.EHOSTUNREACH), HostUnreachable, id="EHOSTUNREACH"),
    pytest.param(_os_error(errno.EHOSTDOWN), HostUnreachable, id="EHOSTDOWN"),
    pytest.param(_os_error(errno.ETIMEDOUT), HostUnreachable, id="ETIMEDOUT"),
    pytest.param(_os_error(errno.EACCES), NotAllowed, id="EACCES"),
    pytest.param(_os_error(errno.EPERM), NotAllowed, id="EPERM"),
    pytest.param(
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        HostUnreachable,
        id="gaierror",
    ),
    pytest.param(TimeoutError(), HostUnreachable, id="TimeoutError_without_errno"),
    pytest.param(
        ConnectionRefusedError(), ConnectionRefused, id="ConnectionRefusedError_without_errno"
    ),
]


@pytest.mark.parametrize(("exc", "error"), OSERROR_ROWS)
def test_error_for_oserror_maps_connect_failures_to_their_reply(
    exc: BaseException, error: type[Socks5Error]
) -> None:
    result = error_for_oserror(exc)
    assert type(result) is error
    assert result.reply == error.reply


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(_os_error(errno.EPIPE), id="unlisted_errno"),
        pytest.param(OSError("no errno"), id="OSError_without_errno"),
        pytest.param(ValueError("not an OSError"), id="ValueError"),
        pytest.param(RuntimeError(), id="RuntimeError_without_message"),
    ],
)
def test_error_for_oserror_maps_anything_else_to_general_failure(exc: BaseException) -> None:
    result = error_for_oserror(exc)
    assert type(result) is Socks5Error
    assert result.reply == Reply.GENERAL_FAILURE
    assert str(result)


def test_error_for_oserror_returns_a_socks5_error_unchanged() -> None:
    exc = NotAllowed("blocked by rule 3")
    assert error_for_oserror(exc) is exc


def test_error_for_oserror_keeps_the_os_message() -> None:
    result = error_for_oserror(OSError(errno.ECONNREFUSED, "Connection refused"))
    assert "Connection refused" in str(result)
