"""GSS-API (RFC 1961) protected throughput: socks5d against Dante's sockd, same run.

    python3 -m bench.gssapi                            # 3 repetitions, ~2 minutes
    python3 -m bench.gssapi --smoke --out DIR          # ~6 seconds, what CI runs
    python3 -m bench.gssapi --reps 5 --duration 5

Writes gssapi.json and gssapi.md (default: bench/results/). bench/README.md, section
"GSS-API throughput", says what is measured and how; in short:

- a throwaway MIT Kerberos realm (tests/rfc1961/realm.py: KDC on 127.0.0.1, keytabs,
  credential cache in the run's directory) is made for the run;
- two GSS-API servers start once and serve the whole run, both on 127.0.0.1 with every
  protection level allowed: socks5d (`--auth gssapi`, default engine flags) and the sockd of
  Dante built with GSSAPI (scripts/build-dante-gssapi.sh);
- the client is bench/loadgen.c's `bulk` mode, one stream, run without --proxy under Dante's
  socksify: LD_PRELOAD of the build's libdsocks with a route `method: gssapi`,
  `gssapi.enctype: LEVEL`, so Dante's client library negotiates and wraps in C. loadgen runs
  with --copy (plain recv(); libdsocks's GSS-API path does not support MSG_TRUNC);
- direct (loadgen --copy, no proxy, no preload) is the baseline, measured in every
  repetition; each repetition runs every (server, level) and direct, download then upload,
  in an order rotated by one each repetition.

Every process is started by the benchmark, on 127.0.0.1, and stopped by its PID (the
realm's KDC too); as root, the run happens in a private network namespace like
`python3 -m bench`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import build, netns, procs, report, runner, targets
from bench.loadgen import RUN_MARGIN, Loadgen, LoadgenError, Ports
from bench.targets import Running, TargetError, Workspace

# The Kerberos realm and the Dante build's location are the tests' (tests/rfc1961, standard
# library only), imported from the repository.
if str(build.REPO) not in sys.path:
    sys.path.insert(0, str(build.REPO))
from tests.rfc1961 import dante_build
from tests.rfc1961.realm import KerberosRealm

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Protection levels, in Dante's names (`gssapi.enctype`) and socks5d's (--gssapi-levels).
LEVELS = ("clear", "integrity", "confidentiality")
SERVERS = ("socks5d", "dante")
DIRECTIONS = ("down", "up")
#: The GSS-API service name both servers accept and Dante's client asks for
#: (rcmd/localhost: Dante reverse-resolves the proxy's address 127.0.0.1).
SERVICE = "rcmd"
#: Environment variables a client or server must not inherit from the benchmark's caller.
_FOREIGN = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ld_preload")

Figures = dict[str, Any]


# --------------------------------------------------------------------------- the programs


@dataclass(frozen=True)
class DanteBuild(dante_build.DanteBuild):
    """The GSSAPI build (tests/rfc1961/dante_build.py), with its version for the results."""

    def version(self) -> str:
        result = subprocess.run(
            [str(self.sockd), "-v"], capture_output=True, text=True, check=False, timeout=10
        )
        version = (result.stdout + result.stderr).strip().split(".  ")[0] or "Dante"
        return f"{version} built with GSSAPI ({self.prefix})"


def clean_environment() -> dict[str, str]:
    """This process's environment without Kerberos, SOCKS, proxy or preload settings."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KRB5", "SOCKS_")) and key.lower() not in _FOREIGN
    }


class Socks5dGssapi(targets.Socks5d):
    """socks5d from the run's snapshot of src/, GSS-API only, every level granted."""

    def __init__(self, realm_env: dict[str, str], keytab: Path) -> None:
        super().__init__("socks5d", ())
        self.realm_env = realm_env
        self.keytab = keytab

    def unavailable(self) -> str | None:
        accepted = targets.serve_flags()
        if accepted is None:
            return "python3 -m socks5d serve --help failed"
        if "--gssapi-levels" not in accepted:
            return "socks5d serve has no --gssapi-levels"
        try:
            import gssapi  # noqa: F401  (the server's dependency: socks5d[gssapi])
        except ImportError:
            return "python-gssapi is not installed (pip install -e '.[gssapi]')"
        return None

    def environment(self) -> dict[str, str]:
        pythonpath = targets.socks5d_environment()["PYTHONPATH"]  # the run's snapshot first
        return {**clean_environment(), "PYTHONPATH": pythonpath, **self.realm_env}

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        command = super().command(port, workspace, userpass=False)
        return [
            *command,
            "--auth",
            "gssapi",
            "--gssapi-keytab",
            str(self.keytab),
            "--gssapi-service",
            SERVICE,
            "--gssapi-levels",
            ",".join(LEVELS),
        ]


