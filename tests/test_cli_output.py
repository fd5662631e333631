"""The command line and its output file: a full disk, a missing folder, foreign inputs, an
unknown kNN graph key. Each gives one line on stderr, a non-zero exit and no file."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple

import numpy as np
import pytest
import scanpy as sc

import torchdr_sc.tl as tl
from torchdr_sc.atlas import _io
from torchdr_sc.cli import main

FAST = ["--max-iter", "20"]
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.h5ad"
    adata = sc.datasets.pbmc68k_reduced()
    sc.pp.neighbors(adata)
    adata.write_h5ad(path)
    return path


@pytest.fixture
def reference(tmp_path):
    """A reference with a UMAP embedding and a query (its last 100 cells), as files."""
    adata = sc.datasets.pbmc68k_reduced()
    ref, query = adata[:600].copy(), adata[600:].copy()
    sc.pp.neighbors(ref)
    tl.umap(ref, maxiter=30)
    paths = tmp_path / "ref.h5ad", tmp_path / "query.h5ad"
    ref.write_h5ad(paths[0])
    query.write_h5ad(paths[1])
    return paths


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _no_output(folder) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith((".o", "o"))]
    assert not leftovers


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_embed_on_a_full_disk_exits_1_with_one_line_and_no_file(
    source, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(_io, "_copy_and_add", _disk_full)
    target = tmp_path / "out.h5ad"
    assert main(["embed", str(source), "--out", str(target), *FAST]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "No space left on device" in line
    assert "nothing was written" in line
    _no_output(tmp_path)


def test_embed_with_too_little_free_space_stops_before_the_work(
    source, tmp_path, monkeypatch, capsys, no_search
):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    target = tmp_path / "out.h5ad"
    assert main(["embed", str(source), "--out", str(target), *FAST]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "not enough free space for OUTPUT" in line
    _no_output(tmp_path)


def test_embed_with_an_unknown_neighbors_key_is_an_error(source, tmp_path, capsys, no_search):
    target = tmp_path / "out.h5ad"
    code = main(["embed", str(source), "--out", str(target), "--neighbors-key", "nope", *FAST])
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert "--neighbors-key 'nope' is not in the uns" in line
    assert "'neighbors'" in line  # what the file holds
    assert not target.exists()


def test_ingest_on_a_full_disk_exits_1_with_one_line_and_no_file(
    reference, tmp_path, monkeypatch, capsys
):
    import anndata as ad

    ref, query = reference
    monkeypatch.setattr(ad.AnnData, "write_h5ad", _disk_full)
    out = tmp_path / "o.h5ad"
    code = main(
        [
            "ingest",
            str(query),
            "--reference",
            str(ref),
            "--out",
            str(out),
            "--embedding-method",
            "umap",
        ]
    )
    assert code == 1
    line = _one_line(capsys.readouterr().err)
    assert "could not write --out" in line
    assert "No space left on device" in line
    _no_output(tmp_path)


def test_ingest_checks_before_the_work(reference, tmp_path, capsys, monkeypatch):
    import torchdr_sc.tl as tl_module

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the inputs were checked")

    monkeypatch.setattr(tl_module, "ingest", no_work)
    ref, query = reference
    garbage = tmp_path / "garbage.h5ad"
    garbage.write_bytes(b"not an HDF5 file at all")
    cases = [
        (
            ["ingest", str(garbage), "--reference", str(ref), "--out", str(tmp_path / "o.h5ad")],
            "cannot read QUERY",
        ),
        (
            ["ingest", str(query), "--reference", str(garbage), "--out", str(tmp_path / "o.h5ad")],
            "cannot read --reference",
        ),
        (
            [
                "ingest",
                str(query),
                "--reference",
                str(ref),
                "--out",
                str(tmp_path / "missing" / "o.h5ad"),
            ],
            "does not exist",
        ),
        (
            [
                "ingest",
                str(query),
                "--reference",
                str(ref),
                "--out",
                str(tmp_path / "o.h5ad"),
                "--neighbors-key",
                "nope",
            ],
            "--neighbors-key 'nope' is not in the uns",
        ),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        line = _one_line(capsys.readouterr().err)
        assert expected in line, line
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    assert (
        main(
            [
                *cases[0][0][:1],
                str(query),
                "--reference",
                str(ref),
                "--out",
                str(tmp_path / "o.h5ad"),
            ]
        )
        == 1
    )
    assert "not enough free space for --out" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "o.h5ad").exists()


def test_free_space_estimate_counts_the_copy_and_the_new_elements(source):
    from torchdr_sc.atlas import estimated_output_bytes

    size = source.stat().st_size
    assert estimated_output_bytes(source, 0) > size
    assert estimated_output_bytes(source, 10**8) > size + 10**8
    assert np.isclose(estimated_output_bytes(None, 10**9), 1.1e9, rtol=0.05)
