"""Log formatting: `TextFormatter` (`key=value` fields) and `JsonFormatter` (one object a line).

Formatters are checked on hand-made records, and on the real access records of a server that
has just checked a password, which must never appear in any log line.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from socks5d.proto import (
    NEED_DATA,
    AuthMethod,
    AuthResult,
    ClientConnection,
    Greeting,
    MethodSelected,
    UserPassAuth,
)
from socks5d.server.accesslog import (
    ACCESS_FIELDS,
    ACCESS_LOGGER,
    JsonFormatter,
    TextFormatter,
    configure_logging,
)

#: 2026-11-25T12:00:00.123Z
CREATED = 1795608000.123

#: `key=value` where value is bare, or a JSON string when it had to be quoted
FIELD = re.compile(r' ([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]+)')


def make_record(
    fields: dict[str, Any] | None = None,
    message: str = "session",
    name: str = ACCESS_LOGGER,
    level: int = logging.INFO,
) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {
            "name": name,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": message,
            "created": CREATED,
            "msecs": 123.0,
        }
    )
    if fields is not None:
        record.fields = fields
    return record


def session_fields(**changes: Any) -> dict[str, Any]:
    """An access record shaped like the one `Session` logs."""
    fields: dict[str, Any] = dict.fromkeys(ACCESS_FIELDS)
    fields.update(
        client="127.0.0.1:50000",
        listener="127.0.0.1:1080",
        user="alice",
        command="connect",
        destination="example.com:443",
        reply="succeeded",
        bytes_up=517,
        bytes_down=4096,
        duration=0.25,
        outcome=None,
    )
    fields.update(changes)
    return fields


def text_fields(line: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of a text line, quoted values decoded."""
    return [
        (key, json.loads(value) if value.startswith('"') else value)
        for key, value in FIELD.findall(line)
    ]


# --- TextFormatter --------------------------------------------------------------------------- ---


def test_text_line_starts_with_utc_time_level_logger_and_message() -> None:
    line = TextFormatter().format(make_record(session_fields()))
    assert line.startswith("2026-11-25T12:00:00.123Z INFO socks5d.access session client=")


def test_text_prints_fields_as_key_value_in_record_order() -> None:
    line = TextFormatter().format(make_record(session_fields()))
    assert [key for key, _ in text_fields(line)] == list(ACCESS_FIELDS)
    assert line.endswith(
        " client=127.0.0.1:50000 listener=127.0.0.1:1080 protocol=- user=alice command=connect"
        " destination=example.com:443 reply=succeeded bytes_up=517 bytes_down=4096"
        " duration=0.25 outcome=- dropped=- rule=- auth=- raw_destination=- via=- unique_id=-"
        " route=- upstream=-"
    )


def test_text_keeps_the_order_the_fields_were_given_in() -> None:
    line = TextFormatter().format(make_record({"zeta": 1, "alpha": 2, "mid": 3}))
    assert line.endswith(" zeta=1 alpha=2 mid=3")


def test_text_prints_a_dash_for_none_and_empty() -> None:
    line = TextFormatter().format(make_record({"user": None, "reply": "", "bytes_up": 0}))
    assert line.endswith(" user=- reply=- bytes_up=0")


@pytest.mark.parametrize(
    "value",
    [
        "auth failed: wrong username or password for 'bob'",
        "two  spaces",
        "tab\there",
        "new\nline",
        "carriage\rreturn",
        'say "hi"',
        "trailing ",
    ],
)
def test_text_quotes_values_with_spaces_or_quotes(value: str) -> None:
    line = TextFormatter().format(make_record({"outcome": value, "reply": "succeeded"}))
    assert "\n" not in line and "\r" not in line  # one record, one line
    assert text_fields(line) == [("outcome", value), ("reply", "succeeded")]


def test_text_escapes_control_characters_in_values() -> None:
    line = TextFormatter().format(make_record({"user": "evil\x1b[2Kname\x07"}))
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in line)
    assert text_fields(line) == [("user", "evil\x1b[2Kname\x07")]


def test_text_without_fields_is_just_the_message() -> None:
    record = make_record(None, message="listening on %s", name="socks5d.server.listen")
    record.args = ("127.0.0.1:1080",)
    line = TextFormatter().format(record)
    assert line == "2026-11-25T12:00:00.123Z INFO socks5d.server.listen listening on 127.0.0.1:1080"


def test_text_appends_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = make_record(session_fields(), level=logging.ERROR)
        record.exc_info = sys.exc_info()
    text = TextFormatter().format(record)
    first, _, rest = text.partition("\n")
    assert first.startswith("2026-11-25T12:00:00.123Z ERROR socks5d.access session ")
    assert rest.startswith("Traceback")
    assert "RuntimeError: boom" in rest


# --- JsonFormatter --------------------------------------------------------------------------- ---


