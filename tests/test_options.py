"""The declarations of `socks5d.config.options`: what is derived from them (the loader, the
`serve` flags, the README's table) agrees with them, and a file with several errors gets them
all reported at once, one per line, in the words each key's check uses alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from socks5d import ConfigError
from socks5d.cli import main
from socks5d.config import OPTIONS, ServerConfig, build_config, load_config, markdown_table
from socks5d.config.options import SECTIONS

README = Path(__file__).resolve().parent.parent / "README.md"


def errors_of(data: dict[str, Any], **overrides: Any) -> list[str]:
    """The lines of the one `ConfigError` that `build_config(data, **overrides)` raises."""
    with pytest.raises(ConfigError) as caught:
        build_config(data, **overrides)
    return str(caught.value).splitlines()


def readme_options_table() -> str:
    """The table under README's "#### All options" heading."""
    after = README.read_text(encoding="utf-8").split("\n#### All options\n", 1)[1]
    lines = after.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


# --- what is derived from the declarations ------------------------------------------------------


def test_readme_table_of_options_is_the_generated_one() -> None:
    assert readme_options_table() == markdown_table(), (
        "README.md's options table is stale: paste socks5d.config.markdown_table()"
    )


def test_every_setting_of_every_section_is_declared_once() -> None:
    defaults = ServerConfig()
    for section in SECTIONS:
        declared = [o.attribute for o in OPTIONS if o.section == section and o.listed]
        fields = [f.name for f in dataclasses.fields(getattr(defaults, section))]
        if section == "rules":  # the lists come from [[client]], [[socks]], [[route]], [groups]
            fields = [
                name for name in fields if name not in {"client", "socks", "groups", "routes"}
            ]
        assert sorted(declared) == sorted(fields), section
    keys = [option.key for option in OPTIONS]
    assert len(keys) == len(set(keys))


def test_each_declared_default_is_what_an_empty_file_gives() -> None:
    config = build_config({})
    for option in OPTIONS:
        if option.listed:
            holder = getattr(config, option.section) if option.section else config
            assert getattr(holder, option.attribute) == option.default, option.key


def test_serve_help_shows_every_declared_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for option in OPTIONS:
        if option.flag is not None:
            assert option.flag in out, option.key


def test_each_flag_sets_the_option_it_is_declared_for(tmp_path: Path) -> None:
    keytab = tmp_path / "k.keytab"
    config = build_config(
        {},
        flags={
            "listen": ["127.0.0.1:0"],
            "users": "users",
            "auth": ["userpass"],
            "performance.workers": "2",
            "gssapi.keytab": str(keytab),
            "proxy_protocol.from": ["10.0.0.0/8", "::1"],
        },
    )
    assert [str(n) for n in config.proxy_protocol.sources] == ["10.0.0.0/8", "::1/128"]
    assert str(config.listen[0]) == "127.0.0.1:0"
    assert config.users_file == Path("users")
    assert config.performance.workers == 2
    assert config.gssapi.keytab == keytab


# --- every error at once --------------------------------------------------------------------------

SEVERAL_ERRORS = """\
listen = "127.0.0.1"
lisen = ["127.0.0.1:1080"]

[timeouts]
idel = 60
idle = -1

[limits]
auth_failure_delay = 1

[[socks]]
action = "pass"
to = ["10.0.0.0/8"]

[[socks]]
action = "allow"
port = ["80", "99999"]

[[socks]]
action = "block"
to = ["0/0", "10.0.0.0/33"]
"""

SEVERAL_ERRORS_MESSAGES = [
    'listen[0]: "127.0.0.1" is not HOST:PORT',
    "lisen: unknown setting",
    "timeouts.idel: unknown setting",
    "timeouts.idle: must be a positive number, got -1",
    "limits.auth_failure_delay: no longer used: ",
    "socks[1].action: must be one of pass, block, got 'allow'",
    'socks[1].port[1]: "99999": ',
    'socks[2].to[1]: "10.0.0.0/33": ',
]


