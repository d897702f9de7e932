"""The package's import graph, read from the source (module-level and function-level imports
alike): arrows point down and never come round.

nodes -> msg_convert -> core; inside core, offline/policy/serving -> model/data; nothing imports
a command but the dispatcher (cli.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "adaspring_ros"


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__) for every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, anywhere in its body. ``from X
    import y`` counts X.y when it is a module of the package, else X (relative imports are
    resolved; an import of a package counts as an import of its __init__)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as [a, b, ..., a], or None if it has none."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


GRAPH = import_graph(REPO / PACKAGE)


def _edges(source_prefix: str, target_prefixes: tuple[str, ...]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, deps in GRAPH.items() if _under(a, source_prefix)
                  for b in deps if any(_under(b, t) for t in target_prefixes))


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_sees_the_package():
    assert len(GRAPH) > 40
    assert "adaspring_ros.core.model.config" in GRAPH["adaspring_ros.core.model.supernet"]


def test_a_planted_cycle_is_found_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from ..high import b\n    return b\n")
    (pkg / "high.py").write_text("from pkg.low.a import f\n")
    graph = import_graph(pkg)
    assert graph["pkg.low.a"] == {"pkg.high"} and graph["pkg.high"] == {"pkg.low.a"}
    assert find_cycle(graph) in (["pkg.high", "pkg.low.a", "pkg.high"],
                                 ["pkg.low.a", "pkg.high", "pkg.low.a"])
    (pkg / "low" / "a.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_core_imports_nothing_of_the_package_outside_core():
    outside = [f"{a} -> {b}" for a, deps in GRAPH.items() if _under(a, f"{PACKAGE}.core")
               for b in deps if not _under(b, f"{PACKAGE}.core") and b != PACKAGE]
    assert not outside, outside


def test_nothing_in_core_imports_the_nodes():
    assert not _edges(f"{PACKAGE}.core", (f"{PACKAGE}.nodes",))


def test_model_and_data_never_import_the_rooms_above_them():
    above = tuple(f"{PACKAGE}.core.{room}" for room in ("offline", "policy", "serving"))
    for room in ("model", "data"):
        assert not _edges(f"{PACKAGE}.core.{room}", above), room


def test_only_the_dispatcher_imports_the_commands():
    users = {a for a, deps in GRAPH.items() for b in deps
             if _under(b, f"{PACKAGE}.commands") and not _under(a, f"{PACKAGE}.commands")}
    assert users <= {f"{PACKAGE}.cli"}, users
