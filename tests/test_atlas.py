"""``torchdr-sc embed`` (run as ``python -m torchdr_sc.cli embed``): end to end and errors."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

ad = pytest.importorskip("anndata")
sc = pytest.importorskip("scanpy")

from torchdr_sc.cli import main  # noqa: E402
from torchdr_sc.quality import knn_label_accuracy  # noqa: E402

FAST = ["--max-iter", "100", "--device", "cpu"]


def sha256(path: Path) -> str:
    """Digest of a file, or of every file of a folder (zarr store) in order."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the command in a new process, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torchdr_sc.cli", "embed", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def pbmc_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "pbmc.h5ad"
    sc.datasets.pbmc68k_reduced().write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def runs(pbmc_file, tmp_path_factory):
    """The same UMAP job with --nproc 1 and --nproc 2 (new processes), and the input digest."""
    out = tmp_path_factory.mktemp("out")
    before = sha256(pbmc_file)
    done = {}
    for nproc in (1, 2):
        target = out / f"n{nproc}.h5ad"
        args = [str(pbmc_file), "--method", "umap", "--use-rep", "X_pca", "--out", str(target)]
        done[nproc] = (cli(*args, *FAST, "--save-affinity", "--nproc", str(nproc)), target)
    return done, before


@pytest.mark.parametrize("nproc", [1, 2])
def test_embed_end_to_end(runs, pbmc_file, nproc):
    done, before = runs
    proc, target = done[nproc]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256(pbmc_file) == before  # the input is byte-for-byte untouched
    out, src = ad.read_h5ad(target), ad.read_h5ad(pbmc_file)
    assert out.obsm["X_umap"].shape == (700, 2)
    assert out.obsm["X_umap"].dtype == np.float32
    params = out.uns["umap"]["params"]
    assert params["use_rep"] == "X_pca"
    assert params["maxiter"] == 100  # --max-iter, recorded under tl.umap's (scanpy's) name
    key = params["affinity_key"]
    assert out.obsp[key].shape == (700, 700)
    assert key in out.uns["tdr_affinities"]
    np.testing.assert_array_equal(out.X, src.X)
    np.testing.assert_array_equal(out.obsm["X_pca"], src.obsm["X_pca"])
    assert out.obs.equals(src.obs)
    assert proc.stdout.count("torchdr-sc embed: finished") == 1  # rank 0 only
    assert f"processes  {nproc} on cpu" in proc.stdout


def test_one_and_two_processes_write_the_same_keys_and_quality(runs, pbmc_file):
    done, _ = runs
    one, two = (ad.read_h5ad(done[n][1]) for n in (1, 2))
    for slot in ("obsm", "obsp", "uns", "layers", "varm", "varp"):
        assert sorted(getattr(one, slot).keys()) == sorted(getattr(two, slot).keys()), slot
    key = one.uns["umap"]["params"]["affinity_key"]
    assert abs(one.obsp[key] - two.obsp[key]).max() < 1e-6  # the whole P, not one rank's rows
    labels = ad.read_h5ad(pbmc_file).obs["bulk_labels"].cat.codes.to_numpy()
    acc_1 = knn_label_accuracy(one.obsm["X_umap"], labels)
    acc_2 = knn_label_accuracy(two.obsm["X_umap"], labels)
    print(f"pbmc68k_reduced 10-NN accuracy: --nproc 1 {acc_1:.4f}, --nproc 2 {acc_2:.4f}")
    assert abs(acc_1 - acc_2) <= 0.02


def test_in_process_run_matches_tl(pbmc_file, tmp_path, capsys):
    import torchdr_sc.tl as tl

    target = tmp_path / "o.h5ad"
    assert main(["embed", str(pbmc_file), "--method", "tsne", "--out", str(target), *FAST]) == 0
    out = ad.read_h5ad(target)
    ref = ad.read_h5ad(pbmc_file)
    tl.tsne(ref, max_iter=100, device="cpu", cache=False)
    np.testing.assert_allclose(out.obsm["X_tsne"], ref.obsm["X_tsne"], atol=1e-5)
    assert sorted(out.uns["tsne"]["params"]) == sorted(ref.uns["tsne"]["params"])
    assert "use_rep='X_pca'" in capsys.readouterr().out  # scanpy's rule picked X_pca


