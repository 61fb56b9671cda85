"""The package's structure: imports run one way, without cycles, and every error the
archiver raises on purpose derives from the one base class."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import archiver
from archiver import exceptions

PACKAGE = Path(archiver.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The archiver modules a module imports at run time (lazy imports in functions
    included; imports under ``if TYPE_CHECKING:`` left out)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "archiver" and not node.module.startswith("archiver."):
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("archiver."))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    names = set(modules)
    return {name: runtime_imports(path, names) & names for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the graph, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_of_archiver_has_no_cycles() -> None:
    """No archiver module imports, directly or through others, a module that imports it."""
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a graph with a cycle is reported."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_storage_and_reading_never_import_the_engine_or_the_cli() -> None:
    """Data flows one way: the engine uses storage; storage, reports and metrics never
    import the engine, and nothing but the entry points imports the CLI."""
    graph = import_graph()
    readers = [n for n in graph if n.startswith("archiver.store")]
    assert len(readers) > 8  # the store package was found
    for name in [*readers, "archiver.report", "archiver.metrics"]:
        assert "archiver.engine" not in graph[name], name
    importers_of_cli = {name for name, deps in graph.items() if "archiver.cli" in deps}
    assert importers_of_cli <= {"archiver.__main__"}


def test_every_archiver_error_derives_from_the_one_base_class() -> None:
    """Each exception class the archiver defines is an ArchiverError."""
    own = [
        obj
        for _, obj in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == exceptions.__name__
    ]
    assert len(own) > 10
    assert all(issubclass(cls, exceptions.ArchiverError) for cls in own)
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base) in ("Exception", "BaseException") for base in node.bases
            ):
                name = f"{module_name(path)}.{node.name}"
                allowed = {"archiver.exceptions.ArchiverError"}
                # The simulator is a stand-in for the API, not the archiver.
                assert name in allowed or name.startswith("archiver.simulator"), name
