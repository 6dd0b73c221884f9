"""The users file: one `name:hash` per line, hashes salted scrypt; never a plain password.

    alice:scrypt$16384$8$1$<salt, base64>$<key, base64>

Blank lines and lines starting with `#` are ignored. Verification takes the same time whether
or not the user exists, and compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
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
    """A new salted scrypt hash of `password`."""
    n, r, p = cost
    template = PasswordHash(n, r, p, secrets.token_bytes(SALT_BYTES), b"\x00" * KEY_BYTES)
    return PasswordHash(n, r, p, template.salt, template.derive(password))


class UserDatabase:
    """Users and their password hashes, as loaded from a users file."""

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


def read_users_file(path: Path) -> dict[str, PasswordHash]:
    """Parse a users file into name -> hash."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"users: {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"users: {path}: not UTF-8 text ({exc.reason})") from None
    hashes: dict[str, PasswordHash] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name:
            raise ConfigError(f"users: {path}:{number}: expected name:hash")
        try:
            hashes[name] = PasswordHash.parse(stored)
        except ValueError:
            raise ConfigError(f"users: {path}:{number}: user {name!r} has no valid hash") from None
    return hashes


def set_password(path: Path, username: str, password: str) -> bool:
    """Add `username` to the users file at `path`, or change its password.

    The file is rewritten atomically with mode 0600. Returns True when the user is new.

    Raises:
        ConfigError: the name cannot be stored (empty, has ':' or a line break, > 255 octets)
            or the password is empty or longer than 255 octets (RFC 1929 limits).
    """
    if not username or ":" in username or any(c.isspace() or not c.isprintable() for c in username):
        raise ConfigError(
            f"user name {username!r} must be non-empty, without ':', spaces or control characters"
        )
    if len(username.encode()) > 255:
        raise ConfigError("user name longer than 255 octets (RFC 1929 ULEN)")
    if not 1 <= len(password.encode("utf-8", "surrogateescape")) <= 255:
        raise ConfigError("password must be 1 to 255 octets (RFC 1929 PLEN)")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    entry = f"{username}:{hash_password(password)}"
    new = True
    for index, line in enumerate(lines):
        if line.partition(":")[0] == username:
            lines[index] = entry
            new = False
    if new:
        lines.append(entry)
    # mkstemp creates the file exclusively with mode 0600: no one else ever sees a hash.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return new
