"""The users file: scrypt hash format, verification, parsing errors, `set_password`."""

from __future__ import annotations

import codecs
import os
import stat
import tempfile
from pathlib import Path

import pytest

from socks5d import ConfigError
from socks5d.users import (
    DEFAULT_COST,
    SALT_BYTES,
    PasswordHash,
    UserDatabase,
    hash_password,
    permissions_warning,
    read_users_file,
    set_password,
)

#: scrypt cost for hashes made here: cheap, the format is what is under test
CHEAP = (1 << 10, 8, 1)
#: the cheapest cost a users file accepts (N at its floor, r=1): for hashes written to files
FILE_COST = (1 << 14, 1, 1)


def users_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users"
    path.write_text(text, encoding="utf-8")
    return path


# --- the hash format -----------------------------------------------------------------------------


def test_hash_round_trips_through_its_text_form() -> None:
    stored = hash_password("secret", CHEAP)
    assert PasswordHash.parse(str(stored)) == stored


def test_hash_text_form_is_scheme_cost_salt_key() -> None:
    stored = hash_password("secret", CHEAP)
    scheme, n, r, p, salt, key = str(stored).split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", *CHEAP)
    assert len(stored.salt) == SALT_BYTES
    assert salt and key


def test_default_cost_is_written_into_the_hash() -> None:
    assert str(PasswordHash(*DEFAULT_COST, b"s", b"k")).startswith("scrypt$16384$8$1$")


def test_two_hashes_of_one_password_have_different_salts() -> None:
    first, second = hash_password("secret", CHEAP), hash_password("secret", CHEAP)
    assert first.salt != second.salt
    assert first.key != second.key
    assert str(first) != str(second)


def test_hash_text_never_contains_the_password() -> None:
    assert "hunter2" not in str(hash_password("hunter2", CHEAP))


def test_hash_matches_only_its_password() -> None:
    stored = hash_password("secret", CHEAP)
    assert stored.matches("secret")
    assert not stored.matches("Secret")
    assert not stored.matches("secret ")
    assert not stored.matches("")


@pytest.mark.parametrize(
    "password", ["pass:word", ":", "pässwörd", "密码", "emoji \N{SNOWMAN}", "a$b$c", " spaced "]
)
def test_passwords_with_colons_dollars_or_non_ascii_work(password: str) -> None:
    stored = PasswordHash.parse(str(hash_password(password, CHEAP)))
    assert stored.matches(password)
    assert not stored.matches(password[:-1])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "scrypt",
        "scrypt$1024$8$1$c2FsdA==",
        "scrypt$1024$8$1$c2FsdA==$a2V5$extra",
        "bcrypt$1024$8$1$c2FsdA==$a2V5",
        "scrypt$many$8$1$c2FsdA==$a2V5",
        "scrypt$1024$8$1$c2FsdA=$a2V5",
        "plain-password",
    ],
)
def test_parse_rejects_what_is_not_a_stored_hash(text: str) -> None:
    with pytest.raises(ValueError):
        PasswordHash.parse(text)


# --- UserDatabase.verify --------------------------------------------------------------------- ---


def test_verify_right_password_wrong_password_unknown_user() -> None:
    database = UserDatabase(
        {"alice": hash_password("secret", CHEAP), "bob": hash_password("other", CHEAP)}
    )
    assert database.verify("alice", "secret")
    assert not database.verify("alice", "other")  # bob's password is not alice's
    assert not database.verify("carol", "secret")
    assert not database.verify("", "")
    assert len(database) == 2
    assert "alice" in database
    assert "carol" not in database


# --- reading the users file ----------------------------------------------------------------------


def test_users_file_round_trip(tmp_path: Path) -> None:
    alice, bob = hash_password("a:pw", FILE_COST), hash_password("bøb", FILE_COST)
    path = users_file(tmp_path, f"alice:{alice}\nbob:{bob}\n")
    assert read_users_file(path) == {"alice": alice, "bob": bob}
    database = UserDatabase.load(path)
    assert database.verify("alice", "a:pw")
    assert database.verify("bob", "bøb")
    assert not database.verify("bob", "bob")


