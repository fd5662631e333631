"""Subset, then embed: a stored kNN graph that lost cells is searched afresh with its own
parameters (warned once, recorded), or used as it is with ``recompute_neighbors=False``."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc

import torchdr_sc as tdr
import torchdr_sc.tl as tl
from torchdr_sc.quality import knn_label_accuracy

FAST = {"maxiter": 60}


@pytest.fixture(scope="module")
def pbmc():
    return sc.datasets.pbmc68k_reduced()


def _subsets(pbmc):
    return {
        "view": pbmc[pbmc.obs["bulk_labels"] != "Dendritic"],
        "first-100": pbmc[:100].copy(),
    }


@pytest.fixture
def warned(monkeypatch):
    """The warnings the AnnData layer logs (through scanpy's logging), collected."""
    from torchdr_sc.adata import log

    seen: list[str] = []
    monkeypatch.setattr(log, "warning", seen.append)
    return seen


@pytest.mark.parametrize("which", ["view", "first-100"])
def test_umap_on_a_subset_searches_afresh_like_pp_neighbors(pbmc, which, warned):
    subset = _subsets(pbmc)[which]
    fresh = subset.copy()
    recorded = int(np.ravel(pbmc.uns["neighbors"]["params"]["n_neighbors"])[0])  # array([10])
    tdr.pp.neighbors(fresh, n_neighbors=recorded)
    tl.umap(fresh, **FAST)
    warned.clear()
    tl.umap(subset, **FAST)
    assert len(warned) == 1, warned
    assert "does not fit this object" in warned[0]
    assert "subset" in warned[0]
    np.testing.assert_array_equal(subset.obsm["X_umap"], fresh.obsm["X_umap"])
    labels = subset.obs["bulk_labels"]
    assert knn_label_accuracy(subset.obsm["X_umap"], labels) == knn_label_accuracy(
        fresh.obsm["X_umap"], labels
    )
    reason = subset.uns["umap"]["params"]["neighbors_recomputed"]
    assert "keep fewer than" in reason
    assert "neighbors_recomputed" not in fresh.uns["umap"]["params"]


@pytest.mark.parametrize("which", ["view", "first-100"])
@pytest.mark.parametrize("function", ["tsne", "infotsne"])
def test_tsne_family_on_a_subset(pbmc, function, which, warned):
    """The t-SNE family searches afresh by default (scanpy's tl.tsne reads no graph), so a
    subset gives what a fresh object gives, silently; asked to read the stale graph, it
    searches afresh with the graph's parameters and warns once."""
    subset = _subsets(pbmc)[which]
    fresh = subset.copy()
    run = getattr(tl, function)
    run(fresh, perplexity=5, max_iter=100)
    run(subset, perplexity=5, max_iter=100)
    assert not warned
    np.testing.assert_array_equal(subset.obsm[f"X_{function}"], fresh.obsm[f"X_{function}"])
    run(subset, perplexity=3, max_iter=100, neighbors_key="neighbors", key_added="g")
    assert len(warned) == 1
    assert "does not fit this object" in warned[0]
    assert np.isfinite(subset.obsm["g"]).all()
    assert "neighbors_recomputed" in subset.uns["g"]["params"]


def test_recompute_false_uses_the_stored_graph_as_scanpy_does(pbmc, warned):
    subset = pbmc[:100].copy()
    tl.umap(subset, recompute_neighbors=False, **FAST)
    assert len(warned) == 1
    assert "used as it is" in warned[0]
    assert np.isfinite(subset.obsm["X_umap"]).all()
    assert "neighbors_recomputed" not in subset.uns["umap"]["params"]
    # True always searches, without a warning
    warned.clear()
    tl.umap(pbmc[:100].copy(), recompute_neighbors=True, **FAST)
    assert not warned


def test_a_graph_that_fits_is_used_without_a_search(pbmc, monkeypatch):
    from torchdr_sc.adata import stale_graph

    def no_search(*args, **kwargs):
        raise AssertionError("the stored graph fits: no search")

    monkeypatch.setattr(stale_graph, "search_like", no_search)
    adata = pbmc.copy()
    tl.umap(adata, **FAST)
    assert "neighbors_recomputed" not in adata.uns["umap"]["params"]


def test_ingest_on_an_80_percent_reference_split(pbmc):
    n = int(0.8 * pbmc.n_obs)
    ref, query = pbmc[:n].copy(), pbmc[n:].copy()
    tl.umap(ref, **FAST)  # the stored graph lost cells: searched afresh
    truth = query.obs["bulk_labels"].copy()
    query.obs = query.obs.drop(columns=["bulk_labels"])
    tl.ingest(query, ref, obs="bulk_labels", embedding_method="umap")
    assert query.obsm["X_umap"].shape == (query.n_obs, 2)
    agreement = float((query.obs["bulk_labels"].astype(str) == truth.astype(str)).mean())
    assert agreement > 0.6, agreement