def test_json_is_one_object_on_one_line_with_every_field() -> None:
    fields = session_fields(outcome="client closed\nduring handshake", user="jöran")
    line = JsonFormatter().format(make_record(fields))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry == {
        "time": "2026-11-25T12:00:00.123Z",
        "level": "info",
        "logger": "socks5d.access",
        "message": "session",
        **fields,
    }
    assert list(entry)[4:] == list(ACCESS_FIELDS)


def test_json_keeps_none_as_null_and_numbers_as_numbers() -> None:
    entry = json.loads(JsonFormatter().format(make_record(session_fields(user=None))))
    assert entry["user"] is None
    assert entry["bytes_up"] == 517
    assert entry["duration"] == 0.25


def test_json_without_fields_has_the_base_keys() -> None:
    record = make_record(None, message="shutting down", name="socks5d.cli")
    assert json.loads(JsonFormatter().format(record)) == {
        "time": "2026-11-25T12:00:00.123Z",
        "level": "info",
        "logger": "socks5d.cli",
        "message": "shutting down",
    }


def test_json_turns_values_it_cannot_encode_into_strings() -> None:
    entry = json.loads(JsonFormatter().format(make_record({"peer": ("127.0.0.1", 1080)})))
    assert entry["peer"] == ["127.0.0.1", 1080]
    entry = json.loads(JsonFormatter().format(make_record({"error": OSError("refused")})))
    assert entry["error"] == "refused"


def test_json_carries_the_traceback_in_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = make_record(None, message="session crashed", level=logging.ERROR)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert "RuntimeError: boom" in entry["exception"]


# --- configure_logging ---------------------------------------------------------------------- ----


@pytest.fixture
def restore_socks5d_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("socks5d")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.parametrize(
    ("log_format", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)]
)
def test_configure_logging_sends_socks5d_lines_to_stderr(
    restore_socks5d_logger: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    log_format: str,
    formatter: type[logging.Formatter],
) -> None:
    configure_logging(log_format, "warning")
    (handler,) = restore_socks5d_logger.handlers
    assert isinstance(handler.formatter, formatter)
    assert restore_socks5d_logger.level == logging.WARNING
    logging.getLogger("socks5d.test").info("hidden")
    logging.getLogger("socks5d.test").warning("shown", extra={"fields": {"k": "v"}})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "hidden" not in captured.err
    assert "shown" in captured.err


# --- no password in any log line -----------------------------------------------------------------

PASSWORD = "pw-Zq7x!correct"
WRONG_PASSWORD = "pw-Zq7x!mistyped"


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def every_socks5d_record() -> Iterator[list[logging.LogRecord]]:
    """Every record any socks5d logger emits, at any level, while the test runs."""
    logger = logging.getLogger("socks5d")
    keep = _Keep()
    saved_level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.DEBUG)
    yield keep.records
    logger.removeHandler(keep)
    logger.setLevel(saved_level)


def _log_in(address: tuple[str, int], username: str, password: str) -> bool:
    """Greeting and RFC 1929 login over a raw socket; True when the server accepts it."""
    client = ClientConnection()
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(client.send(Greeting((AuthMethod.USERNAME_PASSWORD,))))
        while True:
            event = client.next_event()
            if event is NEED_DATA:
                client.receive_data(sock.recv(4096))
            elif isinstance(event, MethodSelected):
                assert event.method == AuthMethod.USERNAME_PASSWORD
                sock.sendall(client.send(UserPassAuth(username, password)))
            elif isinstance(event, AuthResult):
                return event.success
            else:
                raise AssertionError(f"unexpected {event}")


def test_no_log_line_ever_includes_a_password(
    start_server: Callable[..., Any], every_socks5d_record: list[logging.LogRecord]
) -> None:
    server = start_server(users={"alice": PASSWORD})
    assert not _log_in(server.address, "alice", WRONG_PASSWORD)
    assert not _log_in(server.address, "mallory", PASSWORD)
    assert _log_in(server.address, "alice", PASSWORD)  # then closes before any request
    records = server.wait_records(3)
    assert sorted(record["user"] for record in records) == ["alice", "alice", "mallory"]
    server.stop()  # joins the server thread: every record has reached every handler

    access = [r for r in every_socks5d_record if r.name == ACCESS_LOGGER]
    assert len(access) >= 3
    for record in every_socks5d_record:
        for formatter in (TextFormatter(), JsonFormatter()):
            line = formatter.format(record)
            assert PASSWORD not in line
            assert WRONG_PASSWORD not in line
    texts = [TextFormatter().format(record) for record in access]
    assert any(" user=mallory " in text for text in texts)
    assert any("wrong username or password" in text for text in texts)


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR])
def test_text_escapes_unprintable_characters_of_a_message_at_every_level(level: int) -> None:
    record = logging.LogRecord(
        "socks5d.server.udp", level, __file__, 0, "dropped %s", ("a\nb\rc\x1b[2J\u200bd",), None
    )
    line = TextFormatter().format(record)
    assert line.endswith(" dropped a\\nb\\rc\\u001b[2J\\u200bd")
    assert line.isprintable()
