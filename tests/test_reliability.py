"""Regression tests of the reliability issue: no silent wrong results, clear early errors.

Each test pins one numbered defect of the issue "Reliability: no silent wrong results, no
orphaned workers, no unreadable outputs" (items 1-9 and the fast part of 13; the signal
tests of items 10-12 are in ``test_atlas_signals.py``).
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import torch

import torchdr_sc as tdr
import torchdr_sc.tl as tl
from torchdr_sc.cli import main

UMAP_FAST = {"maxiter": 5, "device": "cpu"}
CPU = {"device": "cpu"}


# ---- 1. spectral init on degenerate data ------------------------------------------------
def _umap_scale(x: np.ndarray) -> float:
    adata = ad.AnnData(x.astype(np.float32))
    tl.umap(adata, maxiter=200, random_state=0, **CPU)
    z = adata.obsm["X_umap"]
    assert np.isfinite(z).all()
    return float(np.abs(z).max())


@pytest.mark.parametrize("case", ["identical", "90% duplicates"])
def test_spectral_umap_on_duplicated_rows_keeps_a_sane_scale(case):
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(300, 10))
    x = np.ones((300, 10)) if case == "identical" else normal.copy()
    x[:270] = x[0]
    # was 2,241 (identical rows) and 6,254 (90 % duplicates) against ~5 on normal data
    assert _umap_scale(x) <= 10 * _umap_scale(normal)


def test_pca_init_of_identical_rows_is_not_a_single_point():
    """All rows equal: PCA has no axis; the init falls back to random, not to all zeros."""
    adata = ad.AnnData(np.ones((200, 5), np.float32))
    tl.umap(adata, init_pos="pca", maxiter=50, random_state=0, **CPU)
    assert adata.obsm["X_umap"].std(0).min() > 0.1


# ---- 2. NaN never written ----------------------------------------------------------------
def test_init_pos_with_nan_is_an_error_naming_init_pos(untouched, no_search):
    init = np.full((untouched.n_obs, 2), np.nan)
    with pytest.raises(ValueError, match=r"`init_pos` holds NaN or inf values in 700 of 700 rows"):
        tl.umap(untouched, init_pos=init, **UMAP_FAST)


def test_estimator_init_with_inf_is_an_error_naming_init(blobs):
    x, _ = blobs
    init = np.zeros((x.shape[0], 2))
    init[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"`init` holds NaN or inf values in 1 of 300 rows"):
        tdr.UMAP(init=init, max_iter=5, **CPU).fit_transform(x)


def test_init_array_of_the_wrong_shape_is_an_error(blobs):
    from torchdr_sc.initialization import initialize

    with pytest.raises(ValueError, match=r"`init` array must have shape .*\(300, 2\); got \(3,\)"):
        initialize(
            np.zeros(3),
            x=None,
            n=300,
            n_components=2,
            scaling=1.0,
            generator=torch.Generator(),
            device=torch.device("cpu"),
            dtype=torch.float32,
        )


def test_a_non_finite_embedding_is_never_committed(untouched, monkeypatch):
    """Whatever the estimator returns, NaN never reaches obsm (checked before the commit)."""
    original = tdr.UMAP.fit_transform

    def nan_fit(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return np.full_like(out, np.nan)

    monkeypatch.setattr(tdr.UMAP, "fit_transform", nan_fit)
    with pytest.raises(FloatingPointError, match=r"700 of 700 rows .* NaN or inf"):
        tl.umap(untouched, **UMAP_FAST)


# Divergence (item 2, second half) was already fixed on main: the estimator raises a
# FloatingPointError naming scanpy's `learning_rate`, pinned by
# tests/test_divergence.py::test_diverging_tl_call_leaves_the_anndata_untouched.


# ---- 3. the cache sees every byte --------------------------------------------------------
def test_fingerprint_sees_an_in_place_change_of_any_row():
    from torchdr_sc.adata import fingerprint

    x = np.random.default_rng(0).normal(size=(20_000, 850)).astype(np.float32)  # 68 MB
    before = fingerprint(x)
    x[1] = x[1, ::-1].copy()  # same row sum, a row the old sampling skipped
    assert fingerprint(x) != before


def test_fingerprint_of_a_strided_view_equals_that_of_its_copy():
    from torchdr_sc.adata import fingerprint, streamed_fingerprint

    base = np.random.default_rng(0).normal(size=(500, 40)).astype(np.float32)
    view = base[::2, ::3]
    assert fingerprint(view) == fingerprint(np.ascontiguousarray(view))
    assert streamed_fingerprint(view, 37) == fingerprint(view)


# ---- 4. stored kNN graphs are validated --------------------------------------------------
@pytest.mark.parametrize(
    ("value", "match"),
    [(np.nan, r"NaN or inf distances in 1 of 700 rows"), (-1.0, r"negative distances")],
)
def test_a_stored_graph_with_bad_distances_is_an_error(pbmc_adata, anndata_state, value, match):
    tdr.pp.neighbors(pbmc_adata, n_neighbors=15, **CPU)
    pbmc_adata.obsp["distances"].data[3] = value
    before = anndata_state(pbmc_adata)
    with pytest.raises(ValueError, match=r"adata.obsp\['distances'\] .*" + match):
        tl.umap(pbmc_adata, neighbors_key="neighbors", **UMAP_FAST)
    assert anndata_state(pbmc_adata) == before


def test_knn_graph_from_scipy_rejects_negative_distances():
    import scipy.sparse as sp

    from torchdr_sc.knn import KNNGraph

    m = sp.csr_matrix(np.array([[0, 1.0, 2.0], [-3.0, 0, 1.0], [1.0, 2.0, 0]]))
    with pytest.raises(ValueError, match=r"negative distances in 1 of 3 rows"):
        KNNGraph.from_scipy(m)


# ---- 5. key_added ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("a/b", r"`key_added` must not contain '/'.*got 'a/b'"),
        ("", r"`key_added` must not be empty"),
        ("X_pca", r"`key_added='X_pca'` would overwrite the representation being embedded"),
    ],
)
def test_bad_key_added_is_an_error(untouched, no_search, key, match):
    with pytest.raises(ValueError, match=match):
        tl.umap(untouched, key_added=key, **UMAP_FAST)


def test_cli_bad_key_added_exits_2_before_the_job(tmp_path, capsys):
    source = tmp_path / "in.h5ad"
    sc.datasets.pbmc68k_reduced().write_h5ad(source)
    target = tmp_path / "o.h5ad"
    code = main(["embed", str(source), "--out", str(target), "--key-added", "a/b"])
    assert code == 2
    assert "`key_added` must not contain '/'" in capsys.readouterr().err
    assert not target.exists()


# ---- 6. random_state ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", [2**70, -1, 2**31])
def test_out_of_range_random_state_is_an_error(untouched, no_search, seed):
    with pytest.raises(ValueError, match=r"`random_state` must be an int in \[0, 2147483647\]"):
        tl.umap(untouched, random_state=seed, **UMAP_FAST)


def test_recorded_seed_survives_h5ad(pbmc_adata, tmp_path):
    tl.umap(pbmc_adata, random_state=2**31 - 1, **UMAP_FAST)
    pbmc_adata.write_h5ad(tmp_path / "o.h5ad")
    back = ad.read_h5ad(tmp_path / "o.h5ad")
    assert back.uns["umap"]["params"]["random_state"] == 2**31 - 1


# ---- 7. ints given as floats -------------------------------------------------------------
@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (tl.umap, {"n_components": 2.0}, r"`n_components` must be an int in \[1, inf\); got 2.0"),
        (tl.tsne, {"max_iter": 300.0}, r"`max_iter` must be an int in \[1, inf\); got 300.0"),
        (
            tl.tsne,
            {"early_exaggeration_iter": 10.0},
            r"`early_exaggeration_iter` must be an int in \[0, inf\); got 10.0",
        ),
    ],
)
def test_whole_floats_for_ints_are_errors(untouched, no_search, func, kwargs, match):
    with pytest.raises(TypeError, match=match):
        func(untouched, **kwargs, **CPU)


def test_check_number_rejects_whole_floats_for_ints():
    from torchdr_sc._validation import check_number

    with pytest.raises(TypeError, match=r"`k` must be an int in \[1, inf\); got 3.0"):
        check_number("k", 3.0, kind=int, low=1, closed="left")
    assert check_number("k", np.int64(3), kind=int, low=1, closed="left") == 3


def test_cli_param_float_for_int_exits_2_before_the_job(tmp_path, capsys):
    source = tmp_path / "in.h5ad"
    sc.datasets.pbmc68k_reduced().write_h5ad(source)
    target = tmp_path / "o.h5ad"
    code = main(["embed", str(source), "--out", str(target), "--param", "max_iter=20.0"])
    err = capsys.readouterr()
    assert code == 2
    assert "`max_iter` must be an int in [1, inf); got 20.0" in err.err
    assert "UMAP of" not in err.out  # the job never started


# ---- 8. spectral init on tiny data -------------------------------------------------------
def test_spectral_umap_on_three_cells():
    adata = ad.AnnData(np.random.default_rng(0).random((3, 4)).astype(np.float32))
    tl.umap(adata, n_neighbors=3, maxiter=10, **CPU)
    assert np.isfinite(adata.obsm["X_umap"]).all()


@pytest.mark.parametrize("n_components", [19, 20])
def test_spectral_init_with_as_many_components_as_points(n_components):
    x = np.random.default_rng(0).random((20, 5)).astype(np.float32)
    z = tdr.UMAP(init="spectral", n_components=n_components, max_iter=10, **CPU).fit_transform(x)
    assert z.shape == (20, n_components)
    assert np.isfinite(z).all()


# ---- 9. devices, missing X, complex input ------------------------------------------------
@pytest.mark.parametrize("device", ["mps", "meta", "xla"])
def test_unsupported_device_is_an_error_naming_the_valid_ones(untouched, no_search, device):
    with pytest.raises(
        ValueError,
        match=rf"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'; got '{device}'",
    ):
        tl.umap(untouched, device=device, maxiter=5)


def test_cuda_index_out_of_range_is_an_error():
    from torchdr_sc._device import resolve_device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match="`device`"):
        resolve_device(f"cuda:{count + 3}")


def test_anndata_without_x_says_x_is_absent():
    with pytest.raises(ValueError, match=r"adata.X is absent .*`use_rep`"):
        tl.umap(ad.AnnData(), maxiter=5)


def test_x_none_with_the_representation_in_obsm_names_use_rep(pbmc_adata):
    bare = ad.AnnData(obs=pbmc_adata.obs.copy())
    bare.obsm["X_pca"] = pbmc_adata.obsm["X_pca"]
    with pytest.raises(ValueError, match=r"adata.X is absent .*use_rep='X_pca'"):
        tl.umap(bare, maxiter=5)
    tl.umap(bare, use_rep="X_pca", **UMAP_FAST)  # the fix the message gives works
    assert bare.obsm["X_umap"].shape == (700, 2)


@pytest.mark.parametrize("to_torch", [False, True])
def test_complex_input_is_a_type_error(to_torch):
    x = np.random.default_rng(0).random((50, 4)) + 1j
    data = torch.from_numpy(x) if to_torch else x
    with pytest.raises(TypeError, match=r"`X` holds complex numbers"):
        tdr.UMAP(max_iter=5, **CPU).fit_transform(data)


# ---- 13. the launcher commits the output only when every rank succeeded -------------------
FAKE_TORCHRUN = textwrap.dedent(
    """
    # Stands in for torchrun: runs the real worker as rank 0 of a group of one (so rank 0
    # really writes what it writes), then reports that "rank 1" failed.
    import os, subprocess, sys

    args = sys.argv[1:]
    worker = args[args.index("-m") + 1 :]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29581"}
    done = subprocess.run([sys.executable, "-m", *worker], env=env)
    print("fake torchrun: rank 1 failed after rank 0 finished", file=sys.stderr)
    sys.exit(1 if done.returncode == 0 else done.returncode)
    """
)


def test_a_job_whose_other_rank_fails_leaves_no_output(tmp_path, monkeypatch, capsys):
    from torchdr_sc.atlas import _launch

    source = tmp_path / "in.h5ad"
    sc.datasets.pbmc68k_reduced().write_h5ad(source)
    fake = tmp_path / "fake_torchrun.py"
    fake.write_text(FAKE_TORCHRUN)
    monkeypatch.setattr(_launch, "TORCHRUN", [sys.executable, str(fake)])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    target = tmp_path / "out" / "o.h5ad"
    target.parent.mkdir()
    args = ["embed", str(source), "--out", str(target), "--nproc", "2", "--max-iter", "5"]
    assert main([*args, "--device", "cpu"]) == 1
    assert sorted(os.listdir(target.parent)) == []  # neither the output nor a staged copy
    assert "finished" not in capsys.readouterr().out
    assert Path(source).exists()
