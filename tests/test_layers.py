"""core/ is layered packages: the import rule (.importlinter) holds, it catches a back-import
(function-level and TYPE_CHECKING ones too), no module imports itself in a cycle, and no
module outgrows one job."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``core`` package found under ``root``."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(root / '.importlinter')!r}, "
            "no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          timeout=120)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_the_layer_contracts_hold():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module, added, broken", [
    # a model type reaching up into the lab, from inside a function
    ("models/types.py", "def _x():\n    from core.lab import Engine\n    return Engine\n",
     "core.models.types -> core.lab"),
    # the engine reaching up into the server, only for type checking
    ("engine/core.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from core.serving import EngineServer\n",
     "core.engine.core -> core.serving"),
    # two independent siblings of one layer
    ("ab/report.py", "from core.remote import RemoteInfo\n", "core.ab.report -> core.remote"),
    # the kernel reaching up
    ("config.py", "def _y():\n    import core.metrics\n", "core.config -> core.metrics"),
])
def test_a_back_import_breaks_the_contract(tmp_path, module, added, broken):
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copytree(ROOT / "core", copy / "core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, copy / ".importlinter")
    path = copy / "core" / module
    path.write_text(path.read_text() + "\n\n" + added)
    res = _lint(copy)
    assert res.returncode != 0, res.stdout
    assert "BROKEN" in res.stdout and broken in res.stdout, res.stdout


def test_no_import_cycle_in_core():
    graph = grimp.build_graph("core", cache_dir=None)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    # `core` itself (the contract's front door) imports everything and nothing imports it.
    assert not any("core" in targets for targets in edges.values() if targets), \
        "a module of core imports the package `core` (import from its own package instead)"
    assert _strongly_connected(edges) == []


def test_the_cycle_finder_finds_cycles():
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == \
        [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_module_outgrows_one_job():
    """A few hundred lines at most (house style); the mlserver runtime is MLServer's."""
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / "core").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 420}
    assert big == {}
