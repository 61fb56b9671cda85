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
        engine = {dep for dep in graph[name] if dep.split(".")[:2] == ["archiver", "engine"]}
        assert not engine, (name, engine)
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


#: docs/architecture.md's measures. The CLI (one command per function, by design) and the
#: simulator (a stand-in for the API) are exempt from the module size only / from all.
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80
LARGE_MODULES_ALLOWED = {"archiver.cli"}


def _own_modules(include_simulator: bool) -> dict[str, Path]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: path
        for name, path in modules.items()
        if include_simulator or not name.startswith("archiver.simulator")
    }


def test_no_module_is_longer_than_700_lines() -> None:
    """Each module does one job; the CLI and the simulator are the exceptions."""
    long = {
        name: len(path.read_text().splitlines())
        for name, path in _own_modules(include_simulator=False).items()
        if len(path.read_text().splitlines()) > MAX_MODULE_LINES
    }
    assert set(long) <= LARGE_MODULES_ALLOWED, long


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than ``limit`` lines."""
    return [
        (node.name, node.end_lineno - node.lineno + 1)  # type: ignore[operator]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > limit  # type: ignore[operator]
    ]


def test_no_function_outside_the_simulator_is_longer_than_80_lines() -> None:
    """Long functions hide decisions; the limit holds everywhere but the simulator."""
    found = {
        name: long
        for name, path in _own_modules(include_simulator=False).items()
        if (long := long_functions(path.read_text(), MAX_FUNCTION_LINES))
    }
    assert found == {}


def test_the_function_length_check_can_fail() -> None:
    """A 90-line function is reported; an 80-line one is not."""
    body = "\n".join(f"    x{i} = {i}" for i in range(89))
    assert long_functions(f"def f():\n{body}\n", 80) == [("f", 90)]
    assert long_functions("def g():\n" + "\n".join(["    pass"] * 79) + "\n", 80) == []


def test_mccabe_complexity_is_at_most_12_outside_the_simulator() -> None:
    """ruff's C901, configured in pyproject.toml (the simulator excepted), passes."""
    import subprocess
    import sys

    root = PACKAGE.parent
    done = subprocess.run(  # ruff is a test dependency
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--select",
            "C901",
            "--output-format",
            "concise",
            ".",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = (root / "pyproject.toml").read_text()
    assert "max-complexity = 12" in config and '"archiver/simulator/*" = ["C901"]' in config
