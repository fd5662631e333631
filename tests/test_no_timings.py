"""No docstring or comment in ``src/`` quotes a timing, a speed-up or a memory figure.

A figure in a docstring goes stale the day the code under it changes, and it carries neither
the machine nor the command it came from. Measurements live in ``benchmarks/`` (the section
"Measurements behind the code's choices" of ``benchmarks/README.md`` keeps the ones that
decided a constant) and in the documentation's benchmarks page.

The check reads every comment (:mod:`tokenize`) and every string statement (docstrings of
modules, classes and functions, and the attribute docstrings after an assignment) of every
module, and looks for a number followed by a unit of time or of memory (kB ... TB, KiB ...
TiB), or by "x faster / slower".
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "torchdr_sc"

_NUMBER = r"(?<![\w.])~?\d+(?:,\d{3})*(?:\.\d+)?"
TIMING = re.compile(
    _NUMBER + r"\s*(?:ms|s|sec|secs|seconds?|minutes?|mins?|h|hours?|µs|us)(?![\w/])"
    r"|" + _NUMBER + r"\s*(?:[kMGT]i?B)\b"
    r"|\b\d+(?:\.\d+)?\s*x\s+(?:faster|slower)\b"
    r"|\b(?:faster|slower)\s+(?:by|than)\s+\d",
    re.IGNORECASE,
)


def prose(source: str) -> list[tuple[int, str]]:
    """Every comment and every string statement of a module, as ``(line, text)`` pairs."""
    found = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            lines = node.value.value.splitlines()
            found += [(node.lineno + i, line) for i, line in enumerate(lines)]
    return found


def timings(path: Path) -> list[str]:
    """The lines of ``path``'s comments and docstrings that quote a timing."""
    rel = path.relative_to(SRC.parents[1])
    return [
        f"{rel}:{line}: {text.strip()}"
        for line, text in prose(path.read_text())
        if TIMING.search(text)
    ]


@pytest.mark.parametrize(
    "text",
    [
        "# the pair terms take ~100 ms per epoch",
        '"""Builds once per machine (~20 s on 2 cores)."""',
        "# 200k x 15 x 50: 0.57 -> 0.42 s",
        '"""2-2.5x faster per iteration than the eager path."""',
        "#: UMAP of 1,000,000 cells in 78.7 seconds",
        '"""It is faster than 3 of the peers."""',
        "# the sort held 2.4 GB at its peak",
        '"""Blocks of 256 MiB on CPU."""',
    ],
)
def test_the_check_finds_a_quoted_timing(text):
    assert TIMING.search(prose(text)[0][1])


@pytest.mark.parametrize(
    "text",
    [
        '"""``max(1, min(torch.get_num_threads(), usable cores))``."""',
        '"""``4 * scale * sum_j P_ij (z_i - z_j)``; rate ``R`` in ``[0, S]``."""',
        "# 500 epochs below 10,000 samples and 200 above",
        '"""Least seconds between two measurements."""',
    ],
)
def test_the_check_leaves_ordinary_prose_alone(text):
    assert not TIMING.search(prose(text)[0][1])


def test_no_docstring_or_comment_in_src_quotes_a_timing():
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in timings(path)]
    assert not found, "timings belong in benchmarks/README.md:\n" + "\n".join(found)