class DanteGssapi(targets.Target):
    """The GSSAPI build's sockd, GSS-API only, every level allowed, -N 1."""

    name = "dante"

    def __init__(self, dante: DanteBuild, realm_env: dict[str, str], keytab: Path) -> None:
        self.dante = dante
        self.realm_env = realm_env
        self.keytab = keytab

    def unavailable(self) -> str | None:
        return self.dante.missing()

    def version(self) -> str | None:
        return self.dante.version()

    def environment(self) -> dict[str, str]:
        return {**clean_environment(), **self.realm_env}

    def command(self, port: int, workspace: Workspace, *, userpass: bool) -> list[str]:
        config = workspace.directory / f"sockd-gssapi-{port}.conf"
        config.write_text(sockd_config(port, self.keytab))
        pidfile = workspace.directory / f"sockd-gssapi-{port}.pid"
        return [str(self.dante.sockd), "-f", str(config), "-p", str(pidfile), "-N", "1"]


def sockd_config(port: int, keytab: Path) -> str:
    """GSS-API required, every level allowed, CONNECT between loopback addresses; the GSS-API
    settings are repeated in the `client pass` rule, where the negotiation happens.
    """
    users = ""
    if os.geteuid() == 0:
        # As root sockd must be told whom to run as; root, because its children read the
        # realm's files in the run's 0700 directory.
        users = "user.privileged: root\nuser.unprivileged: root\n"
    gssapi = (
        f"    gssapi.keytab: FILE:{keytab}\n"
        f"    gssapi.servicename: {SERVICE}\n"
        f"    gssapi.enctype: {' '.join(LEVELS)}\n"
    )
    return (
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: 127.0.0.1\n"
        "clientmethod: none\n"
        "socksmethod: gssapi\n"
        f"{users}"
        "timeout.negotiate: 60\n"
        "timeout.io: 86400\n"
        "client pass {\n"
        "    from: 127.0.0.0/8 to: 127.0.0.0/8\n"
        f"{gssapi}"
        "    log: error\n"
        "}\n"
        "socks pass {\n"
        "    from: 127.0.0.0/8 to: 127.0.0.0/8\n"
        "    command: connect\n"
        f"{gssapi}"
        "    log: connect disconnect error\n"
        "}\n"
    )


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Settings:
    reps: int
    #: seconds of each timed transfer
    duration: float
    smoke: bool = False


@dataclass(frozen=True)
class Case:
    """One row of the results: direct, or a server at a protection level."""

    server: str | None
    level: str | None

    @property
    def name(self) -> str:
        return "direct" if self.server is None else f"{self.server} {self.level}"


DIRECT = Case(None, None)


def cases(servers: Sequence[str]) -> list[Case]:
    """Table order: direct, then each level with every available server."""
    return [DIRECT, *(Case(server, level) for level in LEVELS for server in servers)]


@dataclass
class Client:
    """How the load generator reaches a case: its environment (socksify or none)."""

    loadgen: Path
    env: dict[str, str]
    log: Path

    def bulk(self, port: int, direction: str, duration: float) -> Figures:
        """One single-stream bulk transfer with --copy; the figures plus `client_cpu_s`
        (the load generator's own utime+stime, libdsocks's wrapping included).
        """
        command = [str(self.loadgen), "bulk", "--dest", f"127.0.0.1:{port}"]
        command += ["--direction", direction, "--streams", "1", "--duration", str(duration)]
        command += ["--copy"]
        time_limit = duration + RUN_MARGIN
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        child = procs.Child(command, log=self.log, env=self.env, stdout=subprocess.PIPE)
        with procs.running(child):
            try:
                output, _ = child.process.communicate(timeout=time_limit)
            except subprocess.TimeoutExpired as exc:
                raise LoadgenError(f"bulk did not finish within {time_limit:.0f} s") from exc
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = output.decode(errors="replace").strip().splitlines()
        if not lines:
            tail = child.log_tail()
            raise LoadgenError(
                f"bulk exited {child.process.returncode} without a result"
                + (f": {tail}" if tail else "")
            )
        figures = _parse(lines[-1])
        figures["client_cpu_s"] = (after.ru_utime + after.ru_stime) - (
            before.ru_utime + before.ru_stime
        )
        return figures


