"""The largest modules (lines) and functions (lines from `def` to the last line of the body) of
src/beyondbp, to check the house limits (~450 lines a module, ~60 a function).

    python benchmarks/code_size.py [--top 5]
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "beyondbp"
MODULE_LIMIT, FUNCTION_LIMIT = 450, 60


def sizes(package: Path = PACKAGE) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """([(lines, module)], [(lines, module:function)]), largest first."""
    modules, functions = [], []
    for path in sorted(package.rglob("*.py")):
        name = str(path.relative_to(package))
        text = path.read_text(encoding="utf-8")
        modules.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    modules, functions = sizes()
    for title, rows, limit in (("modules", modules, MODULE_LIMIT), ("functions", functions, FUNCTION_LIMIT)):
        over = [r for r in rows if r[0] > limit]
        print(f"largest {title} (limit ~{limit} lines; {len(over)} over):")
        for lines, name in rows[:max(args.top, len(over))]:
            print(f"  {lines:5d}  {name}{'  OVER' if lines > limit else ''}")


if __name__ == "__main__":
    main()