def test_comments_and_blank_lines_are_ignored(tmp_path: Path) -> None:
    alice = hash_password("secret", FILE_COST)
    text = f"# socks5d users\n\n   \n  # indented comment\nalice:{alice}\n\n# bob:nothing\n"
    assert read_users_file(users_file(tmp_path, text)) == {"alice": alice}


def test_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    alice = hash_password("secret", FILE_COST)
    assert read_users_file(users_file(tmp_path, f"alice:{alice}\r\n")) == {"alice": alice}


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("no-colon-here", "expected name:hash"),
        (":scrypt$1024$8$1$c2FsdA==$a2V5", "expected name:hash"),
        ("alice:s3cr3t-plain", "has no valid hash"),
        ("alice:scrypt$1024$8$1$c2FsdA==", "has no valid hash"),
        ("alice:md5$1024$8$1$c2FsdA==$a2V5", "has no valid hash"),
    ],
)
def test_malformed_line_is_reported_by_number_without_the_hash(
    tmp_path: Path, line: str, complaint: str
) -> None:
    good = hash_password("secret", FILE_COST)
    path = users_file(tmp_path, f"# users\nbob:{good}\n\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        UserDatabase.load(path)
    message = str(caught.value)
    assert message.startswith(f"users: {path}:4: ")
    assert complaint in message
    secret_part = line.partition(":")[2] or line
    assert secret_part not in message
    assert str(good) not in message


@pytest.mark.parametrize(
    "stored",
    [
        "scrypt$0$8$1$c2FsdA==$a2V5",  # N must be a power of 2 above 1
        "scrypt$1000$8$1$c2FsdA==$a2V5",
        "scrypt$1024$8$1$c2FsdA==$!!!!",  # non-base64 decodes to an empty key
    ],
)
def test_hash_with_unusable_parameters_is_reported_at_load(tmp_path: Path, stored: str) -> None:
    path = users_file(tmp_path, f"alice:{stored}\n")
    with pytest.raises(ConfigError, match=rf"^users: {path}:1: "):
        UserDatabase.load(path)


def test_a_utf8_bom_at_the_start_of_the_file_is_not_part_of_the_first_name(
    tmp_path: Path,
) -> None:
    alice = hash_password("secret", FILE_COST)
    path = tmp_path / "users"
    path.write_bytes(f"\N{ZERO WIDTH NO-BREAK SPACE}alice:{alice}\n".encode())
    assert path.read_bytes().startswith(b"\xef\xbb\xbfalice:")
    assert read_users_file(path) == {"alice": alice}
    assert UserDatabase.load(path).verify("alice", "secret")


def stored_text(n: int = 1 << 14, p: int = 1) -> str:
    """A well-formed hash text with cost N=`n`, r=1, p=`p` (its key matches no password)."""
    return str(PasswordHash(n, 1, p, b"salt", b"k" * 32))


@pytest.mark.parametrize("name", ["alice ", " alice", "alice\t", "\talice", "\u00a0alice"])
def test_name_with_leading_or_trailing_whitespace_is_reported_by_line(
    tmp_path: Path, name: str
) -> None:
    stored = stored_text()
    path = users_file(tmp_path, f"bob:{stored}\n{name}:{stored}\n")
    with pytest.raises(ConfigError) as caught:
        UserDatabase.load(path)
    message = str(caught.value)
    assert message == (f"users: {path}:2: user name {name!r} has leading or trailing whitespace")
    assert stored not in message


def test_trailing_whitespace_after_the_hash_is_ignored(tmp_path: Path) -> None:
    stored = stored_text()
    path = users_file(tmp_path, f"alice:{stored} \t\n")
    assert read_users_file(path) == {"alice": PasswordHash.parse(stored)}


def test_duplicate_name_is_reported_with_both_line_numbers(tmp_path: Path) -> None:
    first, second = stored_text(), stored_text(1 << 15)
    path = users_file(tmp_path, f"alice:{first}\n# more\nbob:{first}\nalice:{second}\n")
    with pytest.raises(ConfigError) as caught:
        UserDatabase.load(path)
    message = str(caught.value)
    assert message == f"users: {path}:4: user 'alice' is already on line 1"
    assert first not in message
    assert second not in message


@pytest.mark.parametrize(
    ("n", "p"),
    [(1 << 13, 1), (1024, 1), (2, 1), (1 << 14, 17), (1 << 15, 64)],
)
def test_scrypt_cost_out_of_range_in_the_file_is_reported_by_line(
    tmp_path: Path, n: int, p: int
) -> None:
    stored = stored_text(n, p)
    path = users_file(tmp_path, f"bob:{stored_text()}\nalice:{stored}\n")
    with pytest.raises(ConfigError) as caught:
        UserDatabase.load(path)
    message = str(caught.value)
    assert message == (
        f"users: {path}:2: user 'alice': scrypt cost out of range (N must be >= 16384, p <= 16)"
    )
    assert stored not in message


@pytest.mark.parametrize(("n", "p"), [(1 << 14, 1), (1 << 14, 16), (1 << 20, 1)])
def test_scrypt_cost_at_the_bounds_is_accepted_in_the_file(tmp_path: Path, n: int, p: int) -> None:
    stored = stored_text(n, p)
    assert read_users_file(users_file(tmp_path, f"alice:{stored}\n")) == {
        "alice": PasswordHash.parse(stored)
    }


def test_a_database_built_in_code_takes_cheap_hashes() -> None:
    # The cost bounds guard the file, which someone else may edit; code that builds a
    # database (tests of the format, benchmarks) chooses its own cost.
    database = UserDatabase({"alice": hash_password("secret", CHEAP)})
    assert database.verify("alice", "secret")


def test_missing_users_file_is_a_config_error_naming_users(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(ConfigError, match=rf"^users: {path}: "):
        UserDatabase.load(path)


def test_users_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(b"j\xf6ran:scrypt$1024$8$1$c2FsdA==$a2V5\n")
    with pytest.raises(ConfigError, match=r"^users: "):
        UserDatabase.load(path)


# --- set_password ---------------------------------------------------------------------------- ---


def test_set_password_creates_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    assert set_password(path, "alice", "secret") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text(encoding="utf-8")
    assert text.startswith("alice:scrypt$")
    assert "secret" not in text
    assert UserDatabase.load(path).verify("alice", "secret")
    assert [p.name for p in tmp_path.iterdir()] == ["users"]  # no temporary file left


def test_set_password_changes_one_user_and_keeps_the_rest(tmp_path: Path) -> None:
    bob = hash_password("bobs", FILE_COST)
    path = users_file(tmp_path, f"# team\nalice:{hash_password('old', FILE_COST)}\nbob:{bob}\n")
    assert set_password(path, "alice", "new:pässword") is False
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# team"
    assert lines[2] == f"bob:{bob}"
    database = UserDatabase.load(path)
    assert database.verify("alice", "new:pässword")
    assert not database.verify("alice", "old")
    assert database.verify("bob", "bobs")


def test_set_password_changes_the_first_user_of_a_file_with_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(f"\N{ZERO WIDTH NO-BREAK SPACE}alice:{stored_text()}\n".encode())
    assert set_password(path, "alice", "secret") is False
    assert list(read_users_file(path)) == ["alice"]
    assert UserDatabase.load(path).verify("alice", "secret")


def test_set_password_on_a_file_with_a_duplicate_leaves_one_entry(tmp_path: Path) -> None:
    path = users_file(tmp_path, f"alice:{stored_text()}\nbob:{stored_text()}\nalice:x\n")
    assert set_password(path, "alice", "secret") is False
    assert [line.partition(":")[0] for line in path.read_text().splitlines()] == ["alice", "bob"]
    assert UserDatabase.load(path).verify("alice", "secret")


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o400], ids=oct)
def test_set_password_keeps_the_mode_of_an_existing_file(tmp_path: Path, mode: int) -> None:
    path = users_file(tmp_path, f"bob:{stored_text()}\n")
    path.chmod(mode)
    assert set_password(path, "alice", "secret") is True
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert UserDatabase.load(path).verify("alice", "secret")
    assert [p.name for p in tmp_path.iterdir()] == ["users"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can act as two other users")
def test_set_password_refuses_a_file_whose_owner_it_cannot_keep() -> None:
    # Not under tmp_path, whose parents let only root through: user 12345 must reach it.
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)  # user 12345 may write here; the users file is 54321's
        os.chown(folder, 12345, 12345)
        path = users_file(folder, f"bob:{stored_text()}\n")
        os.chown(path, 54321, 54321)
        before = path.read_bytes()
        codecs.lookup("utf-8-sig")  # imported now: user 12345 may not read the standard library
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child, as user 12345
            outcome = "crashed"
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(12345)
                os.setuid(12345)
                set_password(path, "alice", "secret")
                outcome = "written"
            except ConfigError as exc:
                outcome = str(exc)
            except BaseException as exc:  # shown by the assertion below
                outcome = repr(exc)
            finally:
                os.write(write_end, outcome.encode())
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            outcome = pipe.read().decode()
        os.waitpid(pid, 0)
        assert outcome == (
            f"users: {path}: cannot keep its owner 54321:54321; run passwd as that user or as root"
        )
        assert path.read_bytes() == before
        assert [p.name for p in folder.iterdir()] == ["users"]  # the temporary file is gone


