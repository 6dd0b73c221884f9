"""The users file: one `name:hash` per line, hashes salted scrypt; never a plain password.

    alice:scrypt$16384$8$1$<salt, base64>$<key, base64>

Blank lines and lines starting with `#` are ignored, and so is a UTF-8 byte order mark at the
start. A name has no whitespace at either end and appears once; a hash in the file has at least
the cost bounds below. Verification takes the same time whether or not the user exists, and
compares in constant time. No logging here: `permissions_warning` returns its message for the
caller to log or print.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from socks5d.errors import ConfigError

SCHEME = "scrypt"
#: scrypt cost: N=2^14, r=8, p=1 (16 MiB, tens of milliseconds per hash)
DEFAULT_COST = (1 << 14, 8, 1)
SALT_BYTES = 16
KEY_BYTES = 32
#: the most memory one hash may take (128 * N * r bytes)
MAX_MEMORY = 256 * 1024 * 1024
#: the least scrypt N a users file may hold: a cheaper hash makes a copy of the file cheap to
#: crack, and whoever can edit the file could weaken a user's hash without anyone noticing
MIN_FILE_N = 1 << 14
#: the most scrypt p a users file may hold: every login attempt for that name (and, through
#: the decoy, for unknown names) would cost p times the work, a denial of service
MAX_FILE_P = 16
#: the mode bits that let others than the owner write a file, and who they are
WRITERS = ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others"))


def _cost(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError("cost is not a positive integer")
    return int(text)


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed `scrypt$N$r$p$salt$key` string."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Parse the stored form; raises ValueError when it is not one scrypt can check."""
        scheme, n, r, p, salt, key = text.split("$")
        if scheme != SCHEME:
            raise ValueError(f"unknown hash scheme {scheme!r}")
        parsed = cls(
            _cost(n),
            _cost(r),
            _cost(p),
            base64.b64decode(salt, validate=True),
            base64.b64decode(key, validate=True),
        )
        # scrypt's own limits: N a power of two above 1; memory 128*N*r within MAX_MEMORY.
        if parsed.n < 2 or parsed.n & (parsed.n - 1) or 128 * parsed.n * parsed.r > MAX_MEMORY:
            raise ValueError("scrypt cost out of range")
        if not parsed.salt or len(parsed.key) < 16:
            raise ValueError("salt or key too short")
        return parsed

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        key = base64.b64encode(self.key).decode()
        return f"{SCHEME}${self.n}${self.r}${self.p}${salt}${key}"

    def derive(self, password: str) -> bytes:
        """The key `password` gives with this hash's salt and cost."""
        return hashlib.scrypt(
            password.encode("utf-8", "surrogateescape"),
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=MAX_MEMORY + 1024 * 1024,
            dklen=len(self.key),
        )

    def matches(self, password: str) -> bool:
        """Constant-time comparison of `password`'s key with the stored key."""
        return hmac.compare_digest(self.derive(password), self.key)


def hash_password(password: str, cost: tuple[int, int, int] = DEFAULT_COST) -> PasswordHash:
    """A new salted scrypt hash of `password`.

    Any cost scrypt accepts; a users file takes only N >= MIN_FILE_N and p <= MAX_FILE_P.
    """
    n, r, p = cost
    template = PasswordHash(n, r, p, secrets.token_bytes(SALT_BYTES), b"\x00" * KEY_BYTES)
    return PasswordHash(n, r, p, template.salt, template.derive(password))


class UserDatabase:
    """Users and their password hashes, as loaded from a users file.

    Takes hashes of any cost scrypt accepts: the cost bounds guard the users file, which
    someone else may edit; code that builds a database (tests, benchmarks) picks its own cost.
    """

    def __init__(self, hashes: dict[str, PasswordHash]) -> None:
        self._hashes = dict(hashes)
        # Verifying an unknown user costs as much as a known one: no user enumeration by
        # timing. The decoy takes the cost most users have.
        costs = Counter((h.n, h.r, h.p) for h in self._hashes.values())
        cost = costs.most_common(1)[0][0] if costs else DEFAULT_COST
        self._decoy = hash_password(secrets.token_hex(16), cost)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, name: object) -> bool:
        return name in self._hashes

    @classmethod
    def load(cls, path: Path) -> UserDatabase:
        """Read a users file.

        Raises:
            ConfigError: unreadable file or a malformed line (named by line number, never
                showing the hash).
        """
        return cls(read_users_file(path))

    def lookup(self, username: str) -> PasswordHash | None:
        """The stored hash of `username`, or None."""
        return self._hashes.get(username)

    def verify(self, username: str, password: str) -> bool:
        """True when `username` exists and `password` is its password. Slow by design."""
        stored = self._hashes.get(username)
        if stored is None:
            self._decoy.matches(password)
            return False
        return stored.matches(password)


