"""The engine table, `socks5d.relay.ENGINES`: the one list of `relay` settings, and what
importing the relay costs.

Every spelling of the setting comes from the table: the config check (`RELAY_ENGINES`), the
`serve --relay` choices, and `select_engine`, which builds the engine each name stands for
("auto": the first that works here, splice on Linux, else portable). Only the splice engine
needs `fcntl`; it is imported when that engine is built, so the relay and the client library
import where `fcntl` does not exist (Windows).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import socks5d
from socks5d import relay
from socks5d.cli import main
from socks5d.config import RELAY_ENGINES, build_config
from socks5d.relay import ENGINES, select_engine

#: Seconds the interpreter started to try the imports may take.
IMPORT_TIMEOUT = 20.0

#: Run in a fresh interpreter where `import fcntl` fails, as on Windows: import the client
#: library, build the portable engine, and report which socks5d modules were loaded.
WITHOUT_FCNTL = """
import json, sys
sys.modules["fcntl"] = None
import socks5d.client
import socks5d.relay
engine = socks5d.relay.select_engine("portable")
engine.close()
print(json.dumps({
    "engine": type(engine).__name__,
    "modules": sorted(name for name in sys.modules if name.startswith("socks5d")),
}))
"""


def run_without_fcntl() -> dict[str, object]:
    """What `WITHOUT_FCNTL` reports, run against this tree's sources."""
    source_root = Path(socks5d.__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL],
        env={**os.environ, "PYTHONPATH": str(source_root)},
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_client_library_imports_and_relays_portably_without_fcntl() -> None:
    report = run_without_fcntl()
    assert report["engine"] == "PortableEngine"


def test_client_library_loads_neither_the_server_nor_the_splice_engine() -> None:
    modules = run_without_fcntl()["modules"]
    assert isinstance(modules, list)
    assert "socks5d.relay" in modules
    assert [name for name in modules if name.startswith("socks5d.server")] == []
    assert "socks5d.relay.splice" not in modules


def test_relay_choices_are_auto_and_every_engine_name() -> None:
    assert ("auto", *ENGINES) == relay.CHOICES
    assert tuple(ENGINES) == ("splice", "portable")


def test_config_accepts_exactly_the_engine_names_and_auto() -> None:
    assert ("auto", *ENGINES) == RELAY_ENGINES
    with pytest.raises(socks5d.ConfigError, match=r"^performance\.relay: "):
        build_config({"performance": {"relay": "sendfile"}})


def test_serve_relay_flag_offers_auto_and_every_engine_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--help"])
    assert caught.value.code == 0
    offered = re.search(r"--relay \{([^}]*)\}", capsys.readouterr().out)
    assert offered is not None
    assert tuple(offered.group(1).split(",")) == ("auto", *ENGINES)


@pytest.mark.parametrize("name", list(ENGINES))
def test_each_engine_name_builds_the_engine_of_that_name(name: str) -> None:
    if not ENGINES[name].available():
        pytest.skip(f"{name} does not work here")
    engine = select_engine(name)
    try:
        # the server's "ready" log line names the engine this way
        assert type(engine).__name__.removesuffix("Engine").lower() == name
    finally:
        engine.close()


def test_auto_is_splice_on_linux() -> None:
    if not relay.splice_available():
        pytest.skip("splice(2) is Linux-only")
    engine = select_engine("auto")
    try:
        assert type(engine).__name__ == "SpliceEngine"
    finally:
        engine.close()


def test_auto_is_portable_where_splice_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    engine = select_engine("auto")
    try:
        assert type(engine).__name__ == "PortableEngine"
    finally:
        engine.close()


def test_splice_where_splice_is_missing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "splice", raising=False)
    with pytest.raises(ValueError, match=r"^relay = splice needs Linux \(splice\(2\)\)$"):
        select_engine("splice")


def test_unknown_engine_name_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"^relay = sendfile: not one of auto, splice, portable$"):
        select_engine("sendfile")
