"""GSS-API (RFC 1961) settings: `auth = ["gssapi"]`, the `[gssapi]` table, the `--gssapi-*`
flags of `socks5d serve`, and the keytab check of `check-config` and `serve`.

Every `ConfigError` names the setting at fault: `gssapi.levels` for the file,
`--gssapi-levels` for the flag, so each error test checks the message prefix. No Kerberos
realm is needed here: a keytab that is missing or not a keytab fails before any KDC is asked.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from socks5d import ConfigError
from socks5d.cli import main
from socks5d.config import GSSAPI_FLAGS, GssapiSettings, build_config, load_config
from socks5d.proto import AuthMethod, ProtectionLevel
from socks5d.server import Server
from test_config import config_error, write

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "socks5d.toml"
CLEAR = ProtectionLevel.CLEAR
INTEGRITY = ProtectionLevel.INTEGRITY
CONFIDENTIALITY = ProtectionLevel.CONFIDENTIALITY
#: Seconds a `socks5d serve` process gets to exit.
PROCESS_TIMEOUT = 10.0
#: The flags as `cli._serve` passes them when none is given.
NO_FLAGS: dict[str, Any] = {"keytab": None, "service": None, "levels": None}


@pytest.fixture(autouse=True)
def _keep_logging_setup() -> Iterator[None]:
    """`main(["serve", ...])` must fail before it sets up logging; if it ever did not, the
    process-wide setup is put back for the tests that follow.
    """
    logger = logging.getLogger("socks5d")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


# --- auth and defaults ---------------------------------------------------------------------------


def test_auth_gssapi_is_accepted_from_the_file_and_the_flag() -> None:
    assert build_config({"auth": ["gssapi"]}).auth == (AuthMethod.GSSAPI,)
    assert build_config({}, auth=["gssapi"]).auth == (AuthMethod.GSSAPI,)
    both = build_config({"auth": ["gssapi", "none"]})
    assert both.auth == (AuthMethod.GSSAPI, AuthMethod.NO_AUTHENTICATION_REQUIRED)


def test_gssapi_alone_is_not_an_open_proxy_and_serves_no_socks4() -> None:
    config = build_config({"auth": ["gssapi"], "listen": ["0.0.0.0:1080"]})
    assert config.auth == (AuthMethod.GSSAPI,)
    assert config.serves_socks4 is False, "SOCKS4 carries no authentication"


def test_gssapi_defaults() -> None:
    settings = build_config({}).gssapi
    assert settings == GssapiSettings()
    assert settings.keytab is None
    assert settings.service == "rcmd"
    assert settings.levels == {INTEGRITY, CONFIDENTIALITY}
    assert settings.accept_unwrapped_level is False
    assert settings.answer_clear is False


def test_an_empty_gssapi_table_and_no_flags_give_the_defaults() -> None:
    assert build_config({"gssapi": {}}, gssapi=NO_FLAGS).gssapi == GssapiSettings()


def test_every_gssapi_setting_from_the_file() -> None:
    settings = build_config(
        {
            "auth": ["gssapi"],
            "gssapi": {
                "keytab": "/etc/socks5d.keytab",
                "service": "socks",
                "levels": ["clear", "confidentiality"],
                "accept_unwrapped_level": True,
                "answer_clear": True,
            },
        }
    ).gssapi
    assert settings == GssapiSettings(
        keytab=Path("/etc/socks5d.keytab"),
        service="socks",
        levels=frozenset({CLEAR, CONFIDENTIALITY}),
        accept_unwrapped_level=True,
        answer_clear=True,
    )


# --- levels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        (["integrity"], {INTEGRITY}),
        (["confidentiality"], {CONFIDENTIALITY}),
        (["clear"], {CLEAR}),
        (["clear", "integrity", "confidentiality"], {CLEAR, INTEGRITY, CONFIDENTIALITY}),
        (["Integrity", "CONFIDENTIALITY"], {INTEGRITY, CONFIDENTIALITY}),
        (["integrity", "integrity"], {INTEGRITY}),
    ],
)
def test_levels_list_in_the_file(levels: list[str], expected: set[ProtectionLevel]) -> None:
    assert build_config({"gssapi": {"levels": levels}}).gssapi.levels == expected


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("integrity", {INTEGRITY}),
        ("clear,integrity,confidentiality", {CLEAR, INTEGRITY, CONFIDENTIALITY}),
        ("confidentiality, clear", {CLEAR, CONFIDENTIALITY}),
    ],
)
def test_levels_flag_is_a_comma_list(flag: str, expected: set[ProtectionLevel]) -> None:
    assert build_config({}, gssapi={**NO_FLAGS, "levels": flag}).gssapi.levels == expected


@pytest.mark.parametrize(
    ("levels", "complaint"),
    [
        (["selective"], "unknown level 'selective'"),
        (["integrity", "privacy"], "unknown level 'privacy'"),
        (["none"], "unknown level 'none'"),
        ([], "must not be empty"),
        ([1], "must be a list of strings"),
        ({"integrity": True}, "must be a list of strings"),
        (2, "must be a list of strings"),
    ],
)
def test_bad_levels_in_the_file_name_gssapi_levels(levels: Any, complaint: str) -> None:
    message = config_error({"gssapi": {"levels": levels}})
    assert message.startswith("gssapi.levels: "), message
    assert complaint in message


@pytest.mark.parametrize("flag", ["selective", "integrity,bogus", "", ",", "integrity,"])
def test_bad_levels_flag_names_the_flag(flag: str) -> None:
    message = config_error({}, gssapi={**NO_FLAGS, "levels": flag})
    assert message.startswith("--gssapi-levels: unknown level"), message


# --- service ------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["rcmd", "socks", "host", "socks-proxy", "HTTP"])
def test_service_names(service: str) -> None:
    assert build_config({"gssapi": {"service": service}}).gssapi.service == service
    assert build_config({}, gssapi={**NO_FLAGS, "service": service}).gssapi.service == service


@pytest.mark.parametrize("service", ["rcmd/host", "", "a@b", "rcmd@", "two words", "tab\t", 5])
def test_bad_service_names_the_key(service: Any) -> None:
    message = config_error({"gssapi": {"service": service}})
    assert message.startswith("gssapi.service: must be a service name"), message


@pytest.mark.parametrize("service", ["rcmd/host", "", "a@b"])
def test_bad_service_flag_names_the_flag(service: str) -> None:
    message = config_error({}, gssapi={**NO_FLAGS, "service": service})
    assert message.startswith("--gssapi-service: must be a service name"), message


# --- keytab -------------------------------------------------------------------------------------


def test_relative_keytab_is_relative_to_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    config_file = write(folder / "socks5d.toml", '[gssapi]\nkeytab = "keys/socks5d.keytab"\n')
    assert load_config(config_file).gssapi.keytab == folder / "keys" / "socks5d.keytab"


def test_absolute_keytab_in_the_file_is_kept(tmp_path: Path) -> None:
    config_file = write(tmp_path / "socks5d.toml", '[gssapi]\nkeytab = "/srv/k.keytab"\n')
    assert load_config(config_file).gssapi.keytab == Path("/srv/k.keytab")


def test_keytab_flag_is_relative_to_the_working_directory_not_the_file(tmp_path: Path) -> None:
    config_file = write(tmp_path / "socks5d.toml", '[gssapi]\nkeytab = "file.keytab"\n')
    config = load_config(config_file, gssapi={**NO_FLAGS, "keytab": "flag.keytab"})
    assert config.gssapi.keytab == Path("flag.keytab")


@pytest.mark.parametrize("keytab", ["", 5, ["a.keytab"], True])
def test_keytab_that_is_not_a_path_names_the_key(keytab: Any) -> None:
    assert config_error({"gssapi": {"keytab": keytab}}) == "gssapi.keytab: must be a path"


def test_empty_keytab_flag_names_the_flag() -> None:
    assert config_error({}, gssapi={**NO_FLAGS, "keytab": ""}) == "--gssapi-keytab: must be a path"


# --- booleans, the table, unknown keys ------------------------------------------------------------


@pytest.mark.parametrize("key", ["accept_unwrapped_level", "answer_clear"])
@pytest.mark.parametrize("value", ["yes", 1, 0, "true", None])
def test_boolean_settings_must_be_booleans(key: str, value: Any) -> None:
    message = config_error({"gssapi": {"levels": ["clear"], key: value}})
    assert message == f"gssapi.{key}: must be true or false"


@pytest.mark.parametrize("key", ["keytabs", "level", "principal", "realm", "gssapi"])
def test_unknown_gssapi_setting_is_named_with_its_table(key: str) -> None:
    assert config_error({"gssapi": {key: "x"}}) == f"gssapi.{key}: unknown setting"


@pytest.mark.parametrize("value", ["rcmd", ["rcmd"], 1, True])
def test_gssapi_that_is_not_a_table_is_rejected(value: Any) -> None:
    assert config_error({"gssapi": value}) == "gssapi: must be a table"


def test_answer_clear_needs_clear_in_levels() -> None:
    message = config_error({"gssapi": {"answer_clear": True}})
    assert message.startswith("gssapi.answer_clear: "), message
    assert "clear" in message.removeprefix("gssapi.answer_clear")
    assert build_config(
        {"gssapi": {"answer_clear": True, "levels": ["clear", "integrity"]}}
    ).gssapi.answer_clear


def test_answer_clear_is_checked_against_the_levels_the_flag_sets() -> None:
    data = {"gssapi": {"answer_clear": True, "levels": ["clear", "integrity"]}}
    message = config_error(data, gssapi={**NO_FLAGS, "levels": "integrity"})
    assert message.startswith("gssapi.answer_clear: "), message


# --- flags override the file ---------------------------------------------------------------------


def test_gssapi_flags_override_the_file(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "socks5d.toml",
        'auth = ["gssapi"]\n'
        "[gssapi]\n"
        'keytab = "file.keytab"\n'
        'service = "fileservice"\n'
        'levels = ["confidentiality"]\n'
        "accept_unwrapped_level = true\n",
    )
    config = load_config(
        config_file,
        gssapi={"keytab": "/flag.keytab", "service": "flagservice", "levels": "clear,integrity"},
    )
    assert config.gssapi == GssapiSettings(
        keytab=Path("/flag.keytab"),
        service="flagservice",
        levels=frozenset({CLEAR, INTEGRITY}),
        accept_unwrapped_level=True,  # no flag for it: the file's value stays
    )


def test_gssapi_flags_not_given_leave_the_file_values(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "socks5d.toml",
        '[gssapi]\nkeytab = "k.keytab"\nservice = "socks"\nlevels = ["integrity"]\n',
    )
    config = load_config(config_file, gssapi=NO_FLAGS)
    assert config.gssapi == GssapiSettings(
        keytab=tmp_path / "k.keytab", service="socks", levels=frozenset({INTEGRITY})
    )


def test_each_flag_overrides_only_its_own_setting() -> None:
    data = {"gssapi": {"keytab": "/file.keytab", "service": "socks", "levels": ["integrity"]}}
    for key, value, expected in [
        ("keytab", "/flag.keytab", Path("/flag.keytab")),
        ("service", "other", "other"),
        ("levels", "confidentiality", frozenset({CONFIDENTIALITY})),
    ]:
        settings = build_config(data, gssapi={**NO_FLAGS, key: value}).gssapi
        assert getattr(settings, key) == expected, key
        untouched = {name for name in GSSAPI_FLAGS if name != key}
        file_values = build_config(data).gssapi
        for name in untouched:
            assert getattr(settings, name) == getattr(file_values, name), (key, name)


# --- the keytab is read when the server is made -------------------------------------------------


def test_a_missing_keytab_stops_the_server_naming_gssapi_keytab(tmp_path: Path) -> None:
    missing = tmp_path / "absent.keytab"
    config = build_config({"auth": ["gssapi"], "gssapi": {"keytab": str(missing)}})
    with pytest.raises(ConfigError, match=r"^gssapi\.keytab: .*absent\.keytab: no such file"):
        Server(config)


def test_a_file_that_is_not_a_keytab_stops_the_server_naming_gssapi(tmp_path: Path) -> None:
    keytab = write(tmp_path / "garbage.keytab", "not a keytab")
    config = build_config({"auth": ["gssapi"], "gssapi": {"keytab": str(keytab)}})
    with pytest.raises(ConfigError, match=r"^gssapi: no key for service 'rcmd' in .*garbage"):
        Server(config)


def test_the_keytab_is_not_read_when_gssapi_is_not_accepted(tmp_path: Path) -> None:
    config = build_config({"gssapi": {"keytab": str(tmp_path / "absent.keytab")}})
    assert Server(config).gssapi_credentials is None


# --- the command line ----------------------------------------------------------------------------


def test_serve_help_lists_the_gssapi_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--gssapi-keytab", "--gssapi-service", "--gssapi-levels"):
        assert flag in out, flag
    assert re.search(r"--auth \{[^}]*gssapi[^}]*\}", out), "gssapi is one of the --auth choices"
    assert sorted(GSSAPI_FLAGS.values()) == [
        "--gssapi-keytab",
        "--gssapi-levels",
        "--gssapi-service",
    ]


@pytest.mark.parametrize(
    ("flags", "prefix"),
    [
        (["--gssapi-levels", "selective"], "socks5d: --gssapi-levels: unknown level"),
        (["--gssapi-levels", "integrity", "--gssapi-service", "a/b"], "socks5d: --gssapi-service"),
    ],
)
def test_serve_with_a_bad_gssapi_flag_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], flags: list[str], prefix: str
) -> None:
    assert main(["serve", "--listen", "127.0.0.1:0", "--auth", "gssapi", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(prefix), err


def test_serve_with_a_missing_keytab_exits_2_before_listening(tmp_path: Path) -> None:
    # a process: `serve` sets up process-wide logging before it reads the keytab
    missing = tmp_path / "absent.keytab"
    flags = ["--listen", "127.0.0.1:0", "--auth", "gssapi", "--gssapi-keytab", str(missing)]
    result = subprocess.run(
        [sys.executable, "-m", "socks5d", "serve", *flags],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("socks5d: gssapi.keytab: "), result.stderr
    assert f"{missing}: no such file" in result.stderr


def test_serve_with_answer_clear_but_no_clear_level_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write(
        tmp_path / "socks5d.toml",
        'listen = "127.0.0.1:0"\nauth = ["gssapi"]\n[gssapi]\nanswer_clear = true\n',
    )
    assert main(["serve", "--config", str(config_file)]) == 2
    assert capsys.readouterr().err.startswith("socks5d: gssapi.answer_clear: ")


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ('auth = ["gssapi"]\n[gssapi]\nkeytab = "absent.keytab"\n', "gssapi.keytab: "),
        ('auth = ["gssapi"]\n[gssapi]\nkeytab = "garbage.keytab"\n', "gssapi: no key for"),
        ('[gssapi]\nlevels = ["secret"]\n', "gssapi.levels: "),
        ('[gssapi]\nservice = "rcmd/localhost"\n', "gssapi.service: "),
        ("[gssapi]\nkeytabfile = 'k'\n", "gssapi.keytabfile: unknown setting"),
    ],
)
def test_check_config_of_a_bad_gssapi_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, prefix: str
) -> None:
    write(tmp_path / "garbage.keytab", "not a keytab")
    config_file = write(tmp_path / "socks5d.toml", text)
    assert main(["check-config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"socks5d: {prefix}"), err


# --- the example configuration ----------------------------------------------------------------


def test_the_example_documents_every_gssapi_setting_with_its_default() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert re.search(r"^\[gssapi\]$", text, re.MULTILINE)
    for field in dataclasses.fields(GssapiSettings):
        assert re.search(rf"^(# )?{field.name} = ", text, re.MULTILINE), field.name
    table = tomllib.loads(text)["gssapi"]
    assert build_config({"gssapi": table}).gssapi == GssapiSettings()
