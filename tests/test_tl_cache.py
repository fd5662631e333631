"""The input-affinity cache in ``adata.obsp`` and the reuse of stored kNN graphs."""

from __future__ import annotations

import importlib

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import torchdr_sc.tl as tl
from torchdr_sc.adata import log
from torchdr_sc.estimators import Embedder

FAST = {"max_iter": 5, "cache": True}
UMAP_FAST = {"maxiter": 5, "cache": True}  # tl.umap speaks scanpy
knn_module = importlib.import_module("torchdr_sc.knn")


@pytest.fixture
def counts(monkeypatch) -> dict[str, int]:
    """Count kNN searches and input-affinity computations, and collect the log lines."""
    seen = {"search": 0, "affinity": 0, "log": []}
    search, affinity, info = knn_module.knn, Embedder._input_affinity, log.info

    def counting_search(*args, **kwargs):
        seen["search"] += 1
        return search(*args, **kwargs)

    def counting_affinity(self, *args, **kwargs):
        seen["affinity"] += 1
        return affinity(self, *args, **kwargs)

    def logging(msg, **kwargs):
        seen["log"].append(msg)
        return info(msg, **kwargs)

    monkeypatch.setattr(knn_module, "knn", counting_search)
    monkeypatch.setattr(Embedder, "_input_affinity", counting_affinity)
    monkeypatch.setattr(log, "info", logging)
    return seen


@pytest.fixture
def pbmc_adata() -> ad.AnnData:
    return sc.datasets.pbmc68k_reduced()


def test_same_affinity_is_reused_and_changes_recompute(pbmc_adata, counts):
    tl.tsne(pbmc_adata, perplexity=10, **FAST)
    assert (counts["search"], counts["affinity"]) == (1, 1)
    key = pbmc_adata.uns["tsne"]["params"]["affinity_key"]
    P = pbmc_adata.obsp[key]

    tl.infotsne(pbmc_adata, perplexity=10, **FAST)  # same affinity: no search, no computation
    tl.tsne(pbmc_adata, perplexity=10, key_added="tsne_again", **FAST)
    assert (counts["search"], counts["affinity"]) == (1, 1)
    assert pbmc_adata.uns["infotsne"]["params"]["affinity_key"] == key
    assert pbmc_adata.obsp[key] is P
    assert any("using the cached input affinity" in line for line in counts["log"])

    tl.tsne(pbmc_adata, perplexity=12, **FAST)  # other affinity parameters
    assert counts["affinity"] == 2
    assert pbmc_adata.uns["tsne"]["params"]["affinity_key"] != key

    pbmc_adata.obsm["X_pca"] = pbmc_adata.obsm["X_pca"].copy()
    pbmc_adata.obsm["X_pca"][0, 0] += 1.0  # changed representation
    tl.tsne(pbmc_adata, perplexity=10, **FAST)
    assert counts["affinity"] == 3
    assert (pbmc_adata.obsp[key] != P).nnz > 0

    tl.tsne(pbmc_adata, perplexity=10, n_pcs=20, **FAST)  # other columns of the same obsm key
    assert counts["affinity"] == 4


def test_subset_of_cells_recomputes(pbmc_adata, counts):
    fresh = {"init_pos": "pca", "recompute_neighbors": True, **UMAP_FAST}
    tl.umap(pbmc_adata, **fresh)
    subset = pbmc_adata[pbmc_adata.obs["bulk_labels"] != "Dendritic"].copy()
    key = pbmc_adata.uns["umap"]["params"]["affinity_key"]
    assert key in subset.obsp  # anndata subsets the cached matrix ...
    tl.umap(subset, **fresh)
    assert counts["affinity"] == 2  # ... but it is not reused
    direct = subset.copy()
    del direct.uns["tdr_affinities"]
    tl.umap(direct, **fresh)
    assert abs(subset.obsp[key] - direct.obsp[key]).max() < 1e-6


def test_cache_is_off_by_default(pbmc_adata, counts):
    tl.umap(pbmc_adata, maxiter=5)
    tl.tsne(pbmc_adata, max_iter=5)
    assert not any(k.startswith("tdr_") for k in pbmc_adata.obsp)
    assert "tdr_affinities" not in pbmc_adata.uns
    assert "affinity_key" not in pbmc_adata.uns["umap"]["params"]
    tl.umap(pbmc_adata, init_pos="pca", **UMAP_FAST)
    tl.umap(pbmc_adata, init_pos="pca", maxiter=5)  # an entry exists but is not read
    assert counts["affinity"] == 4