def assert_lines_start_with(lines: list[str], prefixes: list[str]) -> None:
    assert len(lines) == len(prefixes), lines
    for line, prefix in zip(lines, prefixes, strict=True):
        assert line.startswith(prefix), (line, prefix)


def test_a_file_with_several_errors_gets_every_one_named_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "socks5d.toml"
    path.write_text(SEVERAL_ERRORS, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert_lines_start_with(str(caught.value).splitlines(), SEVERAL_ERRORS_MESSAGES)


def test_check_config_prints_every_error_on_its_own_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "socks5d.toml"
    path.write_text(SEVERAL_ERRORS, encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    expected = [f"socks5d: {message}" for message in SEVERAL_ERRORS_MESSAGES]
    assert_lines_start_with(captured.err.splitlines(), expected)


def test_serve_refuses_the_same_file_with_the_same_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "socks5d.toml"
    path.write_text(SEVERAL_ERRORS.replace('listen = "127.0.0.1"\n', ""), encoding="utf-8")
    assert main(["serve", "--config", str(path), "--listen", "127.0.0.1:0"]) == 2
    expected = [f"socks5d: {message}" for message in SEVERAL_ERRORS_MESSAGES[1:]]
    assert_lines_start_with(capsys.readouterr().err.splitlines(), expected)


def test_bad_flags_are_reported_with_the_bad_file_settings() -> None:
    lines = errors_of(
        {"performance": {"hash_queue": -1}},
        performance={"workers": "0"},
        gssapi={"service": "a/b"},
    )
    assert_lines_start_with(
        lines,
        [
            "performance.hash_queue: must be an integer from 0 to 10000, got -1",
            '--workers: must be "auto" or a number of processes, got 0',
            '--gssapi-service: must be a service name such as "rcmd"',
        ],
    )


def test_each_field_at_fault_in_one_rule_is_reported() -> None:
    rule = {"action": "pass", "form": ["10.0.0.0/8"], "command": ["jump"], "to": ["::1/129"]}
    assert_lines_start_with(
        errors_of({"socks": [rule]}),
        [
            "socks[0].form: unknown field",
            'socks[0].command[0]: "jump": not one of ',
            'socks[0].to[0]: "::1/129": ',
        ],
    )


def test_rules_in_both_lists_and_the_groups_are_all_checked() -> None:
    data = {
        "groups": {"staff": "alice", "empty": []},
        "client": [{"action": "pass", "from": ["10.0.0.0/40"]}],
        "socks": ["not a table", {"action": "pass", "group": ["staff", "nobody"]}],
    }
    assert_lines_start_with(
        errors_of(data),
        [
            "groups.empty: must not be empty",
            'client[0].from[0]: "10.0.0.0/40": ',
            "socks[0]: must be a table",
            'socks[1].group: no group "nobody" in [groups]',
        ],
    )


def test_settings_that_disagree_are_all_reported_once_each_is_valid() -> None:
    data = {
        "listen": "0.0.0.0:1080",
        "auth": ["none", "userpass"],
        "gssapi": {"levels": ["integrity"], "answer_clear": True},
    }
    assert_lines_start_with(
        errors_of(data),
        [
            'gssapi.answer_clear: needs "clear" in gssapi.levels',
            "users: required when auth includes userpass",
            "listen: 0.0.0.0:1080 is not a loopback address",
        ],
    )


def test_settings_that_disagree_wait_for_the_single_settings_to_be_valid() -> None:
    # auth is at fault, so whether an open proxy results cannot be judged yet
    assert errors_of({"listen": "0.0.0.0:1080", "auth": ["nobody"]}) == [
        'auth[0]: unknown method "nobody" (one of none, userpass, gssapi)'
    ]


def test_a_single_error_reads_exactly_as_before() -> None:
    assert errors_of({"timeouts": {"idel": 1}}) == ["timeouts.idel: unknown setting"]
    assert errors_of({"socks": [{"action": "pass", "to": ["10.0.0.0/33"]}]})[0].startswith(
        'socks[0].to[0]: "10.0.0.0/33": '
    )
