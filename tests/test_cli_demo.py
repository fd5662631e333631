"""The ``torchdr-sc demo`` command."""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import anndata as ad
import pytest

from torchdr_sc.cli import build_parser, main


def test_demo_writes_figure_data_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-iter", "30"]) == 0
    text = capsys.readouterr().out
    assert "pbmc68k_reduced, 700 cells" in text
    for method in ("umap", "tsne"):
        row = re.search(rf"tdr\.tl\.{method}\s+([\d.]+)\s+([\d.]+)", text)
        assert row is not None, text
        assert float(row.group(1)) > 0
        assert 0.3 < float(row.group(2)) <= 1.0
    png = out / "embeddings.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    back = ad.read_h5ad(out / "pbmc68k_reduced_tdr.h5ad")
    assert {"X_umap", "X_tsne"} <= set(back.obsm)


def test_parser_has_subcommands_and_rejects_unknown_methods(capsys):
    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert args.methods == ["umap", "tsne"]
    assert args.out == "torchdr_sc_demo"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--methods", "pca"])
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_points_to_main():
    scripts = entry_points(group="console_scripts")
    (script,) = [ep for ep in scripts if ep.name == "torchdr-sc"]
    assert script.value == "torchdr_sc.cli:main"
    assert script.load() is main
