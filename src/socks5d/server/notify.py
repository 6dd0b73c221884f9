"""The service manager's notification protocol (systemd's `sd_notify`): one datagram of
`KEY=VALUE` lines to the AF_UNIX socket named by `NOTIFY_SOCKET`.

What socks5d sends (see README *Operations*):
- `READY=1` once every listener is bound (and again after a reload);
- `RELOADING=1` with `MONOTONIC_USEC=` when a SIGHUP reload begins;
- `STOPPING=1` when a drain begins;
- `STATUS=...` a line for `systemctl status`, with the count of open sessions.

The datagram is written directly; nothing of libsystemd is needed. A notifier never raises: a
service manager that went away must not stop the proxy (a failed send is logged once, at debug
level). Worker processes speak the same protocol to their supervisor, over a socket pair
(`Notifier(sock)`), and add `MAINPID=` so that it knows which worker spoke.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

#: The environment variable naming the service manager's socket.
ENVIRONMENT_VARIABLE = "NOTIFY_SOCKET"


def socket_address(value: str) -> str | bytes:
    """`NOTIFY_SOCKET`'s value as an AF_UNIX address: a path, or "@name" for the abstract
    namespace (a leading NUL byte).

    Raises:
        ValueError: neither a path nor an abstract name.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"{ENVIRONMENT_VARIABLE}={value!r}: not an AF_UNIX socket address")


def message(fields: Mapping[str, object]) -> bytes:
    """The datagram for `fields`: one `KEY=VALUE` line each, in order. A newline inside a
    value would start a new key, so it becomes a space."""
    lines = (f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
    return "\n".join(lines).encode() + b"\n"


def parse_message(datagram: bytes) -> dict[str, str]:
    """The fields of a datagram (`message`'s inverse); lines without "=" are skipped."""
    fields = {}
    for line in datagram.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


class Notifier:
    """Sends notifications to one socket: an address (`NOTIFY_SOCKET`), or a connected
    datagram socket (a worker's end of the pair its supervisor made).

    Args:
        target: the AF_UNIX address, or a connected AF_UNIX datagram socket (not closed by
            `close`: its owner closes it).
        pid: added as `MAINPID=` to every message when given (a worker to its supervisor).
    """

    def __init__(self, target: str | bytes | socket.socket, *, pid: int | None = None) -> None:
        self.pid = pid
        self._failed = False
        if isinstance(target, socket.socket):
            self._sock = target
            self._address: str | bytes | None = None
            self._owned = False
        else:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
            self._address = target
            self._owned = True

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """The notifier `NOTIFY_SOCKET` names, or None when it is unset (not run by a service
        manager) or unusable (logged)."""
        value = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE)
        if not value:
            return None
        try:
            return cls(socket_address(value))
        except ValueError as exc:
            log.warning("%s; not notifying", exc)
            return None

    def send(self, **fields: object) -> bool:
        """Send one notification of `fields` (`READY=1` is `send(READY=1)`); False when it
        could not be sent."""
        if self.pid is not None:
            fields.setdefault("MAINPID", self.pid)
        data = message(fields)
        try:
            if self._address is None:
                self._sock.send(data)
            else:
                self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.debug("notification not sent: %s", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Every listener is bound (or a reload is done)."""
        return self.send(READY=1, **({"STATUS": status} if status is not None else {}))

    def reloading(self) -> bool:
        """A reload begins; systemd asks for the monotonic clock with it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self, status: str | None = None) -> bool:
        """A drain (or the stop) begins."""
        return self.send(STOPPING=1, **({"STATUS": status} if status is not None else {}))

    def status(self, text: str) -> bool:
        """The one-line status `systemctl status` shows."""
        return self.send(STATUS=text)

    def close(self) -> None:
        if self._owned:
            self._sock.close()
