"""The floors of docs/architecture.md hold: no import cycles, and no import from a floor to a higher one.

The floors are read from the tables in docs/architecture.md, so the document and this test cannot
drift apart. Every import counts, function-local ones too; only imports under ``if TYPE_CHECKING:``
are skipped (they never run). ``from P import N`` is an import of the module P.N when P.N is a
module, else of P; the implicit import of a module's own parent packages is not counted.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {pkg: ROOT / folder for pkg, folder in config["tool"]["setuptools"]["package-dir"].items()}


def package_files(package: str, folder: Path) -> list[Path]:
    """The Python files of one package-dir entry. The root package ("fmmforge" = ".") is only its
    __init__.py: its subfolders are the other packages (or not packaged: tests/, benchmarks/)."""
    return [folder / "__init__.py"] if package == "fmmforge" else sorted(folder.rglob("*.py"))


def modules() -> dict[str, Path]:
    """Every fmmforge module, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in package_dirs().items():
        for path in package_files(package, folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {t for t in out if t in known and t != name and t not in parents}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def floor_table() -> list[tuple[int, str, list[str]]]:
    """(number, name, module patterns) from the floors table of docs/architecture.md."""
    rows = []
    for line in ARCHITECTURE.read_text().splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", line)
        if m:
            patterns = [p.strip().strip("`") for p in m.group(3).split(",") if p.strip()]
            rows.append((int(m.group(1)), m.group(2), patterns))
    return rows


def sideways_rules() -> dict[str, set[str]]:
    """Within floor 3: which subsystem may import which other (the 'may also import' table)."""
    rules: dict[str, set[str]] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        m = re.match(r"^\|\s*`(fmmforge\.[\w.]+)`\s*\|\s*([^|]*?)\s*\|\s*$", line)
        if m:
            rules[m.group(1)] = {p.strip().strip("`") for p in m.group(2).split(",") if p.strip() not in ("", "nothing")}
    return rules


def floor_of(module: str, table: list[tuple[int, str, list[str]]]) -> int | None:
    """The floor whose most specific pattern matches (fmmforge.core.search.* beats fmmforge.core.*)."""
    best: tuple[int, int] | None = None
    for number, _name, patterns in table:
        for pattern in patterns:
            if fnmatch.fnmatchcase(module, pattern):
                specificity = len(pattern.replace("*", ""))
                if best is None or specificity > best[0]:
                    best = (specificity, number)
    return None if best is None else best[1]


def subsystem_of(module: str, rules: dict[str, set[str]]) -> str | None:
    matches = [s for s in rules if module == s or module.startswith(s + ".")]
    return max(matches, key=len) if matches else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_floor_table_is_there_and_names_five_floors():
    table = floor_table()
    assert [number for number, _, _ in table] == [1, 2, 3, 4, 5]
    assert sideways_rules(), "docs/architecture.md lost its 'may also import' table"


def test_the_root_package_is_only_its_init_and_on_the_application_floor():
    found = modules()
    assert found["fmmforge"] == ROOT / "__init__.py"
    assert not [m for m in found if m.startswith(("fmmforge.tests", "fmmforge.benchmarks"))]
    assert floor_of("fmmforge", floor_table()) == 5


def test_every_module_has_a_floor():
    table = floor_table()
    assert [m for m in sorted(modules()) if floor_of(m, table) is None] == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_import_goes_up_a_floor():
    table = floor_table()
    upward = [
        f"{src} (floor {floor_of(src, table)}) imports {dst} (floor {floor_of(dst, table)})"
        for src, targets in sorted(import_graph().items())
        for dst in sorted(targets)
        if (floor_of(dst, table) or 0) > (floor_of(src, table) or 0)
    ]
    assert upward == []


def test_subsystems_import_only_the_subsystems_they_may():
    table, rules = floor_table(), sideways_rules()
    bad = []
    for src, targets in sorted(import_graph().items()):
        if floor_of(src, table) != 3:
            continue
        mine = subsystem_of(src, rules)
        for dst in sorted(targets):
            theirs = subsystem_of(dst, rules)
            if floor_of(dst, table) == 3 and theirs != mine and theirs not in rules.get(mine or "", set()):
                bad.append(f"{src} imports {dst}")
    assert bad == []


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    """The checks above are only worth something if they can fail."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    table = [(1, "low", ["fmmforge.core.*"]), (3, "sub", ["fmmforge.core.search.*"])]
    assert floor_of("fmmforge.core.search.engine", table) == 3
    assert floor_of("fmmforge.core.store", table) == 1
    known = {"fmmforge.core.a": Path("a.py"), "fmmforge.core.b": Path("b.py")}
    probe = tmp_path / "a.py"
    probe.write_text("def f():\n    from fmmforge.core import b\n")
    assert imports_of("fmmforge.core.a", probe, known) == {"fmmforge.core.b"}
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fmmforge.core import b\n")
    assert imports_of("fmmforge.core.a", probe, known) == set()


@pytest.mark.parametrize("module", ["fmmforge.core.decomposition", "fmmforge.core.store", "fmmforge.core.search.engine"])
def test_low_floors_do_not_load_torch_or_the_terminal(module):
    """The model and the search engine import without torch, rich or typer (checked in a fresh process)."""
    import subprocess

    code = (f"import sys, {module}; bad = [m for m in ('torch', 'rich', 'typer', 'fmmforge.plugins') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_modules_named_by_string_keep_the_floors():
    """Modules loaded by name, which the import graph above cannot see, keep the floors too: a
    layout's emitter and runtime are codegen's (codegen/layouts.py), the plugin floor's built-in
    plugins are on it, and the command modules are the application's, which loads them itself."""
    from fmmforge.codegen.layouts import LAYOUTS
    from fmmforge.plugins.manager import BUILTIN_PLUGINS, COMMAND_KIND

    table, known = floor_table(), modules()
    for layout in LAYOUTS:
        for module in (layout.emitter.split(":")[0], f"fmmforge.codegen.runtime.{layout.runtime}"):
            assert module in known and floor_of(module, table) == floor_of("fmmforge.codegen.layouts", table), module
    for builtin in BUILTIN_PLUGINS:
        assert builtin.module in known, builtin.module
        floor = 5 if builtin.kind == COMMAND_KIND else 4
        assert floor_of(builtin.module, table) == floor, builtin
