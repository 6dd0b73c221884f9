"""What an operator installs: the license, the package metadata, the sdist's contents, the
systemd unit (checked by `systemd-analyze verify`) and the logrotate snippet (checked by
`logrotate --debug`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

import socks5d
from socks5d.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "socks5d.service"
LOGROTATE = ROOT / "contrib" / "socks5d.logrotate"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_is_the_mit_license_pyproject_names() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "MIT"  # an SPDX expression, the current form
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")


def test_version_is_written_once() -> None:
    project = _pyproject()["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "socks5d.__version__"
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+", socks5d.__version__)


def test_no_classifiers_or_urls_that_nobody_checked() -> None:
    project = _pyproject()["project"]
    assert "classifiers" not in project and "urls" not in project


@pytest.mark.timeout(300)
def test_sdist_holds_the_example_the_license_and_contrib(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=280,
    )
    (sdist,) = tmp_path.glob("socks5d-*.tar.gz")
    assert sdist.name == f"socks5d-{socks5d.__version__}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        info = archive.extractfile(f"socks5d-{socks5d.__version__}/PKG-INFO")
        assert info is not None
        metadata = info.read().decode()
    for wanted in (
        "LICENSE",
        "examples/socks5d.toml",
        "contrib/socks5d.service",
        "contrib/socks5d.logrotate",
        "src/socks5d/__init__.py",
    ):
        assert wanted in names, wanted
    assert "License-Expression: MIT" in metadata


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_file_has_what_operations_need() -> None:
    settings = _unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["KillSignal"] == ["SIGTERM"]
    # SIGTERM to the main process only: the supervisor drains its workers itself.
    assert settings["KillMode"] == ["mixed"]
    drain = ServerConfig().timeouts.drain
    assert float(settings["TimeoutStopSec"][0]) > drain
    assert settings["LimitNOFILE"] == ["1048576"]
    assert settings["User"] == ["socks5d"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert settings[key] == ["yes"], key
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]


@pytest.mark.timeout(60)
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    executable = shutil.which("socks5d")
    assert executable is not None, "socks5d is installed by scripts/test.sh"
    # The unit as installed, but naming the socks5d of this machine (verify checks it exists).
    unit = tmp_path / "socks5d.service"
    unit.write_text(
        UNIT.read_text(encoding="utf-8").replace("/opt/socks5d/bin/socks5d", executable),
        encoding="utf-8",
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=50
    )
    # An unknown or misspelled setting is only a warning: any line about the unit fails.
    complaints = [line for line in result.stderr.splitlines() if "socks5d.service" in line]
    assert result.returncode == 0 and complaints == [], result.stderr


@pytest.mark.timeout(60)
def test_logrotate_accepts_the_snippet(tmp_path: Path) -> None:
    logrotate = shutil.which("logrotate") or shutil.which("/usr/sbin/logrotate")
    if logrotate is None:
        pytest.skip("logrotate is not installed (Debian package logrotate)")
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "socks5d.log").write_text("a line\n", encoding="utf-8")
    snippet = tmp_path / "socks5d"
    snippet.write_text(
        LOGROTATE.read_text(encoding="utf-8")
        .replace("/var/log/socks5d", str(logs))
        .replace("su socks5d socks5d", "su root root"),
        encoding="utf-8",
    )
    result = subprocess.run(
        [logrotate, "--debug", "--state", str(tmp_path / "state"), str(snippet)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    assert "kill-whom=main" in LOGROTATE.read_text(encoding="utf-8")
