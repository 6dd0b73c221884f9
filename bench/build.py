"""What the benchmark builds for itself, under bench/.build/ (not committed).

- the load generator, bench/loadgen.c, compiled with gcc -O2 when the binary is missing or
  older than its source;
- a virtual environment for pproxy, created once: pproxy fails at start when uvloop 0.23 is
  installed beside it, so it cannot share the project's environment.

Both run before the benchmark enters its network namespace: pip needs the package index.
A step that cannot be done leaves a note, and the targets that need it are skipped.

At the start of a run, socks5d's source is also copied into the run's directory
(`snapshot_socks5d`), so that every socks5d proxy of the run executes the same code even
while src/ is being edited.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / ".build"
LOADGEN_SOURCE = BENCH_DIR / "loadgen.c"
LOADGEN_BINARY = BUILD_DIR / "loadgen"
PPROXY_VENV = BUILD_DIR / "pproxy-venv"
PPROXY_BINARY = PPROXY_VENV / "bin" / "pproxy"
#: Output of the last failed pproxy installation, for the note that skips pproxy.
PPROXY_INSTALL_LOG = BUILD_DIR / "pproxy-install.log"


class BuildError(Exception):
    """A build step failed; the message says why."""


def loadgen() -> Path:
    """The load generator binary, compiled first if needed.

    Raises:
        BuildError: no gcc, or the compilation failed.
    """
    if LOADGEN_BINARY.exists() and LOADGEN_BINARY.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return LOADGEN_BINARY
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("gcc is not installed: cannot build bench/loadgen.c")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    temporary = LOADGEN_BINARY.with_suffix(".tmp")
    result = subprocess.run(
        [gcc, "-O2", "-Wall", "-o", str(temporary), str(LOADGEN_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"gcc failed on bench/loadgen.c:\n{result.stderr}")
    temporary.replace(LOADGEN_BINARY)
    return LOADGEN_BINARY


def pproxy() -> Path:
    """pproxy's executable in its own virtual environment, installed first if needed.

    Raises:
        BuildError: the environment or the installation failed.
    """
    if PPROXY_BINARY.exists():
        return PPROXY_BINARY
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    print("bench: installing pproxy into bench/.build/pproxy-venv (once)", flush=True)
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(PPROXY_VENV)],
        [str(PPROXY_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "pproxy"],
    )
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            PPROXY_INSTALL_LOG.write_text(result.stdout + result.stderr)
            shutil.rmtree(PPROXY_VENV, ignore_errors=True)
            raise BuildError(
                f"pproxy could not be installed ({' '.join(step[:3])} failed; "
                f"see bench/.build/{PPROXY_INSTALL_LOG.name})"
            )
    PPROXY_INSTALL_LOG.unlink(missing_ok=True)
    return PPROXY_BINARY


def _git(*arguments: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(REPO), *arguments], capture_output=True, check=False)


def snapshot_socks5d(directory: Path, commit: str | None) -> tuple[Path, str]:
    """Copy socks5d's source into `directory`: src/ as it is now, or as committed at `commit`.

    Returns:
        The directory to put on PYTHONPATH, and the git revision it corresponds to
        ("abc123def456", with "(with uncommitted changes in src/)" for a dirty work tree).

    Raises:
        BuildError: `commit` is not a revision of this repository.
    """
    target = directory / "socks5d-source"
    if commit is None:
        shutil.copytree(
            REPO / "src", target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        revision = _git("rev-parse", "--short=12", "HEAD").stdout.decode().strip() or "unknown"
        if _git("status", "--porcelain", "--", "src").stdout.strip():
            revision += " (with uncommitted changes in src/)"
        return target, revision
    archive = _git("archive", "--format=tar", commit, "src")
    if archive.returncode != 0:
        raise BuildError(f"git archive {commit} failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory / "socks5d-archive", filter="data")
    shutil.move(directory / "socks5d-archive" / "src", target)
    return target, _git("rev-parse", "--short=12", commit).stdout.decode().strip()


def pproxy_note() -> str | None:
    """Why pproxy is not installed, when an installation was tried and failed."""
    if PPROXY_BINARY.exists():
        return None
    if PPROXY_INSTALL_LOG.exists():
        return f"pproxy could not be installed (see bench/.build/{PPROXY_INSTALL_LOG.name})"
    return "pproxy is not installed in bench/.build/pproxy-venv"