@pytest.mark.parametrize(("src_ext", "dst_ext"), [(".zarr", ".zarr"), (".h5ad", ".zarr")])
def test_zarr_input_and_output(pbmc_file, tmp_path, src_ext, dst_ext):
    source = tmp_path / f"in{src_ext}"
    if src_ext == ".zarr":
        ad.read_h5ad(pbmc_file).write_zarr(source)
    else:
        source.write_bytes(pbmc_file.read_bytes())
    before = sha256(source)
    target = tmp_path / f"out{dst_ext}"
    args = ["embed", str(source), "--method", "largevis", "--out", str(target), *FAST]
    assert main([*args, "--key-added", "lv", "--perplexity", "20"]) == 0
    assert sha256(source) == before
    out = ad.read_zarr(target)
    assert out.obsm["lv"].shape == (700, 2)
    assert out.uns["lv"]["params"]["perplexity"] == 20
    assert "X_umap" in out.obsm
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path_factory.mktemp("digits")
    paths = {}
    for kind in ("dense", "sparse"):
        x = d.data.astype(np.float32)
        adata = ad.AnnData(sp.csr_matrix(x) if kind == "sparse" else x)
        adata.obs["label"] = d.target.astype(str)
        paths[kind] = folder / f"{kind}.h5ad"
        adata.write_h5ad(paths[kind])
    return paths, d.data.astype(np.float32), d.target


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_x_is_streamed_from_disk(digits_files, tmp_path, kind, capsys):
    import torchdr_sc.tl as tl

    paths, X, y = digits_files
    target = tmp_path / "o.h5ad"
    args = ["embed", str(paths[kind]), "--use-rep", "X", "--out", str(target), "--save-affinity"]
    assert main([*args, "--max-iter", "200", "--device", "cpu"]) == 0
    assert "streaming X from disk" in capsys.readouterr().out
    out = ad.read_h5ad(target)
    ref = ad.AnnData(X)
    tl.umap(ref, use_rep="X", maxiter=200, device="cpu", cache=True)
    assert sorted(out.uns["umap"]["params"]) == sorted(ref.uns["umap"]["params"])
    assert (
        abs(knn_label_accuracy(out.obsm["X_umap"], y) - knn_label_accuracy(ref.obsm["X_umap"], y))
        <= 0.02
    )
    # the affinity stored from the streamed X is described as tl describes it: tl's cache
    # finds it (same key, same fingerprint of X)
    key = out.uns["umap"]["params"]["affinity_key"]
    assert list(out.uns["tdr_affinities"]) == list(ref.uns["tdr_affinities"]) == [key]
    got, want = out.uns["tdr_affinities"][key], ref.uns["tdr_affinities"][key]
    assert got["fingerprint"] == want["fingerprint"]
    assert got["source"] == want["source"] == "X"


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("small_blocks", [False, True])
def test_streamed_fingerprint_equals_the_layer_fingerprint(monkeypatch, sparse, small_blocks):
    from torchdr_sc.adata import representation

    if small_blocks:  # hashed in many row blocks
        monkeypatch.setattr(representation, "FULL_HASH_BYTES", 1000)
    x = np.random.default_rng(0).normal(size=(301, 7)).astype(np.float32)
    stored = sp.csr_matrix(x) if sparse else x
    assert representation.streamed_fingerprint(stored, 40) == representation.fingerprint(x)


# ---- refusing and failing --------------------------------------------------------------
def test_refuses_to_overwrite_unless_asked(pbmc_file, tmp_path, capsys):
    target = tmp_path / "o.h5ad"
    target.write_text("keep me")
    args = ["embed", str(pbmc_file), "--out", str(target), *FAST]
    assert main(args) == 2
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert target.read_text() == "keep me"
    assert main([*args, "--overwrite"]) == 0
    assert "X_umap" in ad.read_h5ad(target).obsm


