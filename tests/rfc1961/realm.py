"""A throwaway MIT Kerberos realm for the GSSAPI (RFC 1961) tests: a KDC on 127.0.0.1, its
database, keytabs and credential cache, all in one directory. Nothing under /etc or /var is
read or written: every tool and library finds the realm through environment variables.

    with KerberosRealm(tmp_path).start() as realm:
        realm.kinit()                        # alice's TGT into realm.ccache, from her keytab
        with realm.activate():               # os.environ: in-process python-gssapi uses it
            ...
        subprocess.run([...], env={**os.environ, **realm.env})

Principals made by `start()`:

    rcmd/localhost, rcmd/127.0.0.1, rcmd/<gethostname()>   keys in `service_keytab`
    alice (`user`)                                         key in `client_keytab`

`realm.env` names them: KRB5_CONFIG, KRB5_KDC_PROFILE, KRB5CCNAME (FILE: in the directory),
KRB5_KTNAME (the acceptor's default keytab), KRB5_CLIENT_KTNAME (the initiator's keytab),
KRB5RCACHEDIR. MIT krb5 reads them when a library context is made, that is at every GSSAPI
call, so changing os.environ between calls takes effect in-process.

Beware KRB5_CLIENT_KTNAME: with it MIT's GSSAPI initiator fetches a fresh TGT from the
client keytab whenever the ccache has none, or only an expired one. Tests of "no ticket" or
"expired ticket" use `environment(client_keytab=False)` (or `activate(client_keytab=False)`,
or `expired_ticket()`).

Expired tickets: `add_principal(name, maxlife="2 seconds")` caps every ticket of that
principal (the KDC grants min(requested, principal's, realm's max_life)); `kinit(name,
lifetime="2s")` alone does the same for one ticket. `wait_expired()` polls `klist -s`
until the TGT is past its end time (real time has to pass: ~3 s). Then MIT's initiator
refuses ("Ticket expired") before anything is sent; the acceptor can only be shown an
expired ticket by a token made before expiry and presented after: it refuses that with
"Clock skew too great" (the authenticator is older than the realm's `clockskew = 1`;
MIT's default of 300 s would let it through for five more minutes). The 1 s skew also
means a token must reach its acceptor within a second of being made.

A service key the acceptor does not have: `stale_keytab("rcmd")` exports the current keys,
then gives the service new ones (the KDC's kvno goes up): the returned keytab no longer
matches the tickets the KDC issues, while `service_keytab` gets the new keys as well.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self

#: The realm's name; no DNS is consulted for it.
REALM = "SOCKS5D.TEST"
#: The user principal that `start()` makes, with a keytab.
USER = "alice"
#: The service name of RFC 1961 and Dante's default (`gssapi.servicename`).
SERVICE = "rcmd"
#: Seconds for one Kerberos admin tool, and for the KDC to start accepting connections.
TOOL_TIMEOUT = 20.0
START_TIMEOUT = 10.0
#: Where Debian installs the KDC's tools; searched besides PATH.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def _tool(name: str) -> str:
    path = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{_SBIN}")
    if path is None:
        raise RuntimeError(
            f"{name} is not installed; scripts/test.sh installs krb5-kdc, krb5-admin-server "
            "and krb5-user"
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class KerberosRealm:
    """An MIT Kerberos realm in `directory`: `start()` makes it and runs its KDC, `stop()`
    stops the KDC (by PID). Also a context manager (`with KerberosRealm(d).start() as r`,
    or `with KerberosRealm(d) as r`, which starts it).
    """

    def __init__(self, directory: Path, realm: str = REALM, user: str = USER) -> None:
        self.directory = directory
        self.realm = realm
        self.user = user
        self.port = 0
        self.hostnames = list(dict.fromkeys(["localhost", "127.0.0.1", socket.gethostname()]))
        self.krb5_conf = directory / "krb5.conf"
        self.kdc_conf = directory / "kdc.conf"
        self.database = directory / "principal"
        self.stash = directory / "stash"
        self.ccache = directory / "ccache"
        self.service_keytab = directory / "service.keytab"
        self.client_keytab = directory / "client.keytab"
        self.rcache_dir = directory / "rcache"
        self.kdc_log = directory / "kdc.log"
        self.kdc_stderr = directory / "kdc.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self._created = False

    # ------------------------------------------------------------------ environment

    def environment(self, client_keytab: bool = True) -> dict[str, str]:
        """The variables that point Kerberos at this realm. `client_keytab=False` points
        KRB5_CLIENT_KTNAME at a file that does not exist: no automatic TGT.
        """
        initiator = self.client_keytab if client_keytab else self.directory / "absent.keytab"
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5CCNAME": f"FILE:{self.ccache}",
            "KRB5_KTNAME": f"FILE:{self.service_keytab}",
            "KRB5_CLIENT_KTNAME": f"FILE:{initiator}",
            "KRB5RCACHEDIR": str(self.rcache_dir),
        }

    @property
    def env(self) -> dict[str, str]:
        """`environment()`: merge into a subprocess's environment."""
        return self.environment()

    @contextmanager
    def activate(self, client_keytab: bool = True) -> Iterator[Self]:
        """Set `environment(client_keytab)` in os.environ; restore the old values on exit."""
        saved = {name: os.environ.get(name) for name in self.environment()}
        os.environ.update(self.environment(client_keytab))
        try:
            yield self
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def principal(self, name: str) -> str:
        """`name@REALM` (`rcmd/localhost` -> `rcmd/localhost@SOCKS5D.TEST`)."""
        return f"{name}@{self.realm}"

    # ------------------------------------------------------------------ lifecycle

    def start(self, attempts: int = 5) -> Self:
        """Make the realm (once) and start its KDC on a free loopback port."""
        if self.process is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rcache_dir.mkdir(exist_ok=True)
        for _ in range(attempts):
            self.port = _free_port()
            self._write_conf()
            if not self._created:
                self._create()
            if self._spawn_kdc():
                return self
        raise RuntimeError(f"the KDC did not start:\n{self.kdc_output()}")

    def stop(self) -> None:
        """Stop the KDC by its PID."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(TOOL_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(TOOL_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def kdc_output(self) -> str:
        """The KDC's log and stderr, for failure messages."""
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.kdc_log, self.kdc_stderr)
            if path.exists()
        )

    def _write_conf(self) -> None:
        realm, kdc = self.realm, f"127.0.0.1:{self.port}"
        domains = "".join(
            f"    {host} = {realm}\n" for host in self.hostnames if not host[0].isdigit()
        )
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"    default_realm = {realm}\n"
            "    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n"
            "    dns_canonicalize_hostname = false\n"
            "    rdns = false\n"
            "    ignore_acceptor_hostname = true\n"
            "    udp_preference_limit = 1\n"
            "    clockskew = 1\n"
            "    forwardable = false\n"
            "[realms]\n"
            f"    {realm} = {{\n"
            f"        kdc = {kdc}\n"
            f"        admin_server = {kdc}\n"
            "    }\n"
            "[domain_realm]\n"
            f"{domains}"
            "[logging]\n"
            f"    kdc = FILE:{self.kdc_log}\n"
            f"    admin_server = FILE:{self.directory / 'kadmin.log'}\n"
            f"    default = FILE:{self.directory / 'krb5lib.log'}\n"
        )
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"    kdc_listen = {kdc}\n"
            f"    kdc_tcp_listen = {kdc}\n"
            "[realms]\n"
            f"    {realm} = {{\n"
            f"        database_name = {self.database}\n"
            f"        key_stash_file = {self.stash}\n"
            f"        acl_file = {self.directory / 'kadm5.acl'}\n"
            f"        admin_keytab = FILE:{self.directory / 'kadm5.keytab'}\n"
            "        max_life = 10h 0m 0s\n"
            "        max_renewable_life = 0\n"
            "    }\n"
            "[logging]\n"
            f"    kdc = FILE:{self.kdc_log}\n"
            f"    admin_server = FILE:{self.directory / 'kadmin.log'}\n"
        )

    def _create(self) -> None:
        (self.directory / "kadm5.acl").write_text("")
        self.run(["kdb5_util", "create", "-s", "-r", self.realm, "-P", secrets.token_hex(16)])
        self._created = True
        for host in self.hostnames:
            self.add_principal(f"{SERVICE}/{host}")
        self.ktadd(self.service_keytab, *(f"{SERVICE}/{host}" for host in self.hostnames))
        self.add_principal(self.user)
        self.ktadd(self.client_keytab, self.user)

    def _spawn_kdc(self) -> bool:
        """Run krb5kdc in the foreground; True once it accepts TCP connections."""
        with self.kdc_stderr.open("wb") as stderr:
            process = subprocess.Popen(
                [_tool("krb5kdc"), "-n", "-r", self.realm],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=self._tool_env(),
            )
        self.process = process
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break  # exited: port taken, or a configuration error
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return True
            except OSError:
                # a bounded pause between polls that ends early if the KDC exits
                with suppress(subprocess.TimeoutExpired):
                    process.wait(0.02)
        self.stop()
        return False

    # ------------------------------------------------------------------ tools

    def _tool_env(self, client_keytab: bool = True) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("KRB5")}
        env.update(self.environment(client_keytab))
        return env

    def run(
        self, args: Sequence[str], *, check: bool = True, client_keytab: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a Kerberos tool (found on PATH or in /usr/sbin) with the realm's environment.

        `check`: raise with the tool's output when it fails.
        """
        result = subprocess.run(
            [_tool(args[0]), *args[1:]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self._tool_env(client_keytab),
            timeout=TOOL_TIMEOUT,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def kadmin(self, query: str) -> str:
        """Run one kadmin.local query; its output."""
        result = self.run(["kadmin.local", "-r", self.realm, "-q", query])
        # kadmin.local exits 0 on most errors, and prints them to stderr
        if "error" in result.stderr.lower() or "cannot" in result.stderr.lower():
            raise RuntimeError(f"kadmin.local -q {query!r}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def add_principal(self, name: str, maxlife: str | None = None) -> str:
        """Add `name` with a random key (`maxlife` e.g. "2 seconds": its tickets' cap);
        its full name.
        """
        options = f'-maxlife "{maxlife}" ' if maxlife else ""
        self.kadmin(f"addprinc -randkey {options}{name}")
        return self.principal(name)

    def ktadd(self, keytab: Path, *names: str, randomize: bool = True) -> Path:
        """Write the keys of `names` to `keytab` (appending). `randomize` (kadmin's
        default) first gives them new keys, which makes keytabs written before stale.
        """
        norandkey = "" if randomize else "-norandkey "
        self.kadmin(f"ktadd -k {keytab} {norandkey}{' '.join(names)}")
        return keytab

    def add_service(
        self, name: str, keytab: Path | None = None, hosts: Sequence[str] | None = None
    ) -> Path:
        """Principals `name/HOST` for each of `hosts` (default: localhost, 127.0.0.1 and
        this host's name), keys written to `keytab` (default: `service_keytab`, the
        acceptor's default); the keytab's path.
        """
        keytab = self.service_keytab if keytab is None else keytab
        names = [f"{name}/{host}" for host in (hosts or self.hostnames)]
        for principal in names:
            self.add_principal(principal)
        return self.ktadd(keytab, *names)

    def add_user(self, name: str, keytab: Path | None = None, maxlife: str | None = None) -> Path:
        """Another user principal; its key in `keytab` (default DIR/NAME.keytab) for
        `kinit(name, keytab=...)`.
        """
        keytab = self.directory / f"{name.replace('/', '_')}.keytab" if keytab is None else keytab
        self.add_principal(name, maxlife=maxlife)
        return self.ktadd(keytab, name)

    def kinit(
        self, principal: str | None = None, lifetime: str | None = None, keytab: Path | None = None
    ) -> None:
        """A TGT for `principal` (default `user`) from its keytab (default
        `client_keytab`) into `ccache`, replacing what was there. `lifetime`: kinit -l
        (e.g. "2s"), capped by the principal's maxlife.
        """
        args = ["kinit", "-k", "-t", str(keytab or self.client_keytab)]
        if lifetime is not None:
            args += ["-l", lifetime]
        self.run([*args, self.principal(principal or self.user)])

    def kdestroy(self) -> None:
        """Empty the ccache (no error when there is none)."""
        self.run(["kdestroy", "-q"], check=False)

    def has_valid_ticket(self) -> bool:
        """`klist -s`: the ccache holds a TGT that has not expired."""
        return self.run(["klist", "-s"], check=False).returncode == 0

    def klist(self) -> str:
        """`klist -e` output: what is in the ccache, for failure messages."""
        result = self.run(["klist", "-e"], check=False)
        return result.stdout + result.stderr

    def wait_expired(self, timeout: float = 15.0) -> None:
        """Wait, polling `klist -s` (bounded), until the ccache's TGT has expired, then one
        more second for the realm's clock skew allowance.
        """
        deadline = time.monotonic() + timeout
        while self.has_valid_ticket():
            if time.monotonic() > deadline:
                raise AssertionError(f"the ticket did not expire in {timeout} s:\n{self.klist()}")
            time.sleep(0.1)  # real time must pass: nothing to wait on but the clock
        skew_end = time.monotonic() + 1.1
        while time.monotonic() < skew_end:
            time.sleep(0.1)

    @contextmanager
    def expired_ticket(self) -> Iterator[Self]:
        """Inside: the ccache holds only an expired TGT for `user`, and os.environ has the
        realm's variables without the client keytab (else MIT would fetch a fresh TGT).
        Takes ~3 s of real time. On exit: a fresh TGT again, os.environ restored.
        """
        self.kinit(lifetime="2s")
        try:
            self.wait_expired()
            with self.activate(client_keytab=False):
                yield self
        finally:
            self.kinit()

    def stale_keytab(self, service: str = SERVICE, hosts: Sequence[str] | None = None) -> Path:
        """A keytab with `service`'s current keys, which then stop being current: the KDC
        gets new ones (kvno + 1), `service_keytab` too. Tickets issued from now on cannot
        be decrypted with the returned keytab. The user's ccache is renewed by kinit (if it
        held a TGT), so that no service ticket for the old key is left in it.
        """
        names = [f"{service}/{host}" for host in (hosts or self.hostnames)]
        stale = self.directory / f"{service}-stale-{secrets.token_hex(4)}.keytab"
        self.ktadd(stale, *names, randomize=False)
        self.ktadd(self.service_keytab, *names)
        if self.has_valid_ticket():
            self.kinit()
        return stale


def merged_env(realm: KerberosRealm, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ with every KRB5* variable replaced by the realm's, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KRB5")}
    env.update(realm.env)
    env.update(extra or {})
    return env
