"""The API reference (docs/api/*.rst) lists every public name; no Sphinx run needed.

A name counts as documented when an ``autosummary`` block of the reference lists it, under
the package that exports it or, for a re-export, under the top-level facade (``tdr.UMAP`` is
documented once, as ``torchdr_sc.UMAP``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "docs" / "api"

#: Public seams whose ``__all__`` the reference must cover.
SEAMS = (
    "torchdr_sc",
    "torchdr_sc.tl",
    "torchdr_sc.pp",
    "torchdr_sc.knn",
    "torchdr_sc.affinity",
    "torchdr_sc.estimators",
)


def documented_names() -> set[str]:
    """Fully qualified names listed by the autosummary blocks and module directives."""
    names: set[str] = set()
    for path in sorted(API.glob("*.rst")):
        module = ""
        in_block = False
        for line in path.read_text().splitlines():
            if m := re.match(r"\.\. (?:currentmodule|automodule|module):: (\S+)", line):
                module = m.group(1)
                names.add(module)
                in_block = False
            elif line.startswith(".. autosummary::"):
                in_block = True
            elif in_block and re.match(r"   [A-Za-z_][\w.]*$", line):
                names.add(f"{module}.{line.strip()}" if module else line.strip())
            elif in_block and line and not line.startswith(" "):
                in_block = False
    return names


def public_names() -> list[tuple[str, str]]:
    return [
        (seam, name)
        for seam in SEAMS
        for name in importlib.import_module(seam).__all__
        if name != "__version__"
    ]


def test_the_reference_exists():
    assert (API / "index.rst").is_file()
    assert documented_names(), "no autosummary entries found in docs/api"


@pytest.mark.parametrize(("seam", "name"), public_names())
def test_every_public_name_is_in_the_reference(seam, name):
    documented = documented_names()
    candidates = {f"{seam}.{name}", f"torchdr_sc.{name}"}
    obj = getattr(importlib.import_module(seam), name)
    if getattr(obj, "__name__", None) == f"torchdr_sc.{name}":  # a subpackage (tl, pp)
        candidates.add(obj.__name__)
    assert candidates & documented, (
        f"{seam}.{name} is public ({seam}.__all__) but no autosummary entry of docs/api/*.rst "
        f"lists it: add it to the page of its package"
    )


def test_the_version_is_shown():
    conf = (API.parent / "conf.py").read_text()
    assert "torchdr_sc.__version__" in conf


def test_the_cli_reference_renders_the_parser():
    text = (API / "cli.rst").read_text()
    assert ".. argparse::" in text
    assert ":func: build_parser" in text
    from torchdr_sc.cli.main import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "embed", "ingest"} <= set(commands)
