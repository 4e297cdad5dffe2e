"""The code's shape in figures: imports inside functions, file-level import
circles, the largest modules and functions (lines).

    python scripts/code_shape.py [PACKAGE ...]     # default: the apps, core and kvmweb
    python scripts/code_shape.py --check           # only the circles; exit 1 if there is one (make lint)

A circle counts every import a module runs, those inside functions too (such
an import only hides a circle); imports under ``if TYPE_CHECKING:`` never run
and are left out. Database migrations are left out of the sizes.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ["core", "hosts", "migrations_app", "maintenance", "dashboard", "kvmweb"]


def modules(packages: list[str]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted(Path(package).rglob("*.py")):
            if path.parent.name == "migrations":
                continue
            name = ".".join(path.with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The names an import statement may bring in, absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return groups


def main(packages: list[str], check: bool = False) -> int:
    found = modules(packages)

    def ours(name: str) -> str | None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in found:
                return ".".join(parts[:i])
        return None

    edges: dict[str, set[str]] = {m: set() for m in found}
    inside: list[tuple[bool, str]] = []
    functions: list[tuple[int, str]] = []

    def walk(node: ast.AST, in_function: bool, module: str, path: Path) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                functions.append((length, f"{path}:{child.lineno} {child.name}"))
                walk(child, True, module, path)
            elif isinstance(child, ast.Import | ast.ImportFrom):
                names = imported(child, module, path.name == "__init__.py")
                targets = {t for t in map(ours, names) if t and t != module}
                if in_function:
                    inside.append((bool(targets), f"{path}:{child.lineno} {ast.unparse(child)}"))
                edges[module] |= targets
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            else:
                walk(child, in_function, module, path)

    for module, path in found.items():
        walk(ast.parse(path.read_text()), False, module, path)

    groups = circles(edges)
    if check:
        for group in groups:
            print("import circle:", " <-> ".join(group))
        return 1 if groups else 0
    print(f"imports inside functions: {len(inside)} ({sum(own for own, _ in inside)} of the project's own modules)")
    for own, line in inside:
        print(f"  {'*' if own else ' '} {line}")
    print(f"file-level import circles: {len(groups)} groups, {sum(map(len, groups))} modules")
    for group in groups:
        print("   ", " <-> ".join(group))
    sizes = sorted(((len(p.read_text().splitlines()), str(p)) for p in found.values()), reverse=True)
    print("largest modules (lines):")
    for lines, path in sizes[:10]:
        print(f"  {lines:5d} {path}")
    print("largest functions (lines):")
    for lines, where in sorted(functions, reverse=True)[:10]:
        print(f"  {lines:5d} {where}")
    return 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--check"]
    sys.exit(main(args or PACKAGES, check="--check" in sys.argv[1:]))