@pytest.mark.parametrize("name", ["", "a:b", "a\nb", " alice", "alice ", "x" * 256])
def test_set_password_refuses_names_the_file_cannot_hold(tmp_path: Path, name: str) -> None:
    path = tmp_path / "users"
    with pytest.raises(ConfigError):
        set_password(path, name, "secret")
    assert not path.exists()


@pytest.mark.parametrize("name", ["a\rb", "a\x85b", "a\u2028b", "a\x0cb"])
def test_set_password_never_writes_a_file_that_does_not_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / "users"
    try:
        set_password(path, name, "secret")
    except ConfigError:
        return  # refusing the name is fine too
    assert UserDatabase.load(path).verify(name, "secret")


@pytest.mark.parametrize("password", ["", "x" * 256, "é" * 128])
def test_set_password_refuses_passwords_rfc1929_cannot_carry(tmp_path: Path, password: str) -> None:
    path = tmp_path / "users"
    with pytest.raises(ConfigError, match="password"):
        set_password(path, "alice", password)
    assert not path.exists()


def test_unknown_user_is_checked_against_a_decoy_with_the_stored_cost() -> None:
    cost = (1 << 10, 8, 1)
    database = UserDatabase({"alice": hash_password("secret", cost)})
    decoy = database._decoy
    assert (decoy.n, decoy.r, decoy.p) == cost


# --- permissions_warning ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "who"),
    [
        (0o666, "group and others"),
        (0o622, "group and others"),
        (0o660, "group"),
        (0o620, "group"),
        (0o606, "others"),
        (0o602, "others"),
    ],
    ids=lambda value: f"{value:04o}" if isinstance(value, int) else None,
)
def test_a_users_file_others_can_write_is_warned_about(tmp_path: Path, mode: int, who: str) -> None:
    path = users_file(tmp_path, "")
    path.chmod(mode)
    assert permissions_warning(path) == (
        f"users: {path} is writable by {who} (mode {mode:04o}); "
        "anyone who can write it can add a user: chmod 600 it"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o644, 0o700], ids=oct)
def test_a_users_file_only_its_owner_can_write_gets_no_warning(tmp_path: Path, mode: int) -> None:
    path = users_file(tmp_path, "")
    path.chmod(mode)
    assert permissions_warning(path) is None


def test_a_file_made_by_set_password_gets_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "users"
    set_password(path, "alice", "secret")
    assert permissions_warning(path) is None