def _parse(line: str) -> Figures:
    try:
        figures = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LoadgenError(f"unreadable output {line!r}") from exc
    if "error" in figures:
        raise LoadgenError(figures["error"])
    return dict(figures)


@dataclass
class Run:
    """What one run has started: the servers, their clients, the load generator's ports."""

    settings: Settings
    ports: Ports
    servers: dict[str, Running]
    clients: dict[Case, Client]


def _cpu(running: Running | None) -> float | None:
    pid = None if running is None else running.pid
    return None if pid is None else procs.cpu_seconds(pid)


def measure(run: Run, case: Case) -> dict[str, Any]:
    """Download, then upload, for one case: GB/s, the proxy's and the client's CPU s/GB."""
    figures: dict[str, float | None] = {}
    problems: list[str] = []
    errors = 0
    running = run.servers.get(case.server) if case.server else None
    for direction in DIRECTIONS:
        port = run.ports.source if direction == "down" else run.ports.sink
        try:
            before = _cpu(running)
            result = run.clients[case].bulk(port, direction, run.settings.duration)
            after = _cpu(running)
            if running is not None:
                running.check_alive()
        except (LoadgenError, TargetError, OSError) as exc:
            problems.append(f"{direction}: {exc}")
            figures[f"{direction}_gbps"] = None
            continue
        gigabytes = result["bytes"] / 1e9
        figures[f"{direction}_gbps"] = result["gbps"] if result["bytes"] > 0 else None
        seconds = result["seconds"]
        if gigabytes > 0 and seconds > 0:
            client = result["client_cpu_s"]
            figures[f"{direction}_client_cpu_s_per_gb"] = client / gigabytes
            figures[f"{direction}_client_cores"] = client / seconds
            if before is not None and after is not None:
                figures[f"{direction}_proxy_cpu_s_per_gb"] = (after - before) / gigabytes
                figures[f"{direction}_proxy_cores"] = (after - before) / seconds
        else:
            problems.append(f"{direction}: no bytes moved")
        errors += int(result.get("errors", 0))
    return {"figures": figures, "errors": errors, "problems": problems}


# --------------------------------------------------------------------------- the run


def _number(value: float | None) -> str:
    return "-" if value is None else report.number(value)


