"""Where scripts/build-dante-gssapi.sh installs Dante 1.4.2 built with GSSAPI, what of it the
tests and the benchmark (bench/gssapi.py) use, and its client's configuration. Standard
library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Overrides the build's install directory (the build script honours it too).
BUILD_ENV = "SOCKS5D_DANTE_GSSAPI"
#: Written by the build script once the install is complete.
STAMP = ".socks5d-build-complete"
#: The service name Dante's client asks for by default (`gssapi.servicename`).
SERVICE = "rcmd"


def dante_gssapi_dir() -> Path:
    """The build's prefix: $SOCKS5D_DANTE_GSSAPI, else the script's default cache path."""
    explicit = os.environ.get(BUILD_ENV)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "socks5d" / "dante-1.4.2-gssapi"


@dataclass(frozen=True)
class DanteBuild:
    """The installed build: `sockd`, `libdsocks` (what socksify preloads), `socksify`."""

    prefix: Path

    @property
    def sockd(self) -> Path:
        return self.prefix / "sbin" / "sockd"

    @property
    def libdsocks(self) -> Path:
        """The preload library (`LD_PRELOAD`); the build's bin/socksify preloads it too."""
        return self.prefix / "lib" / "libdsocks.so"

    @property
    def socksify(self) -> Path:
        return self.prefix / "bin" / "socksify"

    def missing(self) -> str | None:
        """Why the build cannot be used, or None."""
        for path in (self.prefix / STAMP, self.sockd, self.libdsocks):
            if not path.exists():
                return (
                    f"Dante with GSSAPI is not built at {self.prefix} (missing {path}): run "
                    f"`bash scripts/build-dante-gssapi.sh` (scripts/test.sh does), or set "
                    f"{BUILD_ENV} to its install directory"
                )
        return None


def write_socks_conf(
    path: Path,
    proxy_port: int,
    level: str,
    *,
    proxy_host: str = "127.0.0.1",
    servicename: str = SERVICE,
    udp: bool = False,
    log_to_stderr: bool = False,
    debug: bool = False,
) -> Path:
    """A Dante client config (`SOCKS_CONF`) routing all IPv4 TCP through the proxy with
    GSSAPI, protection `level` ("clear", "integrity", "confidentiality", or several separated
    by spaces). `udp`: UDP too (without `udpassociate`/`udpreply` in `command` socksify sends
    datagrams directly). `log_to_stderr`: the library's errors go to the client's stderr
    rather than syslog; `debug`: its whole negotiation as well.
    """
    logging = "logoutput: stderr\n" if log_to_stderr or debug else ""
    if debug:
        logging += "debug: 1\n"
    routed = (
        "    protocol: tcp udp\n    command: connect udpassociate udpreply\n"
        if udp
        else ("    protocol: tcp\n")
    )
    path.write_text(
        f"{logging}"
        "route {\n"
        f"    from: 0.0.0.0/0 to: 0.0.0.0/0 via: {proxy_host} port = {proxy_port}\n"
        f"{routed}"
        "    proxyprotocol: socks_v5\n"
        "    method: gssapi\n"
        f"    gssapi.servicename: {servicename}\n"
        f"    gssapi.enctype: {level}\n"
        "}\n"
    )
    return path
