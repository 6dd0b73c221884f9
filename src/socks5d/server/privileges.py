"""Serving as an unprivileged user (`user`, `group`), and what root must not serve with.

Started as root with `user` set, `socks5d serve` binds its listeners and opens its log file
first, then `drop_privileges` gives up root for good: supplementary groups, group, user, in
that order (the group cannot be changed once the user is not root), and checks that root
cannot be had back. Started as another user, `user` may only name that user: there is
nothing to switch. Serving as root without `user` is allowed, but not with a password file or
a GSS-API keytab that any local user can read (`refuse_readable_secrets`).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from socks5d.config import ServerConfig
from socks5d.constants import AuthMethod
from socks5d.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Account:
    """The user and group to serve as."""

    user: str
    uid: int
    gid: int
    #: whether the user has an entry in the system's user database (for its other groups)
    listed: bool


def account(user: str, group: str | None = None) -> Account:
    """The uid and gid `user` and `group` (names or numbers) stand for; without `group`, the
    user's own group.

    Raises:
        ConfigError: no such user or group.
    """
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if not user.isdigit():
            raise ConfigError(f"user: no such user {user!r} on this system") from None
        uid, gid, listed = int(user), int(user), False
    else:
        uid, gid, listed = entry.pw_uid, entry.pw_gid, True
        user = entry.pw_name
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"group: no such group {group!r} on this system") from None
    return Account(user, uid, gid, listed)


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(stat.S_IMODE(path.stat().st_mode) & stat.S_IROTH)
    except OSError:
        return False  # reading the file reports what is wrong with it


def refuse_readable_secrets(config: ServerConfig) -> None:
    """As root and without `user`, refuse to serve when the users file or the GSS-API keytab
    is readable by every local user.

    Raises:
        ConfigError: naming the file and the fix.
    """
    if os.geteuid() != 0 or config.user is not None:
        return
    secrets: list[tuple[str, Path]] = []
    if config.users_file is not None:
        secrets.append(("users_file", config.users_file))
    if AuthMethod.GSSAPI in config.auth and config.gssapi.keytab is not None:
        secrets.append(("gssapi.keytab", config.gssapi.keytab))
    problems = [
        f"{key}: {path} is readable by every user (mode "
        f"{stat.S_IMODE(path.stat().st_mode):04o}) and the server would run as root: "
        f'chmod 600 (or 640) it, or serve as another user (user = "socks5d")'
        for key, path in secrets
        if _readable_by_others(path)
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def drop_privileges(user: str | None, group: str | None = None) -> Account | None:
    """Serve as `user` (and `group`) from now on; call once the listeners are bound and the
    log file is open. Nothing to do when `user` is None, or when it is the user running.

    Returns:
        The account now served as, or None when `user` is None.

    Raises:
        ConfigError: no such user or group, or not root and `user`/`group` is another one.
        PermissionError: root could be regained after the switch (never serve so).
    """
    if user is None:
        return None
    target = account(user, group)
    if os.geteuid() != 0:
        if (target.uid, target.gid if group is not None else os.getegid()) == (
            os.geteuid(),
            os.getegid(),
        ):
            return target  # already that user: nothing to switch
        raise ConfigError(
            f"user: serving as {user!r}{f' (group {group!r})' if group else ''} needs to be "
            f"started as root; running as uid {os.geteuid()} gid {os.getegid()}"
        )
    # Supplementary groups first, then the group, then the user: once the uid is not 0 the
    # others can no longer be changed.
    if target.listed:
        os.initgroups(target.user, target.gid)
    else:
        os.setgroups([target.gid])
    os.setgid(target.gid)
    os.setuid(target.uid)
    if target.uid != 0:
        _check_root_is_gone(target)
    log.info(
        "serving as user %s (uid %d), group gid %d",
        target.user,
        target.uid,
        target.gid,
        extra={"fields": {"uid": target.uid, "gid": target.gid}},
    )
    return target


def _check_root_is_gone(target: Account) -> None:
    """Every uid and gid (real, effective, saved) is the target's, and setuid(0) fails."""
    if os.getresuid() != (target.uid,) * 3 or os.getresgid() != (target.gid,) * 3:
        raise PermissionError(f"user: could not switch every id to {target.user}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PermissionError(f"user: root could be regained after switching to {target.user}")
