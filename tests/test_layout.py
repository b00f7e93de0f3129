"""The source tree as docs/DESIGN.md describes it: every module in the files-and-owners table, none over
400 lines, and imports that go one way (no module, and no package, imports one that imports it back)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "mkosi_initrd"
DESIGN = SRC.parent / "docs/DESIGN.md"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted name → file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules `path` imports when it runs (type-checking-only imports are not imports)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Name)
                and child.test.id == "TYPE_CHECKING"
            ):
                continue
            if (
                isinstance(child, ast.ImportFrom)
                and child.module
                and child.module.startswith("mkosi_initrd")
            ):
                for alias in child.names:
                    submodule = f"{child.module}.{alias.name}"
                    found.add(submodule if submodule in known else child.module)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("mkosi_initrd"))
            visit(child)

    visit(ast.parse(path.read_text()))
    return found & known


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first walk (each reported from where it closes)."""
    out: list[list[str]] = []
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            out.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            walk(nxt, [*path, node])
        done.add(node)

    for node in sorted(graph):
        walk(node, [])
    return out


def module_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = module_graph()
    assert sum(len(v) for v in graph.values()) > 100  # the imports were found
    assert cycles(graph) == []


def test_no_package_imports_one_that_imports_it_back() -> None:
    packages: dict[str, set[str]] = {}
    for module, deps in module_graph().items():
        for dep in deps:
            if package_of(dep) not in (package_of(module), "mkosi_initrd"):  # __version__
                packages.setdefault(package_of(module), set()).add(package_of(dep))
    assert "mkosi_initrd.planner" in packages and cycles(packages) == []


def test_the_circle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_module_is_over_400_lines() -> None:
    lengths = {
        p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in modules().values()
    }
    assert max(lengths.values()) > 100
    assert {p: n for p, n in lengths.items() if n > MAX_LINES} == {}


def test_design_lists_every_module_and_only_modules_that_exist() -> None:
    text = DESIGN.read_text()
    table = text.split("## Files and owners", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w/]+\.py)`", table, re.M))
    tree = {p.relative_to(PACKAGE).as_posix() for p in modules().values() if p.name != "__init__.py"}
    assert len(tree) > 40
    assert sorted(tree - listed) == [], "add these to docs/DESIGN.md's table"
    assert sorted(listed - tree) == [], "docs/DESIGN.md lists files that do not exist"
