"""The import graph of intentkit/ and trainers/: no cycles and none of the forbidden arrows.

Every import counts: module-level, function-level and those under ``if TYPE_CHECKING:`` (they
never run, but a type that needs the other module is a dependency all the same)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("intentkit", "trainers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules ``module`` imports anywhere in its code."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def resolve(name: str) -> str | None:  # the longest known module ``name`` starts with
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if (target := resolve(alias.name)) is not None:
                        found.add(target)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                for alias in child.names:  # ``from pkg import submodule`` is an arrow to the submodule
                    target = resolve(f"{prefix}.{alias.name}") if f"{prefix}.{alias.name}" in known else resolve(prefix)
                    if target is not None:
                        found.add(target)
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    known = set(files)
    return {
        name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", known)
        for name, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


# (importer, imported): the first may never import the second, directly or at function level.
FORBIDDEN = [
    ("intentkit", "intentkit.server"),
    ("intentkit", "intentkit.cli"),
    ("intentkit", "trainers"),
    ("intentkit.backends", "intentkit.server"),
    ("intentkit.backends", "intentkit.cli"),
    ("intentkit.backends", "trainers"),
    ("intentkit.router", "intentkit.demo"),
    ("intentkit.router", "intentkit.backends.llamacpp"),
    ("intentkit.text", "numpy"),
]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_checker_sees_function_level_and_type_checking_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from .b import x\nif TYPE_CHECKING:\n    from .c import y\n")
    assert _imports(tree, "p.a", False, {"p.a", "p.b", "p.c"}) == {"p.b", "p.c"}


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN, ids=[f"{a}->{b}" for a, b in FORBIDDEN])
def test_forbidden_arrows(importer: str, imported: str) -> None:
    graph = import_graph()
    if imported == "numpy":  # a third-party package: read the module's own imports
        tree = ast.parse((ROOT / (importer.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(_within(n, "numpy") for n in names)
        return
    # The root package's own modules are everything under intentkit/ except server/, cli and
    # trainers-facing code; a rule on a package covers every module in it.
    exempt = ("intentkit.server", "intentkit.cli") if importer == "intentkit" else ()
    offenders = sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        if _within(source, importer) and not any(_within(source, e) for e in exempt)
        for target in targets
        if _within(target, imported)
    )
    assert offenders == []


def test_trainers_borrow_only_shared_helpers_from_backends() -> None:
    """trainers/ may use a backend's public API (export through llama.cpp, fitting a detector
    through a backend), never a private module of one."""
    graph = import_graph()
    private = sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        if _within(source, "trainers")
        for target in targets
        if any(part.startswith("_") for part in target.split("."))
    )
    assert private == []
