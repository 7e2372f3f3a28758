"""Code size: the longest functions of some folders and the lines of some modules.

    python benchmarks/code_size.py [--top N] [--folder oimnet/engine] [MODULE.py ...]

A function's length is its source lines (``end_lineno - lineno + 1``, the
decorators and docstring included), nested functions counted on their own
too. Module lines are physical lines (``wc -l``).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def function_lengths(path: Path) -> list[tuple[int, str]]:
    """(lines, "file:qualified name") of every function and method in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                out.append((child.end_lineno - child.lineno + 1, f"{path}:{name}"))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--top", type=int, default=5, help="how many of the longest functions to print")
    p.add_argument("--folder", action="append", default=None, help="folder whose functions are ranked")
    p.add_argument("modules", nargs="*", help="modules whose lines are printed")
    args = p.parse_args(argv)
    for folder in args.folder or ["oimnet/engine"]:
        lengths = sorted((x for f in sorted(Path(folder).rglob("*.py")) for x in function_lengths(f)), reverse=True)
        print(f"longest functions in {folder}/ ({len(lengths)} functions):")
        for n, name in lengths[: args.top]:
            print(f"  {n:4d}  {name}")
    for m in args.modules:
        path = Path(m)
        n = len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0
        print(f"{n:5d} lines  {m}{'' if path.is_file() else ' (absent)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
