"""Configuration: `parse_listen`, `build_config` (file values and flag overrides), `load_config`.

Every `ConfigError` must name the setting at fault, so each error test checks the message
prefix, not only the exception type.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest

from socks5d import ConfigError
from socks5d.config import (
    OPTIONS,
    ListenAddress,
    ServerConfig,
    Timeouts,
    build_config,
    load_config,
    parse_listen,
)
from socks5d.proto import AuthMethod

NONE = AuthMethod.NO_AUTHENTICATION_REQUIRED
USERPASS = AuthMethod.USERNAME_PASSWORD

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "socks5d.toml"

#: Every setting `build_config` accepts from a file; the example must document each one.
TOP_LEVEL_SETTINGS = (
    "listen",
    "auth",
    "users",
    "allow_open_proxy",
    "log_format",
    "log_level",
    "timeouts",
)
TIMEOUT_SETTINGS = ("handshake", "connect", "idle")


def config_error(data: dict[str, Any], **overrides: Any) -> str:
    """The message of the `ConfigError` that `build_config(data, **overrides)` raises."""
    with pytest.raises(ConfigError) as caught:
        build_config(data, **overrides)
    return str(caught.value)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults ------------------------------------------------------------------------------------


def test_empty_file_gives_the_safe_defaults() -> None:
    config = build_config({})
    assert config == ServerConfig()
    assert config.listen == (ListenAddress("127.0.0.1", 1080),)
    assert config.auth == (NONE,)
    assert config.users_file is None
    assert config.allow_open_proxy is False
    assert config.log_format == "text"
    assert config.log_level == "info"
    assert config.timeouts == Timeouts(handshake=10.0, connect=10.0, idle=3600.0)


def test_no_config_file_gives_the_defaults() -> None:
    assert load_config(None) == ServerConfig()


def test_default_listen_address_is_loopback() -> None:
    assert all(address.is_loopback for address in ServerConfig().listen)


# --- parse_listen -------------------------------------------------------------------------- -----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:1080", ListenAddress("127.0.0.1", 1080)),
        ("[::1]:1080", ListenAddress("::1", 1080)),
        ("localhost:0", ListenAddress("localhost", 0)),
        ("0.0.0.0:65535", ListenAddress("0.0.0.0", 65535)),
        ("[fe80::1]:1", ListenAddress("fe80::1", 1)),
    ],
)
def test_parse_listen_accepts_host_port(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (ListenAddress("127.0.0.1", 1080), "127.0.0.1:1080"),
        (ListenAddress("::1", 1080), "[::1]:1080"),
    ],
)
def test_listen_address_prints_as_it_is_written(address: ListenAddress, text: str) -> None:
    assert str(address) == text
    assert parse_listen(str(address)) == address


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("2001:db8::1", False),
        ("proxy.example", False),
    ],
)
def test_listen_address_knows_whether_it_is_loopback(host: str, loopback: bool) -> None:
    assert ListenAddress(host, 1080).is_loopback is loopback


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("127.0.0.1", "is not HOST:PORT"),
        (":1080", "is not HOST:PORT"),
        ("127.0.0.1:", "port is not a number"),
        ("127.0.0.1:http", "port is not a number"),
        ("127.0.0.1:65536", "port out of range"),
        ("127.0.0.1:99999", "port out of range"),
        ("127.0.0.1:-1", "port is not a number"),
        ("127.0.0.1:+80", "port is not a number"),
        ("127.0.0.1:1_080", "port is not a number"),
        ("::1:1080", "in brackets"),
        ("[::1]", "is not HOST:PORT"),
        ("[127.0.0.1]:1080", "is not an IPv6 address"),
        ("[]:1080", "is not an IPv6 address"),
    ],
)
def test_parse_listen_rejects_with_the_key_in_the_message(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(text)
    message = str(caught.value)
    assert message.startswith("listen: ")
    assert complaint in message
    assert text in message


def test_parse_listen_names_the_key_it_is_given() -> None:
    with pytest.raises(ConfigError, match=r"^--listen\[0\]: "):
        parse_listen("nowhere", "--listen[0]")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- listen in the file and on the command line --------------------------------------------------


def test_listen_from_the_file_keeps_every_address_in_order() -> None:
    config = build_config({"listen": ["127.0.0.1:1081", "[::1]:1082", "localhost:0"]})
    assert config.listen == (
        ListenAddress("127.0.0.1", 1081),
        ListenAddress("::1", 1082),
        ListenAddress("localhost", 0),
    )


def test_listen_as_a_single_string_is_one_address() -> None:
    assert build_config({"listen": "127.0.0.1:1081"}).listen == (ListenAddress("127.0.0.1", 1081),)


def test_bad_listen_in_the_file_names_its_index() -> None:
    message = config_error({"listen": ["127.0.0.1:1080", "127.0.0.1:70000"]})
    assert message.startswith("listen[1]: ")


def test_bad_listen_flag_names_the_flag_and_its_index() -> None:
    message = config_error({}, listen=["127.0.0.1:1080", "::1:1080"])
    assert message.startswith("--listen[1]: ")


@pytest.mark.parametrize("value", [[], 1080, ["127.0.0.1:1080", 1081], {"host": "127.0.0.1"}])
def test_listen_of_the_wrong_type_is_rejected(value: Any) -> None:
    assert config_error({"listen": value}).startswith("listen: ")


# --- auth and users ------------------------------------------------------------------------------


def test_users_flag_alone_selects_userpass_only() -> None:
    config = build_config({}, users="users")
    assert config.auth == (USERPASS,)
    assert config.users_file == Path("users")


def test_users_in_the_file_alone_selects_userpass_only(tmp_path: Path) -> None:
    config = build_config({"users": "users"}, base_dir=tmp_path)
    assert config.auth == (USERPASS,)


def test_explicit_auth_keeps_the_operators_order() -> None:
    assert build_config({"auth": ["userpass", "none"], "users": "u"}).auth == (USERPASS, NONE)
    assert build_config({"auth": ["none", "userpass"], "users": "u"}).auth == (NONE, USERPASS)


def test_explicit_auth_flag_keeps_order_and_drops_repeats() -> None:
    config = build_config({}, auth=["userpass", "none", "userpass", "none"], users="u")
    assert config.auth == (USERPASS, NONE)


def test_repeated_auth_in_the_file_is_deduplicated() -> None:
    assert build_config({"auth": ["none", "none"]}).auth == (NONE,)


def test_explicit_auth_none_with_users_keeps_none_only() -> None:
    assert build_config({"auth": ["none"]}, users="u").auth == (NONE,)


def test_userpass_without_users_names_users() -> None:
    assert config_error({"auth": ["userpass"]}).startswith("users: ")
    assert config_error({}, auth=["userpass"]).startswith("users: ")


def test_unknown_auth_method_names_its_index() -> None:
    message = config_error({"auth": ["none", "kerberos"]})
    assert message.startswith("auth[1]: ")
    assert "kerberos" in message


def test_unknown_auth_flag_names_the_flag() -> None:
    assert config_error({}, auth=["kerberos"]).startswith("--auth[0]: ")


@pytest.mark.parametrize("value", [[], 2, [True]])
def test_auth_of_the_wrong_type_is_rejected(value: Any) -> None:
    assert config_error({"auth": value}).startswith("auth: ")


@pytest.mark.parametrize("value", [1, True, ["users"]])
def test_users_that_is_not_a_path_is_rejected(value: Any) -> None:
    assert config_error({"users": value}).startswith("users: ")


def test_relative_users_path_is_relative_to_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config_file = write(folder / "socks5d.toml", 'users = "users.d/proxy-users"\n')
    assert load_config(config_file).users_file == folder / "users.d" / "proxy-users"


def test_absolute_users_path_in_the_file_is_kept(tmp_path: Path) -> None:
    users = tmp_path / "elsewhere" / "users"
    config = build_config({"users": str(users)}, base_dir=tmp_path / "etc")
    assert config.users_file == users


def test_users_flag_is_relative_to_the_working_directory_not_the_file(tmp_path: Path) -> None:
    config = build_config({"users": "from-file"}, base_dir=tmp_path, users="from-flag")
    assert config.users_file == Path("from-flag")


# --- unknown settings and wrong types ------------------------------------------------------------


def test_unknown_top_level_setting_is_named() -> None:
    message = config_error({"listen_port": 1080})
    assert message.startswith("listen_port: ")
    assert "unknown" in message


def test_unknown_timeout_is_named_with_its_table() -> None:
    message = config_error({"timeouts": {"idle": 60, "x": 1}})
    assert message.startswith("timeouts.x: ")
    assert "unknown" in message


def test_timeouts_that_is_not_a_table_is_rejected() -> None:
    assert config_error({"timeouts": 5}).startswith("timeouts: ")


@pytest.mark.parametrize("key", TIMEOUT_SETTINGS)
@pytest.mark.parametrize("value", [-1, 0, -0.5, "abc", "10", True, False, [10]])
def test_timeout_that_is_not_a_positive_number_is_rejected(key: str, value: Any) -> None:
    message = config_error({"timeouts": {key: value}})
    assert message.startswith(f"timeouts.{key}: ")
    assert repr(value) in message


def test_timeout_nan_is_rejected() -> None:
    assert config_error({"timeouts": {"idle": float("nan")}}).startswith("timeouts.idle: ")


def test_timeouts_accept_integers_and_decimals() -> None:
    config = build_config({"timeouts": {"handshake": 0.5, "connect": 3, "idle": 86400}})
    assert config.timeouts == Timeouts(handshake=0.5, connect=3.0, idle=86400.0)


def test_timeouts_not_given_keep_their_defaults() -> None:
    assert build_config({"timeouts": {"idle": 60}}).timeouts == Timeouts(idle=60.0)


@pytest.mark.parametrize(("key", "value"), [("log_format", "xml"), ("log_level", "verbose")])
def test_unknown_log_choice_is_named(key: str, value: str) -> None:
    message = config_error({key: value})
    assert message.startswith(f"{key}: ")
    assert repr(value) in message


def test_bad_log_format_flag_names_the_flag() -> None:
    assert config_error({}, log_format="yaml").startswith("--log-format: ")


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_log_level_choices(level: str) -> None:
    assert build_config({"log_level": level}).log_level == level


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_allow_open_proxy_must_be_a_boolean(value: Any) -> None:
    assert config_error({"allow_open_proxy": value}).startswith("allow_open_proxy: ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.0/33", 'proxy_protocol.from[0]: "10.0.0.0/33": '),
        (["127.0.0.1", "balancer"], 'proxy_protocol.from[1]: "balancer": '),
        (7, "proxy_protocol.from: must be a list of strings"),
    ],
)
def test_proxy_protocol_from_takes_networks_only(value: Any, message: str) -> None:
    assert config_error({"proxy_protocol": {"from": value}}).startswith(message)


def test_proxy_protocol_from_trusts_its_networks_and_nothing_else() -> None:
    settings = build_config({"proxy_protocol": {"from": ["10.0.0.0/8", "::ffff:127.0.0.1"]}})
    trusts = settings.proxy_protocol.trusts
    assert trusts(ipaddress.ip_address("10.1.2.3"))
    assert trusts(ipaddress.ip_address("127.0.0.1"))  # a mapped address is its IPv4 one
    assert not trusts(ipaddress.ip_address("11.0.0.1"))
    assert not build_config({}).proxy_protocol.trusts(ipaddress.ip_address("127.0.0.1"))


# --- flags override the file ---------------------------------------------------------------------


def test_flags_override_the_file(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "socks5d.toml",
        'listen = ["127.0.0.1:1081"]\n'
        'auth = ["none"]\n'
        'users = "file-users"\n'
        'log_format = "text"\n'
        "allow_open_proxy = false\n",
    )
    config = load_config(
        config_file,
        listen=["[::1]:2080", "127.0.0.1:2081"],
        auth=["userpass"],
        users="flag-users",
        log_format="json",
        allow_open_proxy=True,
    )
    assert config.listen == (ListenAddress("::1", 2080), ListenAddress("127.0.0.1", 2081))
    assert config.auth == (USERPASS,)
    assert config.users_file == Path("flag-users")
    assert config.log_format == "json"
    assert config.allow_open_proxy is True


def test_flags_not_given_leave_the_file_values(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "socks5d.toml",
        'listen = "127.0.0.1:1081"\nlog_format = "json"\nlog_level = "debug"\n'
        "[timeouts]\nidle = 5\n",
    )
    config = load_config(
        config_file, listen=None, auth=None, users=None, log_format=None, allow_open_proxy=None
    )
    assert config.listen == (ListenAddress("127.0.0.1", 1081),)
    assert config.log_format == "json"
    assert config.log_level == "debug"
    assert config.timeouts.idle == 5.0


# --- the open-proxy guard ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:1080", "192.0.2.1:1080", "[::]:1080", "proxy.example:1080"]
)
def test_no_auth_on_a_non_loopback_address_is_refused_as_an_open_proxy(listen: str) -> None:
    message = config_error({"listen": listen})
    assert message.startswith("listen: ")
    assert "open proxy" in message
    assert "allow_open_proxy" in message


def test_open_proxy_guard_names_only_the_non_loopback_addresses() -> None:
    message = config_error({"listen": ["127.0.0.1:1080", "192.0.2.1:1080"]})
    assert "192.0.2.1:1080" in message
    assert "127.0.0.1" not in message


def test_open_proxy_guard_applies_to_the_listen_flag() -> None:
    assert "open proxy" in config_error({}, listen=["0.0.0.0:1080"])


def test_open_proxy_guard_applies_when_none_is_one_of_several_methods() -> None:
    message = config_error({"listen": "0.0.0.0:1080", "auth": ["userpass", "none"], "users": "u"})
    assert "open proxy" in message


def test_open_proxy_is_allowed_with_allow_open_proxy_in_the_file() -> None:
    config = build_config({"listen": "0.0.0.0:1080", "allow_open_proxy": True})
    assert config.allow_open_proxy is True
    assert config.auth == (NONE,)


def test_open_proxy_is_allowed_with_the_allow_open_proxy_flag() -> None:
    config = build_config({"listen": "192.0.2.1:1080"}, allow_open_proxy=True)
    assert config.allow_open_proxy is True


def test_non_loopback_address_with_userpass_only_is_not_an_open_proxy() -> None:
    config = build_config({"listen": ["0.0.0.0:1080", "[::]:1080"], "users": "u"})
    assert config.auth == (USERPASS,)
    assert config.allow_open_proxy is False


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:1080", "127.0.0.2:1080", "[::1]:1080", "localhost:1080"]
)
def test_no_auth_on_loopback_needs_no_consent(listen: str) -> None:
    assert build_config({"listen": listen}).auth == (NONE,)


# --- files ---------------------------------------------------------------------------------------


def test_load_config_reads_toml(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "socks5d.toml",
        'listen = ["[::1]:1090"]\nlog_level = "warning"\n[timeouts]\nhandshake = 2.5\n',
    )
    config = load_config(config_file)
    assert config.listen == (ListenAddress("::1", 1090),)
    assert config.log_level == "warning"
    assert config.timeouts.handshake == 2.5


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config_file = write(tmp_path / "broken.toml", 'listen = ["127.0.0.1:1080"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value).startswith(f"{config_file}: ")


def test_duplicate_key_is_invalid_toml_naming_the_file(tmp_path: Path) -> None:
    config_file = write(tmp_path / "twice.toml", 'log_level = "info"\nlog_level = "debug"\n')
    with pytest.raises(ConfigError, match=re.escape(str(config_file))):
        load_config(config_file)


def test_config_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "latin1.toml"
    config_file.write_bytes(b'log_level = "d\xe9bug"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value).startswith(f"{config_file}: ")


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value).startswith(f"{config_file}: ")


def test_error_inside_a_file_names_the_key(tmp_path: Path) -> None:
    config_file = write(tmp_path / "socks5d.toml", "[timeouts]\nidle = -1\n")
    with pytest.raises(ConfigError, match=r"^timeouts\.idle: .*-1"):
        load_config(config_file)


# --- the example configuration -------------------------------------------------------------------


def test_example_config_loads_and_is_the_safe_default() -> None:
    assert load_config(EXAMPLE) == ServerConfig()


def test_example_config_documents_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for key in (*TOP_LEVEL_SETTINGS[:-1], *TIMEOUT_SETTINGS):
        # set, or shown commented out ("# users = ...")
        assert re.search(rf"^(# )?{key} = ", text, re.MULTILINE), key
    assert re.search(r"^\[timeouts\]$", text, re.MULTILINE)


def test_example_config_shows_every_declared_option_in_its_table() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    tables = re.split(r"^\[(\w+)\]$", text, flags=re.MULTILINE)
    by_table = {"": tables[0], **dict(zip(tables[1::2], tables[2::2], strict=True))}
    for option in OPTIONS:
        if option.listed:
            body = by_table.get(option.section, "")
            assert re.search(rf"^(# )?{option.name} = ", body, re.MULTILINE), option.key


def test_settings_the_example_documents_are_the_ones_build_config_accepts() -> None:
    data: dict[str, Any] = {
        "listen": "127.0.0.1:1080",
        "auth": ["none"],
        "users": "u",
        "allow_open_proxy": False,
        "log_format": "text",
        "log_level": "info",
        "timeouts": dict.fromkeys(TIMEOUT_SETTINGS, 1),
    }
    assert set(data) == set(TOP_LEVEL_SETTINGS)
    build_config(data)  # no "unknown setting"


def test_example_with_users_uncommented_loads(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('# users = "users"', 'users = "users"', 1)
    config = load_config(write(tmp_path / "socks5d.toml", text))
    assert config.users_file == tmp_path / "users"


# --- BIND, UDP ASSOCIATE and SOCKS4 settings ---------------------------------------------------


def test_bind_udp_and_socks4_defaults() -> None:
    config = build_config({})
    assert config.socks4 is True
    assert config.serves_socks4 is True
    assert config.bind.address is None
    assert config.bind.ports is None
    assert config.bind.timeout == 60.0
    assert config.udp.address is None
    assert config.udp.advertise_address is None
    assert config.udp.idle_timeout == 300.0


def test_bind_and_udp_tables_are_read() -> None:
    config = build_config(
        {
            "bind": {"address": "127.0.0.1", "ports": "40000-40099", "timeout": 5},
            "udp": {"address": "::1", "advertise_address": "192.0.2.1", "idle_timeout": 30},
        }
    )
    assert config.bind.address == "127.0.0.1"
    assert config.bind.ports == (40000, 40099)
    assert config.bind.timeout == 5.0
    assert config.udp.address == "::1"
    assert config.udp.advertise_address == "192.0.2.1"
    assert config.udp.idle_timeout == 30.0


def test_a_single_port_is_a_range_of_one() -> None:
    assert build_config({"bind": {"ports": "40000"}}).bind.ports == (40000, 40000)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bind": {"ports": "2-1"}}, "bind.ports"),
        ({"bind": {"ports": "0-10"}}, "bind.ports"),
        ({"bind": {"ports": "a-b"}}, "bind.ports"),
        ({"bind": {"ports": "1-70000"}}, "bind.ports"),
        ({"bind": {"address": "example.com"}}, "bind.address"),
        ({"bind": {"address": 5}}, "bind.address"),
        ({"bind": {"timeout": 0}}, "bind.timeout"),
        ({"bind": {"backlog": 5}}, "bind.backlog"),
        ({"udp": {"advertise_address": "nat.example"}}, "udp.advertise_address"),
        ({"udp": {"idle_timeout": -1}}, "udp.idle_timeout"),
        ({"udp": "yes"}, "udp"),
        ({"socks4": "no"}, "socks4"),
    ],
)
def test_bad_bind_udp_or_socks4_setting_names_its_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(data)
    assert str(caught.value).startswith(f"{key}: ")


def test_socks4_is_served_only_while_no_auth_is_allowed(tmp_path: Path) -> None:
    users = str(tmp_path / "users")
    assert build_config({}, users=users).serves_socks4 is False
    assert build_config({}, users=users, auth=["userpass", "none"]).serves_socks4 is True
    assert build_config({"socks4": False}).serves_socks4 is False
    assert build_config({"socks4": True}, socks4=False).serves_socks4 is False


# --- [limits] -------------------------------------------------------------------------------------


def test_limits_defaults_count_a_client_as_its_ipv4_address_or_ipv6_64() -> None:
    limits = build_config({}).limits
    assert (limits.client_prefix_v4, limits.client_prefix_v6) == (32, 64)
    assert limits.auth_failures_before_block == 10
    assert limits.auth_failure_window == 600.0
    assert limits.auth_block_time == 300.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("client_prefix_v4", 1),
        ("client_prefix_v4", 24),
        ("client_prefix_v4", 32),
        ("client_prefix_v6", 1),
        ("client_prefix_v6", 48),
        ("client_prefix_v6", 128),
    ],
)
def test_client_prefixes_within_the_address_length_are_accepted(key: str, value: int) -> None:
    assert getattr(build_config({"limits": {key: value}}).limits, key) == value


@pytest.mark.parametrize(
    ("key", "value", "bounds"),
    [
        ("client_prefix_v4", 0, "1 to 32"),
        ("client_prefix_v4", 33, "1 to 32"),
        ("client_prefix_v4", "24", "1 to 32"),
        ("client_prefix_v4", 24.0, "1 to 32"),
        ("client_prefix_v4", True, "1 to 32"),
        ("client_prefix_v6", 0, "1 to 128"),
        ("client_prefix_v6", 129, "1 to 128"),
        ("client_prefix_v6", -64, "1 to 128"),
    ],
)
def test_a_client_prefix_out_of_range_names_its_key(key: str, value: Any, bounds: str) -> None:
    assert config_error({"limits": {key: value}}) == (
        f"limits.{key}: must be an integer from {bounds}, got {value!r}"
    )


@pytest.mark.parametrize("key", ["auth_failure_delay", "auth_max_delay"])
def test_the_removed_login_delay_settings_are_refused_with_the_reason(key: str) -> None:
    message = config_error({"limits": {key: 0.25}})
    assert message.startswith(f"limits.{key}: no longer used: failed logins are answered at once")
    assert "auth_failures_before_block" in message
    assert message.endswith("; remove it")


def test_the_removed_login_delay_settings_are_refused_in_a_file(tmp_path: Path) -> None:
    path = write(tmp_path / "socks5d.toml", "[limits]\nauth_max_delay = 4.0\n")
    with pytest.raises(ConfigError, match=r"^limits\.auth_max_delay: no longer used"):
        load_config(path)


# --- operations settings -----------------------------------------------------------------------


def test_admin_endpoint_is_off_by_default_and_loopback_when_set() -> None:
    assert build_config({}).admin.listen is None
    config = build_config({"admin": {"listen": "127.0.0.1:9180"}})
    assert (config.admin.listen.host, config.admin.listen.port) == ("127.0.0.1", 9180)
    assert build_config({}, flags={"admin.listen": "[::1]:9180"}).admin.listen.host == "::1"


def test_a_non_loopback_admin_endpoint_needs_allow_remote_admin() -> None:
    with pytest.raises(ConfigError, match=r"admin\.listen: 0\.0\.0\.0:9180 is not a loopback"):
        build_config({"admin": {"listen": "0.0.0.0:9180"}})
    allowed = build_config({"admin": {"listen": "0.0.0.0:9180", "allow_remote_admin": True}})
    assert allowed.admin.listen is not None and allowed.admin.allow_remote_admin


def test_drain_log_file_and_accounts_are_checked() -> None:
    assert build_config({}).timeouts.drain == 30
    assert build_config({"timeouts": {"drain": 2.5}}).timeouts.drain == 2.5
    with pytest.raises(ConfigError, match=r"timeouts\.drain: must be a positive number"):
        build_config({"timeouts": {"drain": 0}})
    assert build_config({"log_file": "/var/log/socks5d.log"}).log_file == Path(
        "/var/log/socks5d.log"
    )
    assert build_config({"user": "nobody"}).user == "nobody"
    with pytest.raises(ConfigError) as refused:
        build_config({"user": "no-such-user-here", "group": "no-such-group-here"})
    assert str(refused.value).splitlines() == [
        "user: no such user 'no-such-user-here' on this system",
        "group: no such group 'no-such-group-here' on this system",
    ]
    with pytest.raises(ConfigError, match="group: needs user"):
        build_config({"group": "nogroup"})