def _say(message: str) -> None:
    print(message, flush=True)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally` that stops a child


def _log_text(running: Running | None) -> str:
    if running is None or running.child is None or running.child.log is None:
        return ""
    try:
        return running.child.log.read_text(errors="replace")
    except OSError:
        return ""


def _session_levels(running: Running | None, pattern: str) -> dict[str, int]:
    """How many sessions a server's log shows at each level."""
    counts: dict[str, int] = {}
    for level in re.findall(pattern, _log_text(running)):
        counts[level] = counts.get(level, 0) + 1
    return counts


#: A socks5d access line's `auth=gssapi/LEVEL` (one per session); Dante's `connect` line
#: (one per session; the `disconnect` line has a `]:` instead of `[:`).
SOCKS5D_LEVEL = r"auth=gssapi/([a-z]+)"
DANTE_LEVEL = r"tcp/connect \[: gssapi/([a-z]+)%"
#: socks5d's start-up line names the engine its defaults chose.
SOCKS5D_READY = r"ready: (.*?), pid \d+"
#: klist -e: the session key's and ticket's enctypes of the service ticket.
SERVICE_ETYPE = rf"{SERVICE}/localhost@\S+\s+Etype \(skey, tkt\): ([^\n]+)"


def measure_all(
    settings: Settings,
    workdir: Path,
    notes: list[str],
    descriptions: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Start the realm, the load generator's servers and the proxies; run every repetition.

    Returns:
        {"cases": [...], "results": {case name: {"reps": [...]}}, "sessions": {...}}
    """
    workspace = Workspace(workdir)
    kerberos = KerberosRealm(workdir / "krb5")
    dante = DanteBuild(dante_build.dante_gssapi_dir())
    with contextlib.ExitStack() as stack:
        realm = stack.enter_context(kerberos)
        realm.kinit()
        realm_env = realm.environment()
        proxies: list[targets.Target] = [
            Socks5dGssapi(realm_env, realm.service_keytab),
            DanteGssapi(dante, realm_env, realm.service_keytab),
        ]
        started: dict[str, Running] = {}
        for proxy in proxies:
            note = proxy.unavailable()
            descriptions[proxy.name] = {
                "available": note is None,
                "note": note,
                "version": proxy.version() if note is None else None,
            }
            if note is not None:
                _say(f"bench.gssapi: skipping {proxy.name}: {note}")
                continue
            started[proxy.name] = stack.enter_context(proxy.start(workspace))
            _say(f"bench.gssapi: {proxy.name} listening on {started[proxy.name].address}")
        binary = build.loadgen()
        _, ports = stack.enter_context(Loadgen(binary).servers(workspace.log("loadgen-servers")))
        clients = {DIRECT: Client(binary, clean_environment(), workspace.log("client-direct"))}
        if "dante" not in started:
            started_servers: list[str] = []
            notes.append(
                "without Dante's GSSAPI build there is no GSS-API client (libdsocks) either: "
                "only direct was measured"
            )
        else:
            started_servers = [name for name in SERVERS if name in started]
        all_cases = cases(started_servers)
        for case in all_cases[1:]:
            assert case.server is not None and case.level is not None
            port = int(str(started[case.server].address).rsplit(":", 1)[1])
            conf = dante_build.write_socks_conf(
                workdir / f"socks-{case.server}-{case.level}.conf",
                port,
                case.level,
                servicename=SERVICE,
                log_to_stderr=True,
            )
            env = {
                **clean_environment(),
                **realm_env,
                "SOCKS_CONF": str(conf),
                "SOCKS_AUTOADD_LANROUTES": "no",
                "LD_PRELOAD": str(dante.libdsocks),
            }
            log = workspace.log(f"client-{case.server}-{case.level}")
            clients[case] = Client(binary, env, log)
        run = Run(settings, ports, started, clients)
        results: dict[str, dict[str, list[dict[str, Any]]]] = {
            case.name: {"reps": []} for case in all_cases
        }
        began = time.monotonic()
        for rep in range(settings.reps):
            shift = rep % len(all_cases)
            for case in [*all_cases[shift:], *all_cases[:shift]]:
                record = measure(run, case)
                results[case.name]["reps"].append({"rep": rep + 1, **record})
                figures = record["figures"]
                shown = "  ".join(
                    f"{d} {_number(figures.get(f'{d}_gbps'))} GB/s" for d in DIRECTIONS
                )
                _say(
                    f"[{time.monotonic() - began:5.0f} s] {rep + 1}/{settings.reps} "
                    f"{case.name:<26} {shown}"
                )
                for problem in record["problems"]:
                    print(f"    problem: {problem}", file=sys.stderr, flush=True)
        etype = re.search(SERVICE_ETYPE, realm.klist())
        kerberos_info = {
            "service_ticket_etypes": etype[1].strip() if etype else "unknown",
            "mit_krb5": _krb5_version(),
        }
        sessions = {
            "socks5d": _session_levels(started.get("socks5d"), SOCKS5D_LEVEL),
            "dante": _session_levels(started.get("dante"), DANTE_LEVEL),
        }
    # results keyed by case name; the reps in the order they ran within the case (1, 2, 3)
    return {
        "cases": [
            {"name": case.name, "server": case.server, "level": case.level} for case in all_cases
        ],
        "results": results,
        "sessions": sessions,
        "kerberos": kerberos_info,
        "socks5d_engine": _first(started.get("socks5d"), SOCKS5D_READY),
    }


def _first(running: Running | None, pattern: str) -> str | None:
    """The first match of `pattern` in a started server's log."""
    match = re.search(pattern, _log_text(running))
    return match[1] if match else None


def _krb5_version() -> str:
    """MIT Kerberos's version, from krb5-config when installed."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["krb5-config", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    return "unknown"


# --------------------------------------------------------------------------- summaries

#: The figures of every case, in table order: (key, label, unit, higher is better).
METRICS = (
    ("down_gbps", "down", "GB/s", True),
    ("up_gbps", "up", "GB/s", True),
    ("down_proxy_cpu_s_per_gb", "proxy CPU down", "s/GB", False),
    ("up_proxy_cpu_s_per_gb", "proxy CPU up", "s/GB", False),
    ("down_client_cpu_s_per_gb", "client CPU down", "s/GB", False),
    ("up_client_cpu_s_per_gb", "client CPU up", "s/GB", False),
    ("down_proxy_cores", "proxy down", "cores", False),
    ("up_proxy_cores", "proxy up", "cores", False),
    ("down_client_cores", "client down", "cores", False),
    ("up_client_cores", "client up", "cores", False),
)
#: The columns of the main table; the rest (CPU time ÷ transfer time) get a table of their own.
MAIN_METRICS, CORE_METRICS = METRICS[:6], METRICS[6:]
#: Reported also as a ratio to direct in the same repetition.
VS_DIRECT = ("down_gbps", "up_gbps")


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def summarize(data: dict[str, Any]) -> None:
    """Add `summary` to every case (median, min, max; ratio to direct by repetition) and
    `socks5d_vs_dante` (socks5d's median ÷ Dante's, per level and figure).
    """
    results = data["results"]
    direct = {rep["rep"]: rep["figures"] for rep in results["direct"]["reps"]}
    for entry in results.values():
        summary = {}
        for key, *_ in METRICS:
            values = [rep["figures"][key] for rep in entry["reps"] if rep["figures"].get(key)]
            ratios = []
            if key in VS_DIRECT:
                for rep in entry["reps"]:
                    value, base = rep["figures"].get(key), direct.get(rep["rep"], {}).get(key)
                    if value is not None and base:
                        ratios.append(value / base)
            summary[key] = {"value": _spread(values), "ratio_to_direct": _spread(ratios)}
        entry["summary"] = summary
        entry["errors"] = sum(rep["errors"] for rep in entry["reps"])
    comparisons: dict[str, dict[str, float | None]] = {}
    for level in LEVELS:
        ours, theirs = results.get(f"socks5d {level}"), results.get(f"dante {level}")
        if ours is None or theirs is None:
            continue
        row: dict[str, float | None] = {}
        for key, *_ in METRICS[:4]:
            mine, peer = ours["summary"][key]["value"], theirs["summary"][key]["value"]
            row[key] = mine["median"] / peer["median"] if mine and peer else None
        comparisons[level] = row
    data["socks5d_vs_dante"] = comparisons


def _cell(summary: dict[str, Any] | None, with_ratio: bool) -> str:
    if summary is None or summary["value"] is None:
        return "-"
    spread = summary["value"]
    text = report.number(spread["median"])
    if spread["n"] > 1 and spread["min"] != spread["max"]:
        text += f" [{report.number(spread['min'])}, {report.number(spread['max'])}]"
    ratio = summary.get("ratio_to_direct")
    if with_ratio and ratio is not None:
        text += f" ·{report.number(ratio['median'])}x"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(data: dict[str, Any]) -> str:
    machine, network, settings = data["machine"], data["network"], data["settings"]
    if network.get("namespace"):
        where = "private network namespace (unshare -n), everything on 127.0.0.1"
    else:
        where = f"host loopback, 127.0.0.1 ({network.get('warning', 'no namespace')})"
    programs = "; ".join(
        f"{name}: {info['version']}" for name, info in data["servers"].items() if info["version"]
    )
    lines = ["# socks5d GSS-API (RFC 1961) throughput", ""]
    lines += _table(
        ["machine", ""],
        [
            ["CPU", f"{machine['cpus']} x {machine['cpu_model']}"],
            ["kernel", machine["kernel"]],
            ["Python", machine["python"]],
            [
                "load average",
                f"{machine['load_at_start']} at the start, {machine['load_at_end']} at the end "
                "(1, 5, 15 min)",
            ],
            ["socks5d", f"git {machine['socks5d_git']}; {_engine(data)}"],
            [
                "Kerberos",
                f"{data['kerberos']['mit_krb5']}; service ticket enctypes (session key, "
                f"ticket): {data['kerberos']['service_ticket_etypes']}",
            ],
            ["network", where],
            ["programs", programs or "-"],
            [
                "run",
                f"{data['generated']}, `{data['command']}`, {settings['reps']} repetition(s), "
                f"{settings['duration']} s per transfer, {data['elapsed_seconds']:.0f} s in all",
            ],
        ],
    )
    lines += [
        "",
        "One TCP stream through the proxy, download (source → proxy → client) and upload "
        "(client → proxy → sink), at each GSS-API protection level. The client is "
        "bench/loadgen.c (`bulk --copy`) under Dante's socksify (LD_PRELOAD of libdsocks, "
        "route `method: gssapi`, `gssapi.enctype: LEVEL`): Dante's client library negotiates "
        "and wraps/unwraps in C, for both servers alike. *direct* is the same client without "
        "proxy or preload. Both servers ran all the time, each granting every level; the "
        "client's route picks the level; the Kerberos realm is the run's own, with its KDC on "
        "127.0.0.1.",
        "",
        "Each cell: median [min, max] over the repetitions; `·Rx` on throughput is the ratio "
        "to direct measured in the same repetition (median of the per-repetition ratios). "
        "↑ higher is better, ↓ lower is better; - not measured. *proxy CPU* is the server's "
        "whole process tree (utime+stime from /proc, Dante's children included) per 10^9 "
        "bytes; *client CPU* is the load generator's own utime+stime per 10^9 bytes, "
        "libdsocks's wrapping included.",
        "",
        "The client side is not free: Dante's libdsocks wraps and unwraps every message in "
        "the load generator, on the same 2 vCPUs as the server under test, at a cost per byte "
        "close to the server's own (*client CPU*). With integrity or confidentiality, each "
        "side then keeps about one vCPU busy (*CPU busy* below), and whichever is slower sets "
        "the pace: where it is the client, throughput hides part of the difference between "
        "the servers, which *proxy CPU s/GB* shows directly.",
        "",
    ]
    for note in data["notes"]:
        lines += [f"Note: {note}", ""]
    lines += ["## Throughput and CPU", ""]
    rows, problems = [], []
    for case in data["cases"]:
        entry = data["results"][case["name"]]
        cells = [
            _cell(entry["summary"].get(key), case["server"] is not None) for key, *_ in MAIN_METRICS
        ]
        rows.append(
            [case["level"] or "-", case["server"] or "direct", *cells, str(entry["errors"])]
        )
        for rep in entry["reps"]:
            problems += [
                f"- {case['name']}, repetition {rep['rep']}: {problem}"
                for problem in rep["problems"]
            ]
    header = ["level", "server"]
    header += [
        f"{label} {unit} {'↑' if higher else '↓'}" for _, label, unit, higher in MAIN_METRICS
    ]
    lines += _table([*header, "errors ↓"], rows)
    lines.append("")
    if problems:
        lines += ["Problems:", "", *problems, ""]
    lines += [
        "## CPU busy during the transfer",
        "",
        "CPU seconds ÷ seconds of the transfer, in vCPUs (of 2): the server's process tree, "
        "and the load generator with libdsocks. One tunnel is one thread of work on each side "
        "(socks5d's event loop, Dante's io process for the session, the load generator): near "
        "1, that side was CPU-bound.",
        "",
    ]
    rows = [
        [
            case["level"] or "-",
            case["server"] or "direct",
            *(
                _cell(data["results"][case["name"]]["summary"].get(key), False)
                for key, *_ in CORE_METRICS
            ),
        ]
        for case in data["cases"]
    ]
    lines += _table(["level", "server", *(label for _, label, *_ in CORE_METRICS)], rows)
    lines.append("")
    comparisons = data["socks5d_vs_dante"]
    if comparisons:
        lines += [
            "## socks5d ÷ Dante",
            "",
            "socks5d's median ÷ Dante's median at the same level: above 1 is better for "
            "throughput (↑), below 1 is better for CPU per GB (↓).",
            "",
        ]
        header = ["level"]
        header += [f"{label} {'↑' if higher else '↓'}" for _, label, _, higher in METRICS[:4]]
        rows = [
            [
                level,
                *(
                    "-" if row[key] is None else f"{report.number(row[key])}x"
                    for key, *_ in METRICS[:4]
                ),
            ]
            for level, row in comparisons.items()
        ]
        lines += _table(header, rows)
        lines.append("")
    sessions = data["sessions"]
    if any(sessions.values()):
        lines += [
            "## Sessions in the servers' logs",
            "",
            "GSS-API sessions each server logged, by the level it granted (two per case and "
            "repetition: download and upload): the level asked for is the level served.",
            "",
        ]
        rows = [
            [server, *(str(counts.get(level, 0)) for level in LEVELS)]
            for server, counts in sessions.items()
            if counts
        ]
        lines += _table(["server", *LEVELS], rows)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.gssapi",
        description="GSS-API protected throughput: socks5d against Dante's sockd, at every "
        "protection level, through Dante's socksify; writes gssapi.json and gssapi.md.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds in all: 0.3 s transfers, 1 repetition, to a temporary directory "
        "unless --out is given",
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds per transfer (default 3; smoke 0.3)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default bench/results)"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the run's logs and configuration files"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.reps is not None and args.reps < 1:
        print("bench.gssapi: --reps must be at least 1", file=sys.stderr)
        return 2
    settings = Settings(
        reps=1 if args.smoke else args.reps or 3,
        duration=args.duration or (0.3 if args.smoke else 3.0),
        smoke=args.smoke,
    )
    if netns.inside():
        network: dict[str, Any] = {"namespace": True, **netns.configure()}
    else:
        try:
            build.loadgen()
        except build.BuildError as exc:
            print(f"bench.gssapi: {exc}", file=sys.stderr)
            return 1
        reason = netns.reexec(argv, "bench.gssapi")  # returns only when no namespace can be made
        print(f"bench.gssapi: WARNING: running on the host's loopback: {reason}", file=sys.stderr)
        network = {"namespace": False, "warning": reason}
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="socks5d-gssapi-smoke-")) if args.smoke else RESULTS_DIR

    started = time.monotonic()
    load_at_start = runner.load_average()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="socks5d-bench-gssapi-"))
    keep = args.keep_logs
    notes: list[str] = []
    servers: dict[str, dict[str, Any]] = {}
    try:
        source, revision = build.snapshot_socks5d(workdir, None)
        targets.use_socks5d_source(source)
        _say(f"bench.gssapi: socks5d from git {revision}; {settings.reps} repetition(s)")
        measured = measure_all(settings, workdir, notes, servers)
    except KeyboardInterrupt:
        _say("bench.gssapi: interrupted; no results written")
        return 130
    except (TargetError, LoadgenError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        keep = True
        _say(f"bench.gssapi: failed: {exc}")
        return 1
    finally:
        if keep:
            _say(f"bench.gssapi: logs and configuration files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    expected = 2 * settings.reps
    for server, counts in measured["sessions"].items():
        if server not in servers or not servers[server]["available"]:
            continue
        for level in LEVELS:
            if counts.get(level, 0) != expected:
                notes.append(
                    f"{server}'s log shows {counts.get(level, 0)} sessions at {level}, "
                    f"not {expected}"
                )
    for name, info in servers.items():
        if not info["available"]:
            notes.append(f"{name} skipped: {info['note']}")
    data: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python3 -m bench.gssapi", *argv]),
        "elapsed_seconds": time.monotonic() - started,
        "machine": {
            **runner.machine(revision),
            "load_at_start": load_at_start,
            "load_at_end": runner.load_average(),
        },
        "network": network,
        "settings": {"reps": settings.reps, "duration": settings.duration, "streams": 1},
        "servers": servers,
        "levels": list(LEVELS),
        "notes": notes,
        **measured,
    }
    summarize(data)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "gssapi.json", data)
    (out / "gssapi.md").write_text(markdown(data))
    _say(f"bench.gssapi: done in {data['elapsed_seconds']:.0f} s; results in {out}")
    return 0


def _engine(data: dict[str, Any]) -> str:
    """How socks5d relayed: its defaults (no engine flags), as its start-up line put them."""
    chosen = data.get("socks5d_engine") or "?"
    return (
        f"no engine flags ({chosen}); integrity and confidentiality tunnels go through its "
        "portable relay with wrap/unwrap in python-gssapi, clear tunnels through that default "
        "relay"
    )


if __name__ == "__main__":
    sys.exit(main())
