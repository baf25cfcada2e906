"""The layering of the project's packages, read statically from their source (ast, nothing is
imported): imports point one way between the packages (DESIGN.md: steadycast, benchmarks,
encoder | relay, monitor, uplink, top to bottom; encoder and relay never import each other),
and no module imports itself back through others, inside a package too.

Every import counts wherever it is written: at module level, inside a function, or under
``if TYPE_CHECKING``. ``from pkg import name`` is an import of ``pkg.name`` when that is a
module, else of ``pkg``. Importing ``a.b`` is not counted as importing ``a``'s ``__init__``
(Python runs it first, but a package that imports its own modules is no cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ALLOWED_IMPORTS = {
    "uplink": set(),
    "monitor": {"uplink"},
    "relay": {"monitor", "probe", "uplink"},
    "encoder": {"monitor", "uplink"},
    "probe": {"encoder", "monitor", "uplink"},  # the connection check (client and cores)
    "linklab": set(),  # the link lab: traces, outages, the link model, the emulator
    "harness": set(),  # what tests and benchmarks start: nginx platform, relay process, ports
    "benchmarks": {"linklab", "harness", "encoder", "relay", "monitor", "uplink"},
    "steadycast": {"benchmarks", "linklab", "harness", "probe", "encoder", "relay", "monitor",
                   "uplink"},
}


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the given package folders."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _owner(name: str, modules: Mapping[str, Path]) -> str | None:
    """The project module an import of ``name`` runs: the longest dotted prefix that is one."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (see the module docstring for what counts)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_owner(alias.name, modules) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package[:len(package) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    submodule = f"{base}.{alias.name}" if base else alias.name
                    targets.add(submodule if submodule in modules else _owner(base, modules))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


GRAPH = import_graph(project_modules(ROOT, ALLOWED_IMPORTS))


@pytest.mark.parametrize("package", sorted(ALLOWED_IMPORTS))
def test_imports_point_one_way(package: str) -> None:
    for module, targets in GRAPH.items():
        if module.split(".")[0] != package:
            continue
        for target in sorted(targets):
            top = target.split(".")[0]
            assert top == package or top in ALLOWED_IMPORTS[package], \
                f"{module} imports {target}"


def test_no_import_cycles_anywhere() -> None:
    assert import_cycles(GRAPH) == []


def test_the_cycle_check_sees_function_level_relative_and_type_checking_imports(
        tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "from pkg import a, b\n",  # a package importing its modules: fine
        "pkg/a.py": "def f():\n    from pkg.b import g\n    return g\n",
        "pkg/b.py": "from . import a\n\ndef g():\n    return a\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n",
        "pkg/d.py": "from pkg import c\n",
        "pkg/e.py": "import pkg.sub.f\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/f.py": "from ..e import x\n",
        "pkg/g.py": "from pkg import a\n",  # imports into a cycle, is not part of it
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    graph = import_graph(project_modules(tmp_path, ["pkg"]))
    assert graph["pkg"] == {"pkg.a", "pkg.b"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"],
                                    ["pkg.e", "pkg.sub.f"]]
