"""Bad input to ``tl``: clear errors before any heavy work, and the AnnData left untouched."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import torchdr_sc.tl as tl
from torchdr_sc.estimators import TSNE, UMAP

FAST = {"max_iter": 5}
UMAP_FAST = {"maxiter": 5}  # tl.umap speaks scanpy


def test_use_rep_missing_lists_obsm(untouched, no_search):
    with pytest.raises(
        ValueError,
        match=r"`use_rep='X_scvi'` is not in adata.obsm \(available: 'X_pca', 'X_umap'\)\.",
    ):
        tl.umap(untouched, use_rep="X_scvi")


def test_nan_in_representation(untouched, no_search):
    untouched.obsm["X_pca"][[3, 7], 0] = [np.nan, np.inf]
    with pytest.raises(
        ValueError, match=r"adata.obsm\['X_pca'\].* NaN or inf values in 2 of 700 rows"
    ):
        tl.tsne(untouched)


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (tl.tsne, {}, r"perplexity \(30\) must be smaller than the number of samples \(20\)"),
        (
            tl.umap,
            {"n_neighbors": 25, "recompute_neighbors": True},
            r"n_neighbors \(25\) must not exceed the number of samples \(20\)",
        ),
    ],
)
def test_too_few_cells(pbmc_adata, no_search, anndata_state, func, kwargs, match):
    small = pbmc_adata[:20].copy()
    before = anndata_state(small)
    with pytest.raises(ValueError, match=match):
        func(small, **kwargs)
    assert anndata_state(small) == before


def test_neighbors_key_missing(untouched, no_search):
    with pytest.raises(
        ValueError,
        match=r"`neighbors_key='nn'` is not in adata.uns \(kNN graphs available: 'neighbors'\)",
    ):
        tl.umap(untouched, neighbors_key="nn")


def test_neighbors_key_with_too_small_k(untouched, no_search):
    # pbmc68k_reduced ships a graph with n_neighbors=10, i.e. k=9
    with pytest.raises(
        ValueError,
        match=r"k=9 neighbours per cell .* needs k >= 90: recompute it with n_neighbors >= 91",
    ):
        tl.tsne(untouched, neighbors_key="neighbors")
    with pytest.raises(ValueError, match=r"tl.umap with n_neighbors=15 needs k >= 14"):
        tl.umap(untouched, neighbors_key="neighbors", n_neighbors=15)
    # the graph found by default: the message also says how to search afresh
    with pytest.raises(
        ValueError, match=r"needs k >= 14.*Or pass recompute_neighbors=True to search"
    ):
        tl.umap(untouched, n_neighbors=15)


def test_tsnekhorn_has_no_neighbors_key(untouched):
    with pytest.raises(
        TypeError, match=r"tl.tsnekhorn\(\) got an unexpected keyword argument 'neighbors_key'"
    ):
        tl.tsnekhorn(untouched, neighbors_key="neighbors")


@pytest.mark.parametrize("bad", [3, ("a",), b"X_umap"])
def test_key_added_not_a_str(untouched, no_search, bad):
    with pytest.raises(TypeError, match=r"`key_added` must be a str or None; got"):
        tl.umap(untouched, key_added=bad)


def test_representation_rows_differ_from_obs(no_search):
    corrupt = ad.AnnData(np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32))
    corrupt._X = corrupt.X[:25]  # a damaged object: X no longer matches obs
    with pytest.raises(ValueError, match=r"adata.X has shape \(25, 5\) but adata has 30 cells"):
        tl.umap(corrupt)
    assert "umap" not in corrupt.uns


def test_no_silent_pca(no_search):
    adata = ad.AnnData(np.ones((60, 80), np.float32))
    with pytest.raises(ValueError, match=r"run `sc.pp.pca\(adata\)` first"):
        tl.umap(adata)
    assert "X_pca" not in adata.obsm
    assert "pca" not in adata.uns


def test_invalid_engine_parameter(untouched, no_search):
    with pytest.raises(ValueError, match=r"`perplexity` must be a float in \(0, inf\); got -1\."):
        tl.tsne(untouched, perplexity=-1)
    with pytest.raises(ValueError, match=r"`backend` must be one of"):
        tl.umap(untouched, backend="foo")


@pytest.mark.parametrize(
    ("func", "given", "suggested"),
    [
        (tl.umap, "max_iter", "'maxiter'"),  # the estimator's name: scanpy's is taken
        (tl.umap, "n_epochs", "'maxiter'"),  # umap-learn's name
        (tl.umap, "learning_rate", "'alpha'"),
        (tl.umap, "init", "'init_pos'"),
        (tl.umap, "n_negatives", "'negative_sample_rate'"),
        (tl.umap, "min_dst", "'min_dist'"),  # a typo
        (tl.tsne, "lr", "'learning_rate'"),
        (tl.tsne, "early_exaggeration_coeff", "'early_exaggeration'"),
        (tl.tsne, "metric_in", "'metric'"),
        (tl.tsne, "perplexty", "'perplexity'"),
        (tl.infotsne, "maxiter", "'max_iter'"),
    ],
)
def test_unknown_keyword_suggests_the_valid_name(untouched, no_search, func, given, suggested):
    name = func.__name__
    with pytest.raises(
        TypeError,
        match=rf"tl.{name}\(\) got an unexpected keyword argument '{given}'; "
        rf"did you mean {suggested}",
    ):
        func(untouched, **{given: 1})


def test_unknown_keyword_without_a_close_name(untouched, no_search):
    with pytest.raises(TypeError, match=r"tl.umap\(\) got an unexpected keyword argument 'zzz'\.$"):
        tl.umap(untouched, zzz=1)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_run_writes_nothing(untouched, monkeypatch, exc):
    def interrupt(self, *args, **kwargs):
        raise exc("stop")

    monkeypatch.setattr(UMAP, "_optimize", interrupt)
    monkeypatch.setattr(TSNE, "_optimize", interrupt)
    with pytest.raises(exc):
        tl.umap(untouched, init_pos="pca", **UMAP_FAST)
    with pytest.raises(exc):
        tl.tsne(untouched, perplexity=5, copy=False, **FAST)
    assert not any(k.startswith("tdr_") for k in untouched.obsp)
