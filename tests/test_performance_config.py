"""The `[performance]` section and the `serve` flags that override it (`--workers`, `--loop`,
`--relay`), and the runtime helpers that turn the settings into an event loop and a number of
processes: `loop_factory`, `worker_count`.

Every `ConfigError` must name what is at fault: the flag when the value came from the command
line (`--workers: ...`), the key when it came from the file (`performance.workers: ...`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from socks5d import ConfigError
from socks5d.cli import main
from socks5d.config import (
    EVENT_LOOPS,
    PERFORMANCE_FLAGS,
    RELAY_ENGINES,
    Performance,
    build_config,
)
from socks5d.server.hashing import thread_count
from socks5d.server.runtime import loop_factory, worker_count


def config_error(data: dict[str, Any], **overrides: Any) -> str:
    """The message of the `ConfigError` that `build_config(data, **overrides)` raises."""
    with pytest.raises(ConfigError) as caught:
        build_config(data, **overrides)
    return str(caught.value)


def from_file(**settings: Any) -> Performance:
    return build_config({"performance": settings}).performance


def from_flags(**flags: Any) -> Performance:
    return build_config({}, performance=flags).performance


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import uvloop` fails and `find_spec("uvloop")` finds nothing, as if not installed."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


# --- valid values --------------------------------------------------------------------------------


def test_defaults_are_one_in_process_worker_and_auto_choices() -> None:
    performance = build_config({}).performance
    assert (performance.workers, performance.event_loop, performance.relay) == (1, "auto", "auto")
    assert build_config({"performance": {}}).performance == Performance()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), (2, 2), (1024, 1024), ("auto", 0), ("3", 3)],
    ids=["one", "two", "the-maximum", "auto-is-0", "a-digit-string"],
)
def test_workers_in_the_file_is_a_count_or_auto(value: Any, expected: int) -> None:
    assert from_file(workers=value).workers == expected


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("16", 16), ("1024", 1024), ("auto", 0)])
def test_workers_flag_is_a_count_or_auto(value: str, expected: int) -> None:
    assert from_flags(workers=value).workers == expected


@pytest.mark.parametrize("name", EVENT_LOOPS)
def test_every_event_loop_name_is_accepted(name: str) -> None:
    if name == "uvloop":
        pytest.importorskip("uvloop")
    assert from_file(event_loop=name).event_loop == name
    assert from_flags(event_loop=name).event_loop == name


@pytest.mark.parametrize("name", RELAY_ENGINES)
def test_every_relay_engine_name_is_accepted_on_linux(name: str) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("splice is Linux-only")
    assert from_file(relay=name).relay == name
    assert from_flags(relay=name).relay == name


# --- invalid values ------------------------------------------------------------------------------


#: Bad `workers` values; a digit string is reported as the number it spells.
BAD_WORKERS = [
    (0, "0"),
    (-1, "-1"),
    (1025, "1025"),
    (2.0, "2.0"),
    (True, "True"),
    (False, "False"),
    ("0", "0"),
    ("1025", "1025"),
    ("-2", "'-2'"),
    ("1.5", "'1.5'"),
    ("two", "'two'"),
    ("", "''"),
    (" 2", "' 2'"),
    ("AUTO", "'AUTO'"),
    ([2], "[2]"),
]


@pytest.mark.parametrize(("value", "shown"), BAD_WORKERS, ids=repr)
def test_bad_workers_in_the_file_names_the_key(value: Any, shown: str) -> None:
    message = config_error({"performance": {"workers": value}})
    assert message == f'performance.workers: must be "auto" or a number of processes, got {shown}'


@pytest.mark.parametrize(
    ("value", "shown"), [bad for bad in BAD_WORKERS if isinstance(bad[0], str)], ids=repr
)
def test_bad_workers_flag_names_the_flag(value: str, shown: str) -> None:
    message = config_error({}, performance={"workers": value})
    assert message == f'--workers: must be "auto" or a number of processes, got {shown}'


@pytest.mark.parametrize(
    "digits", ["\u00b2", "\u0661", "\uff11"], ids=["superscript", "arabic-indic", "fullwidth"]
)
def test_workers_in_non_ascii_digits_is_a_config_error_naming_the_flag_or_key(
    digits: str,
) -> None:
    # str.isdigit() is true for these, and int() refuses "²" with a bare ValueError
    shown = repr(digits)
    assert config_error({}, performance={"workers": digits}) == (
        f'--workers: must be "auto" or a number of processes, got {shown}'
    )
    assert config_error({"performance": {"workers": digits}}) == (
        f'performance.workers: must be "auto" or a number of processes, got {shown}'
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("event_loop", "trio"),
        ("event_loop", "UVLOOP"),
        ("event_loop", ""),
        ("event_loop", 1),
        ("relay", "sendfile"),
        ("relay", "Splice"),
        ("relay", True),
    ],
)
def test_bad_choice_in_the_file_names_the_key_and_the_choices(key: str, value: Any) -> None:
    choices = ", ".join(EVENT_LOOPS if key == "event_loop" else RELAY_ENGINES)
    message = config_error({"performance": {key: value}})
    assert message == f"performance.{key}: must be one of {choices}, got {value!r}"


@pytest.mark.parametrize(("key", "value"), [("event_loop", "trio"), ("relay", "sendfile")])
def test_bad_choice_from_the_command_line_names_the_flag(key: str, value: str) -> None:
    message = config_error({}, performance={key: value})
    assert message.startswith(f"{PERFORMANCE_FLAGS[key]}: must be one of ")


def test_unknown_performance_setting_names_it() -> None:
    assert config_error({"performance": {"threads": 4}}) == "performance.threads: unknown setting"


def test_performance_must_be_a_table() -> None:
    assert config_error({"performance": 4}) == "performance: must be a table"


def test_flags_override_the_file_one_by_one() -> None:
    file = {"performance": {"workers": 4, "event_loop": "asyncio", "relay": "portable"}}
    performance = build_config(
        file, performance={"workers": "2", "event_loop": None, "relay": "splice"}
    ).performance
    assert (performance.workers, performance.event_loop, performance.relay) == (
        2,
        "asyncio",
        "splice",
    )
    performance = build_config(file, performance={"workers": "auto"}).performance
    assert (performance.workers, performance.event_loop, performance.relay) == (
        0,
        "asyncio",
        "portable",
    )


def test_a_bad_flag_is_reported_even_when_the_file_is_good() -> None:
    message = config_error({"performance": {"workers": 2}}, performance={"workers": "0"})
    assert message.startswith("--workers: ")


def test_uvloop_asked_for_but_not_installed_is_refused(without_uvloop: None) -> None:
    message = config_error({"performance": {"event_loop": "uvloop"}})
    assert message.startswith("performance.event_loop: uvloop is not installed")
    assert "uvloop is not installed" in config_error({}, performance={"event_loop": "uvloop"})


def test_auto_event_loop_is_fine_without_uvloop(without_uvloop: None) -> None:
    assert from_file(event_loop="auto").event_loop == "auto"
    assert from_file(event_loop="asyncio").event_loop == "asyncio"


@pytest.mark.parametrize("missing", ["platform", "os.splice"])
def test_splice_relay_is_refused_where_splice_is_missing(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    if missing == "platform":
        monkeypatch.setattr(sys, "platform", "darwin")
    else:
        monkeypatch.delattr(os, "splice", raising=False)
    assert config_error({"performance": {"relay": "splice"}}) == (
        "performance.relay: splice needs Linux"
    )
    assert from_file(relay="auto").relay == "auto"
    assert from_file(relay="portable").relay == "portable"


# --- the command line ----------------------------------------------------------------------------


def test_performance_flags_match_the_settings() -> None:
    fields = {field.name for field in dataclasses.fields(Performance)}
    assert set(PERFORMANCE_FLAGS) == {"workers", "event_loop", "relay"}
    assert set(PERFORMANCE_FLAGS) <= fields


def test_serve_help_lists_the_performance_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for flag in PERFORMANCE_FLAGS.values():
        assert f"{flag} " in out, flag
    assert "{" + ",".join(EVENT_LOOPS) + "}" in out
    assert "{" + ",".join(RELAY_ENGINES) + "}" in out


@pytest.mark.parametrize(("flag", "value"), [("--loop", "trio"), ("--relay", "sendfile")])
def test_serve_rejects_an_unknown_choice_as_a_usage_error(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--listen", "127.0.0.1:0", flag, value])
    assert caught.value.code == 2
    assert f"argument {flag}: invalid choice: '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-3", "many", "\u00b2"])
def test_serve_with_bad_workers_exits_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert main(["serve", "--listen", "127.0.0.1:0", "--workers", value]) == 2
    assert capsys.readouterr().err.startswith("socks5d: --workers: must be ")


def test_check_config_accepts_a_performance_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "socks5d.toml"
    path.write_text(
        'listen = ["127.0.0.1:1080"]\n'
        "[performance]\n"
        "workers = 4\n"
        'event_loop = "asyncio"\n'
        'relay = "portable"\n',
        encoding="utf-8",
    )
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (listen 127.0.0.1:1080)\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("workers = 0", "socks5d: performance.workers: "),
        ('workers = "lots"', "socks5d: performance.workers: "),
        ('relay = "sendfile"', "socks5d: performance.relay: "),
        ("threads = 2", "socks5d: performance.threads: unknown setting"),
    ],
)
def test_check_config_of_a_bad_performance_section_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    path = tmp_path / "socks5d.toml"
    path.write_text(f"[performance]\n{line}\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(expected)


# --- loop_factory --------------------------------------------------------------------------------


def test_loop_factory_asyncio_builds_a_plain_asyncio_loop() -> None:
    factory = loop_factory("asyncio")
    assert factory is asyncio.new_event_loop
    loop = factory()
    try:
        assert type(loop).__module__.startswith("asyncio.")
    finally:
        loop.close()


def test_loop_factory_asyncio_never_imports_uvloop(without_uvloop: None) -> None:
    assert loop_factory("asyncio") is asyncio.new_event_loop


@pytest.mark.parametrize("name", ["auto", "uvloop"])
def test_loop_factory_builds_uvloop_when_importable(name: str) -> None:
    uvloop = pytest.importorskip("uvloop")
    factory = loop_factory(name)
    assert factory is uvloop.new_event_loop
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_loop_factory_auto_falls_back_to_asyncio_without_uvloop(without_uvloop: None) -> None:
    assert loop_factory("auto") is asyncio.new_event_loop


def test_loop_factory_uvloop_without_uvloop_is_a_config_error(without_uvloop: None) -> None:
    with pytest.raises(ConfigError, match=r"^performance\.event_loop: uvloop is not installed"):
        loop_factory("uvloop")


# --- worker_count --------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", [1, 2, 7, 1024])
def test_worker_count_of_a_number_is_that_number(setting: int) -> None:
    assert worker_count(setting) == setting


def test_worker_count_auto_is_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity here")
    assert worker_count(0) == len(os.sched_getaffinity(0))
    # the affinity mask, not the machine's CPU count
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert worker_count(0) == 3


@pytest.mark.parametrize(("cpus", "expected"), [(6, 6), (None, 1)])
def test_worker_count_auto_without_affinity_uses_the_cpu_count(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, expected: int
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert worker_count(0) == expected


# --- the password hashing bound -------------------------------------------------------------------


def test_hashing_defaults_are_auto_threads_and_a_queue_of_64() -> None:
    performance = build_config({}).performance
    assert (performance.hash_threads, performance.hash_queue) == (0, 64)


@pytest.mark.parametrize(("value", "expected"), [("auto", 0), (1, 1), (8, 8), (256, 256)])
def test_hash_threads_is_a_count_or_auto(value: Any, expected: int) -> None:
    assert from_file(hash_threads=value).hash_threads == expected


@pytest.mark.parametrize("value", [0, -1, 257, "2", 2.0, True, "AUTO"], ids=repr)
def test_bad_hash_threads_names_the_key(value: Any) -> None:
    assert config_error({"performance": {"hash_threads": value}}) == (
        f'performance.hash_threads: must be "auto" or a number of threads, got {value!r}'
    )


@pytest.mark.parametrize("value", [0, 1, 64, 10_000])
def test_hash_queue_may_be_zero_or_more(value: int) -> None:
    assert from_file(hash_queue=value).hash_queue == value


@pytest.mark.parametrize("value", [-1, 10_001, "64", 6.4, False], ids=repr)
def test_bad_hash_queue_names_the_key(value: Any) -> None:
    assert config_error({"performance": {"hash_queue": value}}) == (
        f"performance.hash_queue: must be an integer from 0 to 10000, got {value!r}"
    )


def test_auto_hash_threads_are_two_or_the_cpus_if_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert thread_count(0) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert thread_count(0) == 1
    assert thread_count(3) == 3
