"""The media path reads in short pieces: no function or method in ``sfu/`` is longer than 60
lines (decorators and docstring included), so that each decision can be read, and tested, whole."""

from __future__ import annotations

import ast
from pathlib import Path

SFU = Path(__file__).resolve().parents[2] / "sfu"
LIMIT = 60


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int]]:
    """(name, lines) of every function in ``source`` longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > limit:
                found.append((node.name, length))
    return found


def test_no_function_in_the_sfu_is_longer_than_60_lines() -> None:
    found = {path.name: long for path in sorted(SFU.glob("*.py")) if (long := long_functions(path.read_text()))}
    assert found == {}


def test_the_measure_counts_a_function_from_its_decorators_to_its_last_line() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    assert long_functions(f"@decorated\ndef f():\n{body}\n") == []  # 60 lines: at the limit
    assert long_functions(f"@decorated\ndef f():\n{body}\n    return 1\n") == [("f", 61)]
    assert long_functions(f"class C:\n    async def m(self):\n{body}\n        pass\n".replace("\n    x", "\n        x")) == []
