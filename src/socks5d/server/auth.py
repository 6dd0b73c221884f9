"""Authentication policy: which method to select, and checking usernames and passwords."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from socks5d.proto.constants import AuthMethod
from socks5d.users import UserDatabase


def choose_method(offered: Iterable[int], preference: Iterable[AuthMethod]) -> int:
    """The first method of the server's `preference` the client offered, else X'FF'.

    RFC 1928 §3: "The server selects from one of the methods given in METHODS, and sends a
    METHOD selection message"; "If the selected METHOD is X'FF', none of the methods listed by
    the client are acceptable".
    """
    offered_set = set(offered)
    for method in preference:
        if method in offered_set:
            return method
    return AuthMethod.NO_ACCEPTABLE_METHODS


class Authenticator:
    """Checks RFC 1929 credentials against a `UserDatabase` without blocking the loop."""

    def __init__(self, users: UserDatabase | None) -> None:
        self.users = users

    async def verify(self, username: str, password: str) -> bool:
        """True when the credentials are valid; the slow hash runs in a worker thread."""
        if self.users is None:
            return False
        return await asyncio.to_thread(self.users.verify, username, password)
