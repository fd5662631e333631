"""``ARCHITECTURE.md`` cannot fall behind the code.

The page's module table must name every module of ``src/torchdr_sc`` and nothing that no
longer exists; its "Function length" section must list exactly the functions longer than 80
lines (docstring included), and no function may have more than 80 lines of code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "torchdr_sc"
PAGE = (ROOT / "ARCHITECTURE.md").read_text()
LIMIT = 80


def table_modules(text: str) -> set[str]:
    """Module paths named in the first cell of the table's rows.

    A cell may name several modules of one folder: ``atlas/_job.py``, ``_io.py`` - a name
    without a folder belongs to the folder named before it in the same cell.
    """
    named = set()
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if "/" in token:
                folder, _, token = token.rpartition("/")
                folder += "/"
            named.add(folder + token)
    return named


def source_modules() -> set[str]:
    return {str(path.relative_to(SRC)) for path in SRC.rglob("*.py")}


def _lengths(path: Path):
    """``(qualified name, lines, lines of code)`` of every function of a module."""
    module = ".".join(path.relative_to(SRC).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            total = node.end_lineno - node.lineno + 1
            first = node.body[0]
            docstring = (
                first.end_lineno - first.lineno + 1
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                else 0
            )
            yield f"{module}.{node.name}", total, total - docstring


def test_every_module_has_a_row_and_every_row_a_module():
    named, actual = table_modules(PAGE), source_modules()
    assert not actual - named, f"modules without a row in ARCHITECTURE.md: {sorted(actual - named)}"
    assert not named - actual, f"rows naming no module: {sorted(named - actual)}"


def test_the_check_sees_a_module_added_without_a_row():
    row = "| `knn/graph.py`, `registry.py` | ... |"
    assert table_modules(row) == {"knn/graph.py", "knn/registry.py"}
    assert "knn/new_backend.py" not in table_modules(PAGE)


def test_no_function_has_more_than_80_lines_of_code():
    long = [
        (name, code)
        for path in sorted(SRC.rglob("*.py"))
        for name, _, code in _lengths(path)
        if code > LIMIT
    ]
    assert not long, long


def test_the_long_functions_listed_are_the_long_functions():
    section = PAGE[PAGE.index("## Function length") :]
    listed = set(re.findall(r"`([\w.]+\.\w+)`", section.split("\n\n")[1]))
    actual = {
        name
        for path in sorted(SRC.rglob("*.py"))
        for name, total, _ in _lengths(path)
        if total > LIMIT
    }
    assert listed == actual, f"listed {sorted(listed)}, actual {sorted(actual)}"