def permissions_warning(path: Path) -> str | None:
    """What to warn about when others than its owner may write the users file, else None.

    `socks5d serve` logs it at start and on reload, `check-config` and `passwd` print it.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # reading the file reports what is wrong with it
    writers = [who for bit, who in WRITERS if mode & bit]
    if not writers:
        return None
    return (
        f"users: {path} is writable by {' and '.join(writers)} (mode {mode:04o}); "
        "anyone who can write it can add a user: chmod 600 it"
    )


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: a byte order mark an editor wrote at the start is not part of the first name
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"users: {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"users: {path}: not UTF-8 text ({exc.reason})") from None


def _entry(line: str) -> tuple[str, str, str] | None:
    """A line's (name, ":", hash), or None for a blank line or a comment.

    Only the line's end is stripped: whitespace before the name stays part of it, to be refused.
    """
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    return line.rstrip().partition(":")


def read_users_file(path: Path) -> dict[str, PasswordHash]:
    """Parse a users file into name -> hash.

    Raises:
        ConfigError: unreadable or not UTF-8; or a line that is not `name:hash`, a name with
            whitespace at either end or seen before, a hash scrypt cannot check or with a cost
            out of bounds. Named by line number, never showing the hash.
    """
    hashes: dict[str, PasswordHash] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if (entry := _entry(line)) is None:
            continue
        name, sep, stored = entry
        where = f"users: {path}:{number}"
        if not sep or not name:
            raise ConfigError(f"{where}: expected name:hash")
        # Nobody could log in as "alice " when the line meant alice: say so rather than load it.
        if name != name.strip():
            raise ConfigError(f"{where}: user name {name!r} has leading or trailing whitespace")
        # Which of two lines wins is no rule anyone should have to remember.
        if name in first_line:
            raise ConfigError(f"{where}: user {name!r} is already on line {first_line[name]}")
        try:
            parsed = PasswordHash.parse(stored)
        except ValueError:
            raise ConfigError(f"{where}: user {name!r} has no valid hash") from None
        if parsed.n < MIN_FILE_N or parsed.p > MAX_FILE_P:
            raise ConfigError(
                f"{where}: user {name!r}: scrypt cost out of range "
                f"(N must be >= {MIN_FILE_N}, p <= {MAX_FILE_P})"
            )
        first_line[name] = number
        hashes[name] = parsed
    return hashes


def set_password(path: Path, username: str, password: str) -> bool:
    """Add `username` to the users file at `path`, or change its password.

    The file is rewritten atomically; it keeps its owner, group and mode, and a new file is
    created with mode 0600. Returns True when the user is new.

    Raises:
        ConfigError: the name cannot be stored (empty, has ':' or a line break, > 255 octets)
            or the password is empty or longer than 255 octets (RFC 1929 limits); the file
            cannot be read, or its owner cannot be kept (only root may give a file away).
    """
    if not username or ":" in username or any(c.isspace() or not c.isprintable() for c in username):
        raise ConfigError(
            f"user name {username!r} must be non-empty, without ':', spaces or control characters"
        )
    if len(username.encode()) > 255:
        raise ConfigError("user name longer than 255 octets (RFC 1929 ULEN)")
    if not 1 <= len(password.encode("utf-8", "surrogateescape")) <= 255:
        raise ConfigError("password must be 1 to 255 octets (RFC 1929 PLEN)")
    try:
        before: os.stat_result | None = path.stat()
    except FileNotFoundError:
        before = None
    old_lines = _read_text(path).splitlines() if before is not None else []
    entry = f"{username}:{hash_password(password)}"
    lines: list[str] = []
    new = True
    for line in old_lines:
        if (parts := _entry(line)) is not None and parts[0] == username:
            if new:  # the first line of the name takes the new hash; later copies go
                lines.append(entry)
            new = False
        else:
            lines.append(line)
    if new:
        lines.append(entry)
    # mkstemp creates the file exclusively with mode 0600: no one else ever sees a hash.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
            file.flush()
            if before is not None:
                _keep_ownership(file.fileno(), before, path)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return new


def _keep_ownership(fd: int, before: os.stat_result, path: Path) -> None:
    """Give the new file behind `fd` the owner, group and mode the old one had."""
    now = os.fstat(fd)
    if (now.st_uid, now.st_gid) != (before.st_uid, before.st_gid):
        try:
            os.fchown(fd, before.st_uid, before.st_gid)
        except PermissionError:
            raise ConfigError(
                f"users: {path}: cannot keep its owner {before.st_uid}:{before.st_gid}; "
                "run passwd as that user or as root"
            ) from None
    # after fchown, which may clear the set-id bits
    os.fchmod(fd, stat.S_IMODE(before.st_mode))