def test_cache_survives_h5ad(pbmc_adata, counts, tmp_path):
    tl.tsne(pbmc_adata, perplexity=10, **FAST)
    pbmc_adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    tl.largevis(back, perplexity=10, **FAST)
    assert counts["affinity"] == 1


def test_umap_on_the_graph_of_sc_pp_neighbors(pbmc_adata, counts):
    sc.pp.neighbors(pbmc_adata, n_neighbors=15, key_added="sc15")
    tl.umap(pbmc_adata, neighbors_key="sc15", init_pos="pca", **UMAP_FAST)
    assert counts["search"] == 0
    params = pbmc_adata.uns["umap"]["params"]
    assert params["neighbors_key"] == "sc15"
    assert params["use_rep"] == "X_pca"
    assert pbmc_adata.obsm["X_umap"].shape == (pbmc_adata.n_obs, 2)
    # scanpy's exact euclidean graph gives the affinity of a fresh search
    fresh = tl.umap(
        pbmc_adata, init_pos="pca", copy=True, n_neighbors=15, recompute_neighbors=True, **UMAP_FAST
    )
    P_graph = pbmc_adata.obsp[params["affinity_key"]]
    P_search = fresh.obsp[fresh.uns["umap"]["params"]["affinity_key"]]
    assert abs(P_graph - P_search).max() < 1e-4


def test_tsne_on_a_stored_graph_squares_scanpy_distances(pbmc_adata, counts):
    sc.pp.neighbors(pbmc_adata, n_neighbors=40, key_added="sc40")
    tl.tsne(pbmc_adata, perplexity=10, neighbors_key="sc40", **FAST)
    assert counts["search"] == 0
    fresh = tl.tsne(pbmc_adata, perplexity=10, copy=True, **FAST)
    P_graph = pbmc_adata.obsp[pbmc_adata.uns["tsne"]["params"]["affinity_key"]]
    P_search = fresh.obsp[fresh.uns["tsne"]["params"]["affinity_key"]]
    assert abs(P_graph - P_search).max() < 1e-4 * P_search.max()
    assert np.isfinite(pbmc_adata.obsm["X_tsne"]).all()


def test_cached_affinities_lists_and_clear_cache_removes(pbmc_adata, tmp_path):
    assert tl.cached_affinities(pbmc_adata).empty
    tl.tsne(pbmc_adata, perplexity=10, **FAST)
    tl.umap(pbmc_adata, **UMAP_FAST)
    table = tl.cached_affinities(pbmc_adata)
    assert set(table["affinity"]) == {"EntropicAffinity", "UMAPAffinity"}
    tsne_key = pbmc_adata.uns["tsne"]["params"]["affinity_key"]
    row = table.loc[tsne_key]
    P = pbmc_adata.obsp[tsne_key]
    assert row["nnz"] == P.nnz
    assert row["megabytes"] == pytest.approx(
        (P.data.nbytes + P.indices.nbytes + P.indptr.nbytes) / 2**20
    )
    assert "perplexity=10" in row["params"]
    assert row["source"] == "X_pca"
    assert row["described"]

    tl.clear_cache(pbmc_adata, tsne_key)
    assert tsne_key not in pbmc_adata.obsp
    assert list(tl.cached_affinities(pbmc_adata)["affinity"]) == ["UMAPAffinity"]
    with pytest.raises(KeyError, match=r"'tdr_nope' is not a cached affinity \(cached: 'tdr_UMAP"):
        tl.clear_cache(pbmc_adata, ["tdr_nope"])
    tl.clear_cache(pbmc_adata)
    assert not any(k.startswith("tdr_") for k in pbmc_adata.obsp)
    assert "tdr_affinities" not in pbmc_adata.uns
    assert tl.cached_affinities(pbmc_adata).empty
    # the saved file no longer holds the matrices
    pbmc_adata.write_h5ad(tmp_path / "cleared.h5ad")
    assert not any(k.startswith("tdr_") for k in ad.read_h5ad(tmp_path / "cleared.h5ad").obsp)


def test_orphan_cache_matrix_is_listed_and_removed(pbmc_adata):
    tl.tsne(pbmc_adata, perplexity=10, **FAST)
    key = pbmc_adata.uns["tsne"]["params"]["affinity_key"]
    del pbmc_adata.uns["tdr_affinities"]  # e.g. uns edited by hand
    table = tl.cached_affinities(pbmc_adata)
    assert not table.loc[key, "described"]
    tl.clear_cache(pbmc_adata)
    assert key not in pbmc_adata.obsp
