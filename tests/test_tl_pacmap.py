"""``tl.pacmap`` on scanpy's pbmc68k_reduced: keys, records, reuse, errors, no half writes."""

from __future__ import annotations

import importlib

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import torch

import torchdr_sc as tdr
import torchdr_sc.tl as tl

FAST = {"max_iter": 40, "iter_per_phase": 15}


@pytest.fixture(scope="module")
def embedded() -> ad.AnnData:
    adata = sc.datasets.pbmc68k_reduced()
    assert tl.pacmap(adata, cache=True, **FAST) is None
    return adata


def test_writes_scanpys_keys_and_records_the_parameters(embedded, tmp_path):
    emb = embedded.obsm["X_pacmap"]
    assert emb.dtype == np.float32
    assert emb.shape == (embedded.n_obs, 2)
    assert np.isfinite(emb).all()
    entry = embedded.uns["pacmap"]
    params = entry["params"]
    assert params["method"] == "pacmap"
    assert (params["n_neighbors"], params["MN_ratio"], params["FP_ratio"]) == (10, 0.5, 2.0)
    assert (params["metric"], params["max_iter"], params["iter_per_phase"]) == ("euclidean", 40, 15)
    assert "metric_in" not in params  # one name per meaning: scanpy's
    assert (params["use_rep"], params["random_state"]) == ("X_pca", 0)
    assert params["torchdr_sc_version"]
    assert params["execution_path"].startswith("pairs ")
    assert entry["n_iter"] == 40
    assert set(entry["timings"]) >= {"knn", "affinity", "optimize"}
    described = embedded.uns["tdr_affinities"][params["affinity_key"]]["params"]
    assert described["affinity"] == "PACMAPAffinity"
    embedded.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_pacmap"], emb)
    assert back.uns["pacmap"]["params"]["MN_ratio"] == 0.5


def test_the_cached_near_pairs_are_reused_with_the_same_result(embedded):
    adata = embedded.copy()
    before = adata.obsm["X_pacmap"].copy()
    tl.pacmap(adata, cache=True, **FAST)
    np.testing.assert_array_equal(adata.obsm["X_pacmap"], before)
    assert (
        adata.uns["pacmap"]["params"]["affinity_key"]
        == embedded.uns["pacmap"]["params"]["affinity_key"]
    )
    assert adata.uns["pacmap"]["timings"]["knn"] == 0.0  # no search: the cache served


def test_copy_key_added_n_pcs_and_the_seed(pbmc_adata, anndata_state):
    before = anndata_state(pbmc_adata)
    out = tl.pacmap(pbmc_adata, 20, key_added="pm20", random_state=3, copy=True, **FAST)
    assert anndata_state(pbmc_adata) == before
    assert out.obsm["pm20"].shape == (pbmc_adata.n_obs, 2)
    params = out.uns["pm20"]["params"]
    assert (params["n_pcs"], params["random_state"]) == (20, 3)
    again = tl.pacmap(pbmc_adata, 20, rng=np.random.default_rng(0), copy=True, **FAST)
    assert isinstance(again.uns["pacmap"]["params"]["random_state"], int)
    same = tdr.PACMAP(random_state=3, **FAST).fit_transform(pbmc_adata.obsm["X_pca"][:, :20])
    np.testing.assert_array_equal(out.obsm["pm20"], same)


def test_metric_takes_scanpys_meaning(pbmc_adata):
    euclid = tl.pacmap(pbmc_adata, copy=True, **FAST).obsm["X_pacmap"]
    squared = tl.pacmap(pbmc_adata, metric="sqeuclidean", copy=True, **FAST).obsm["X_pacmap"]
    np.testing.assert_array_equal(euclid, squared)  # the pairs do not change
    cosine = tl.pacmap(pbmc_adata, metric="cosine", copy=True, **FAST)
    assert cosine.uns["pacmap"]["params"]["metric"] == "cosine"
    assert not np.array_equal(cosine.obsm["X_pacmap"], euclid)


def test_a_stored_graph_with_enough_neighbours_is_used(pbmc_adata, monkeypatch):
    tdr.pp.neighbors(pbmc_adata, n_neighbors=61, key_added="wide")

    def no_search(*args, **kwargs):
        raise AssertionError("searched although the stored graph serves")

    monkeypatch.setattr(importlib.import_module("torchdr_sc.knn"), "knn", no_search)
    tl.pacmap(pbmc_adata, neighbors_key="wide", **FAST)
    assert pbmc_adata.uns["pacmap"]["params"]["neighbors_key"] == "wide"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"use_rep": "X_scvi"}, ValueError, r"X_scvi"),
        ({"n_neighbors": 0}, ValueError, r"`n_neighbors` must be an int in \[1, inf\); got 0"),
        ({"MN_ratio": -1.0}, ValueError, r"`MN_ratio` must be a float in \[0, inf\); got -1.0"),
        ({"metric": "chebyshev"}, ValueError, r"`metric` must be one of 'cosine', 'euclidean'"),
        ({"mn_ratio": 1.0}, TypeError, r"unexpected keyword argument 'mn_ratio'.*'MN_ratio'"),
        ({"metric_in": "cosine"}, TypeError, r"takes scanpy's name 'metric'"),
        ({"key_added": 3}, TypeError, r"key_added"),
        (
            {"neighbors_key": "neighbors"},
            ValueError,
            r"tl.pacmap with n_neighbors=10 needs k >= 60",
        ),
        ({"n_neighbors": 700}, ValueError, r"n_neighbors \(700\) must be smaller than the number"),
    ],
)
def test_errors_come_first_and_write_nothing(untouched, no_search, kwargs, error, match):
    with pytest.raises(error, match=match):
        tl.pacmap(untouched, **kwargs)


def test_a_diverged_embedding_is_never_written(untouched, monkeypatch):
    from torchdr_sc.objective.pacmap import PACMAPObjective

    def nan_gradient(self, z, iteration, phase):
        return torch.full_like(z, float("nan")) if iteration == 30 else torch.zeros_like(z)

    monkeypatch.setattr(PACMAPObjective, "__call__", nan_gradient)
    with pytest.raises(FloatingPointError, match=r"diverged: 700 rows hold NaN.*`lr`"):
        tl.pacmap(untouched, cache=True, **FAST)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_run_writes_nothing(untouched, monkeypatch, exc):
    def interrupt(self, *args, **kwargs):
        raise exc("stop")

    monkeypatch.setattr(tdr.PACMAP, "_optimize", interrupt)
    with pytest.raises(exc):
        tl.pacmap(untouched, cache=True, **FAST)