def test_missing_input_exits_2_in_a_new_process(tmp_path):
    proc = cli(str(tmp_path / "nope.h5ad"), "--out", str(tmp_path / "o.h5ad"))
    assert proc.returncode == 2
    assert "torchdr-sc embed: error: INPUT" in proc.stderr
    assert "nope.h5ad' does not exist" in proc.stderr


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--method", "foo"], "unknown --method 'foo'; choose one of infotsne, largevis, tsne"),
        (["--use-rep", "X_scvi"], "`use_rep='X_scvi'` is not in adata.obsm (available: 'X_pca', "),
        (["--perplexity", "20"], "--perplexity does not apply to --method umap"),
        (["--n-neighbors", "1"], "`n_neighbors` must be"),
        (["--param", "foo=3"], "--param 'foo' is not a parameter of UMAP (valid: "),
        (["--param", "foo"], "--param must look like NAME=VALUE; got 'foo'"),
        (["--method", "tsnekhorn", "--nproc", "2"], "--method tsnekhorn does not shard its work"),
        (["--nproc", "0"], "--nproc must be at least 1; got 0"),
        (["--device", "tpu"], "--device must be auto, cpu or cuda; got 'tpu'"),
        (["--n-pcs", "80", "--use-rep", "X_pca"], "--n-pcs 80 is larger than the 50 columns"),
        (["--method", "tsne", "--perplexity", "700"], "perplexity (700) must be smaller"),
    ],
)
def test_bad_options_exit_2_with_a_message(pbmc_file, tmp_path, capsys, extra, match):
    target = tmp_path / "o.h5ad"
    assert main(["embed", str(pbmc_file), "--out", str(target), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchdr-sc embed: error: ")
    assert match in err
    assert not target.exists()


def test_corrupt_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"\x89HDF\r\n this is not really a file " * 20)
    assert main(["embed", str(bad), "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "cannot read INPUT" in capsys.readouterr().err


def test_an_hdf5_file_that_is_not_anndata_exits_2(tmp_path, capsys):
    import h5py

    other = tmp_path / "other.h5ad"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros(3)
    assert main(["embed", str(other), "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "is not an AnnData file (it has no 'obs' and 'var')" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "match"),
    [("in.csv", "INPUT"), ("out.txt", "OUTPUT")],
)
def test_wrong_suffix_exits_2(pbmc_file, tmp_path, capsys, name, match):
    source = tmp_path / name if match == "INPUT" else pbmc_file
    target = tmp_path / name if match == "OUTPUT" else tmp_path / "o.h5ad"
    source.touch()
    assert main(["embed", str(source), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{match} " in err
    assert "must end in .h5ad or .zarr" in err


def test_output_must_differ_from_input(pbmc_file, capsys):
    assert main(["embed", str(pbmc_file), "--out", str(pbmc_file), "--overwrite"]) == 2
    assert "OUTPUT must differ from INPUT" in capsys.readouterr().err


@pytest.fixture(scope="module")
def nan_file(pbmc_file, tmp_path_factory) -> Path:
    adata = ad.read_h5ad(pbmc_file)
    adata.obsm["X_pca"][[1, 5, 9], 0] = np.nan
    path = tmp_path_factory.mktemp("nan") / "nan.h5ad"
    adata.write_h5ad(path)
    return path


def test_a_failing_job_exits_1_and_writes_nothing(nan_file, tmp_path, capsys):
    target = tmp_path / "o.h5ad"
    assert main(["embed", str(nan_file), "--out", str(target), *FAST]) == 1
    assert "holds NaN or inf values in 3 of 700 rows" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_failing_distributed_job_names_the_rank(nan_file, tmp_path):
    target = tmp_path / "o.h5ad"
    proc = cli(str(nan_file), "--out", str(target), "--nproc", "2", *FAST, timeout=240)
    assert proc.returncode == 1
    # every rank fails here; the first to fail is reported (the others are stopped)
    assert re.search(r"torchdr-sc embed: error: rank [01] of 2 failed: ValueError", proc.stderr)
    assert "holds NaN or inf values in 3 of 700 rows" in proc.stderr
    assert list(tmp_path.iterdir()) == []
