"""The shape of the code: no import cycle among the modules of `src/`, a client that never
imports the server, and `socks5d.client` importable where `fcntl` does not exist (Windows).

The import graph is read with `ast`, so every import counts, those under `TYPE_CHECKING`
included: a type-only import back is still the knot that makes a module unusable alone.
Importing `a.b.c` also imports the packages `a.b` and `a` first; an edge to such a parent
package is counted unless the importing module is inside it (then the package is already
being initialised and its `__init__` re-exports do not loop back). `from a.b import c` of a
submodule `c` is an edge to `a.b.c` (and to `a.b` by the same rule); of a name `a.b` defines,
an edge to `a.b` itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "socks5d"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SRC / ROOT).rglob("*.py"))}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (parent packages as described above)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = [f"{node.module}.{alias.name}" for alias in node.names]
                names = [name for name in submodules if name in modules]
                # the package itself: for a name its __init__ defines or re-exports, or as
                # the parent of the submodules imported (by the parent rule below)
                if len(names) < len(submodules) or not _inside(module, node.module):
                    names.append(node.module)
            for name in names:
                if name not in modules:
                    continue
                targets.add(name)
                parts = name.split(".")
                for end in range(2, len(parts)):  # parent packages below the root
                    parent = ".".join(parts[:end])
                    if not _inside(module, parent):
                        targets.add(parent)
        targets.discard(module)
        graph[module] = {target for target in targets if target != ROOT}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_the_graph_reader_sees_a_cycle_when_there_is_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_src_is_part_of_an_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_client_never_imports_the_server() -> None:
    offenders = {
        (module, target)
        for module, targets in import_graph().items()
        if _inside(module, f"{ROOT}.client")
        for target in targets
        if _inside(target, f"{ROOT}.server")
    }
    assert offenders == set()


@pytest.mark.parametrize("module", ["socks5d.client", "socks5d.client.sync", "socks5d.proto"])
def test_the_client_imports_where_there_is_no_fcntl(module: str) -> None:
    code = f'import sys; sys.modules["fcntl"] = None; import {module}'
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert completed.returncode == 0, completed.stderr


#: README's "How it is built", top to bottom: a module may import only what is below its own
#: layer, or beside it in its own package.
LAYERS = [
    "__main__",
    "cli",
    "server",
    "client",
    "config",
    "routing",
    "proxies",
    "relay",
    "rules",
    "rules_index",
    "users",
    "gss",
    "net",
    "names",
    "proto",
    "errors",
    "extras",
    "constants",
]


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


def test_every_import_points_down_the_layers() -> None:
    upward = sorted(
        (module, target)
        for module, targets in import_graph().items()
        if module != ROOT
        for target in targets
        if _layer(target) < _layer(module)
        or (_layer(target) == _layer(module) and module.split(".")[1] != target.split(".")[1])
    )
    assert upward == []
