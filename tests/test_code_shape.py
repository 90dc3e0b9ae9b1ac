"""Readable functions, enforced: no function in the package runs over MAX_LINES lines unless the
line that defines it says why, in a comment that starts with ``# long:``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adaptflow"
MAX_LINES = 60


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1
            if length > limit and "# long:" not in lines[node.lineno - 1]:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_the_limit_without_a_reason():
    too_long = long_functions()
    assert not too_long, "split these, or say why beside the def with '# long: ...':\n" + "\n".join(too_long)


def test_the_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n\n\ndef g():  # long: a table\n{body}\n")
    assert long_functions(tmp_path) == [f"{tmp_path.name}/m.py:1 f ({MAX_LINES + 1} lines)"]
