"""The import graph of ``gateway`` points down only: no cycle, whatever the import's place.

Every ``import`` and ``from ... import`` in every module is counted, at the
top of a module or inside a function, so a cycle cannot hide in a
function-level import. The console script (``gateway.cli``) sits on top:
nothing else imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

ROOT = Path(gateway.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["gateway", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The gateway modules ``name`` imports (a submodule named in ``from x import y`` counts)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import sub`` imports the submodule; the package
            # counts only for names that are not submodules of it.
            subs = [f"{module}.{alias.name}" for alias in node.names]
            targets = [t for t in subs if t in known]
            if len(targets) < len(subs):
                targets.append(module)
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of module names, or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    # The checker itself: a cycle hidden in a function body is found.
    edges = {"gateway.a": {"gateway.b"}, "gateway.b": {"gateway.c"},
             "gateway.c": {"gateway.a"}}
    assert find_cycle(edges) == ["gateway.a", "gateway.b", "gateway.c", "gateway.a"]
    source = tmp_path / "b.py"
    source.write_text("def f():\n    from .a import x\n    return x\n", encoding="utf-8")
    assert _imports("gateway.b", source, {"gateway.a", "gateway.b"}) == {"gateway.a"}


def test_no_import_cycle_in_gateway() -> None:
    edges = graph()
    assert len(edges) > 40   # every module was read
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_nothing_below_the_console_script_imports_it() -> None:
    importers = sorted(name for name, targets in graph().items()
                       if not name.startswith("gateway.cli")
                       and any(t == "gateway.cli" or t.startswith("gateway.cli.")
                               for t in targets))
    assert importers == []


def test_only_the_directory_package_talks_ldap() -> None:
    # python-ldap is imported only by the LDAP boundary (and the DN checks of
    # settings and slapd, which parse DNs but open no connection).
    users = set()
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and
                     not node.level else [])
            if any(n == "ldap" or n.startswith("ldap.") for n in names):
                users.add(name)
    talking = {u for u in users if not u.startswith("gateway.directory")}
    assert talking <= {"gateway.settings", "gateway.slapd"}, talking


def test_no_module_names_held_as_strings_for_dispatch() -> None:
    # An import by name (importlib) is invisible to the graph above.
    offenders = sorted(name for name, path in _modules().items()
                       if "import_module(" in path.read_text(encoding="utf-8")
                       or "__import__(" in path.read_text(encoding="utf-8"))
    assert offenders == []
