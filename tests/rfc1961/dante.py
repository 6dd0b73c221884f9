"""Dante built with GSSAPI (scripts/build-dante-gssapi.sh): where the build is, a client
config and environment for its preload library (socksify), and its sockd as a GSSAPI server.

    env = socksify_env(realm, dante, tmp_path, proxy_port, "integrity")
    subprocess.run(["curl", ...], env=env, timeout=...)        # through the proxy, GSSAPI

    server = GssapiDanteServer(dante, realm, directory, levels=("integrity",)).start()
    server.port; server.connected(destination); server.log(); server.stop()

Facts about Dante 1.4.2's GSSAPI (lib/clientprotocol.c, sockd/method_gssapi.c):

- The client asks for the service `gssapi.servicename`@HOST (GSS_C_NT_HOSTBASED_SERVICE),
  HOST being the proxy's address reverse-resolved with getnameinfo(NI_NAMEREQD): for
  127.0.0.1 that is "localhost" on Debian (/etc/hosts), so rcmd/localhost@REALM. A proxy
  address without a name fails before anything is sent.
- Protection levels on the wire (include/common.h): clear 0, integrity 1, confidentiality 2
  (per-message 3, refused by sockd). RFC 1961 has 1 and 2 (and 3); "clear" is Dante's own
  extension. The client offers the best level its route allows (one byte, gss_wrap'ed
  without confidentiality); sockd answers with the same level if its rule allows it, or
  fails the negotiation: no downgrading.
- sockd reads `gssapi.keytab`/`gssapi.servicename`/`gssapi.enctype` from the rule that
  matches: they are repeated in the `client pass` rule (the negotiation happens there;
  without them sockd uses /etc/sockd.keytab) and in the `socks pass` rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from interop.conftest import Endpoint, clean_env
from interop.proxies import DanteServer, dante_address

from .dante_build import DanteBuild, dante_gssapi_dir, write_socks_conf
from .realm import SERVICE, KerberosRealm

#: Dante's names for the protection levels (`gssapi.enctype`), weakest first.
LEVELS = ("clear", "integrity", "confidentiality")
#: The byte Dante sends for each level in the protection-level subnegotiation.
DANTE_LEVEL_BYTES = {"clear": 0, "integrity": 1, "confidentiality": 2}


@dataclass(frozen=True)
class DanteGssapi(DanteBuild):
    """The build (`DanteBuild`), as the `dante_gssapi` fixture finds it."""

    @classmethod
    def find(cls) -> DanteGssapi:
        """The build at `dante_gssapi_dir()`; fails the test when it is missing."""
        build = cls(dante_gssapi_dir())
        missing = build.missing()
        if missing is not None:
            pytest.fail(missing, pytrace=False)
        return build


# --------------------------------------------------------------------------- client


def socksify_env(
    realm: KerberosRealm,
    dante: DanteGssapi,
    directory: Path,
    proxy_port: int,
    level: str,
    *,
    client_keytab: bool = True,
    extra: Mapping[str, str] | None = None,
    **conf_options: object,
) -> dict[str, str]:
    """A complete environment (this process's, cleaned of proxies and preloads) for running
    a program through the proxy at 127.0.0.1:`proxy_port` with Dante's preload library and
    GSSAPI at `level`: writes DIRECTORY/socks-LEVEL.conf (`conf_options` as for
    `write_socks_conf`).

    SOCKS_AUTOADD_LANROUTES=no, or loopback would be reached directly, past the proxy.
    `client_keytab=False`: the client gets no fresh TGT from alice's keytab when the
    ccache has none.
    """
    conf = write_socks_conf(
        directory / f"socks-{level.replace(' ', '-')}.conf",
        proxy_port,
        level,
        **conf_options,  # type: ignore[arg-type]
    )
    env = {key: value for key, value in clean_env().items() if not key.startswith("KRB5")}
    env.update(realm.environment(client_keytab))
    env.update(
        {
            "SOCKS_CONF": str(conf),
            "SOCKS_AUTOADD_LANROUTES": "no",
            "LD_PRELOAD": str(dante.libdsocks),
        }
    )
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- server


def write_gssapi_sockd_conf(
    path: Path,
    port: int,
    keytab: Path,
    levels: Sequence[str] = LEVELS,
    servicename: str = SERVICE,
) -> Path:
    """sockd.conf: GSSAPI required (`levels` allowed), loopback on both sides, CONNECT,
    BIND and UDP, a log line when each session starts and ends, all to stderr.
    """
    users = ""
    if os.geteuid() == 0:
        # As root sockd must be told whom to run as. Not "nobody": its negotiate children
        # read the realm's krb5.conf, keytab and replay cache, in pytest's 0700 tmp dirs.
        users = "user.privileged: root\nuser.unprivileged: root\n"
    gssapi = (
        f"    gssapi.keytab: FILE:{keytab}\n"
        f"    gssapi.servicename: {servicename}\n"
        f"    gssapi.enctype: {' '.join(levels)}\n"
    )
    path.write_text(
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: 127.0.0.1\n"
        "clientmethod: none\n"
        "socksmethod: gssapi\n"
        f"{users}"
        "client pass {\n"
        "    from: 127.0.0.0/8 to: 127.0.0.0/8\n"
        f"{gssapi}"
        "    log: error\n"
        "}\n"
        "socks pass {\n"
        "    from: 127.0.0.0/8 to: 127.0.0.0/8\n"
        "    command: bind connect udpassociate bindreply udpreply\n"
        f"{gssapi}"
        "    log: connect disconnect error\n"
        "}\n"
        "socks block {\n"
        "    from: 0.0.0.0/0 to: 0.0.0.0/0\n"
        "    log: connect error\n"
        "}\n"
    )
    return path


class GssapiDanteServer(DanteServer):
    """The built sockd on 127.0.0.1, GSSAPI only, as a subprocess stopped by its PID;
    its stderr log is collected (`log()`, `wait_log(regex)`, `connected(endpoint)`,
    from interop's DanteServer; `gssapi_session()` here).

    `keytab`: the acceptor's keys (default: the realm's service keytab); `levels`: the
    `gssapi.enctype` values allowed; `debug`: sockd -d 1 (logs the negotiation).
    """

    name = "dante-gssapi"

    def __init__(
        self,
        dante: DanteGssapi,
        realm: KerberosRealm,
        directory: Path,
        *,
        levels: Sequence[str] = LEVELS,
        keytab: Path | None = None,
        servicename: str = SERVICE,
        debug: bool = False,
    ) -> None:
        super().__init__(directory)
        self.dante = dante
        self.realm = realm
        self.levels = tuple(levels)
        self.keytab = realm.service_keytab if keytab is None else keytab
        self.servicename = servicename
        self.debug = debug

    def command(self) -> list[str]:
        conf = write_gssapi_sockd_conf(
            self.directory / "sockd.conf", self.port, self.keytab, self.levels, self.servicename
        )
        pidfile = self.directory / "sockd.pid"
        debug = ["-d", "1"] if self.debug else []
        # `env` execs sockd (same PID) with the realm's Kerberos variables: the server is
        # started by interop's LoggedServer with this process's (cleaned) environment.
        realm_env = [f"{key}={value}" for key, value in self.realm.env.items()]
        return [
            "/usr/bin/env",
            *realm_env,
            str(self.dante.sockd),
            "-f",
            str(conf),
            "-p",
            str(pidfile),
            "-N",
            "1",
            *debug,
        ]

    @property
    def url(self) -> str:
        """`socks5://127.0.0.1:PORT`."""
        return f"socks5://{Endpoint(self.host, self.port).netloc}"

    def gssapi_session(self) -> tuple[str, str]:
        """(level, client principal) of the first GSSAPI session sockd logged, e.g.
        ("integrity", "alice@SOCKS5D.TEST"); waits for it. sockd names a client
        `gssapi/integrity%alice@SOCKS5D.TEST@127.0.0.1.40964` in its log lines.
        """
        match = self.wait_log(r"gssapi/(?P<level>[a-z-]+)%(?P<user>\S+)@[0-9.]+\s")
        return match["level"], match["user"]


__all__ = [
    "DANTE_LEVEL_BYTES",
    "LEVELS",
    "DanteGssapi",
    "GssapiDanteServer",
    "dante_address",
    "dante_gssapi_dir",
    "socksify_env",
    "write_gssapi_sockd_conf",
    "write_socks_conf",
]
