"""``pp.neighbors`` writes scanpy's format: scanpy's tools run on it unchanged."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import torchdr_sc.pp as pp
import torchdr_sc.tl as tl


@pytest.fixture
def pbmc_adata() -> ad.AnnData:
    adata = sc.datasets.pbmc68k_reduced()
    del adata.uns["neighbors"], adata.obsp["distances"], adata.obsp["connectivities"]
    return adata


def test_scanpy_layout(pbmc_adata):
    assert pp.neighbors(pbmc_adata) is None
    entry = pbmc_adata.uns["neighbors"]
    assert entry["connectivities_key"] == "connectivities"
    assert entry["distances_key"] == "distances"
    params = entry["params"]
    assert params["n_neighbors"] == 15
    assert params["method"] == "umap"
    assert params["metric"] == "euclidean"
    assert params["random_state"] == 0
    assert params["use_rep"] == "X_pca"
    dist, conn = pbmc_adata.obsp["distances"], pbmc_adata.obsp["connectivities"]
    assert sp.issparse(dist)
    assert dist.format == "csr"
    assert (dist.getnnz(axis=1) == 14).all()
    assert (dist.diagonal() == 0).all()
    assert sp.issparse(conn)
    assert conn.format == "csr"
    assert conn.dtype == np.float32
    assert abs(conn - conn.T).max() < 1e-6


def test_key_added_prefixes_like_scanpy(pbmc_adata):
    pp.neighbors(pbmc_adata, n_neighbors=10, key_added="nn10", n_pcs=20)
    entry = pbmc_adata.uns["nn10"]
    assert entry["distances_key"] == "nn10_distances"
    assert entry["connectivities_key"] == "nn10_connectivities"
    assert entry["params"]["n_pcs"] == 20
    assert {"nn10_distances", "nn10_connectivities"} <= set(pbmc_adata.obsp)
    assert "neighbors" not in pbmc_adata.uns


def test_matches_sc_pp_neighbors(pbmc_adata):
    ours = pp.neighbors(pbmc_adata, copy=True)
    sc.pp.neighbors(pbmc_adata)  # exact search below 4096 cells
    d_ours, d_sc = ours.obsp["distances"], pbmc_adata.obsp["distances"]
    same = [
        len(set(d_ours[i].indices) & set(d_sc[i].indices)) / 14 for i in range(pbmc_adata.n_obs)
    ]
    assert np.mean(same) > 0.99
    diff = abs(ours.obsp["connectivities"] - pbmc_adata.obsp["connectivities"]).max()
    assert diff < 1e-3


def test_scanpy_tools_run_on_our_graph(pbmc_adata):
    pp.neighbors(pbmc_adata)
    sc.tl.leiden(pbmc_adata, flavor="igraph", n_iterations=2, directed=False)
    assert pbmc_adata.obs["leiden"].nunique() >= 3
    pp.neighbors(pbmc_adata, key_added="ours")
    sc.tl.leiden(
        pbmc_adata,
        neighbors_key="ours",
        key_added="leiden_ours",
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    assert (pbmc_adata.obs["leiden_ours"] == pbmc_adata.obs["leiden"]).all()
    sc.tl.umap(pbmc_adata, neighbors_key="ours", maxiter=10)
    assert pbmc_adata.obsm["X_umap"].shape == (pbmc_adata.n_obs, 2)


def test_tl_umap_reuses_our_graph(pbmc_adata, monkeypatch):
    pp.neighbors(pbmc_adata, key_added="ours")
    import importlib

    knn_module = importlib.import_module("torchdr_sc.knn")
    monkeypatch.setattr(knn_module, "knn", lambda *a, **k: pytest.fail("searched again"))
    tl.umap(pbmc_adata, neighbors_key="ours", init_pos="pca", maxiter=5)
    assert pbmc_adata.uns["umap"]["params"]["neighbors_key"] == "ours"


def test_errors_leave_adata_untouched(pbmc_adata):
    before = (set(pbmc_adata.obsp), set(pbmc_adata.uns))
    small = pbmc_adata[:10].copy()
    with pytest.raises(
        ValueError, match=r"n_neighbors \(15\) must not exceed the number of cells \(10\)"
    ):
        pp.neighbors(small)
    with pytest.raises(
        ValueError,
        match=r"`metric` must be one of 'cosine', 'euclidean', 'manhattan', 'sqeuclidean'; "
        r"got 'foo'",
    ):
        pp.neighbors(pbmc_adata, metric="foo")
    with pytest.raises(ValueError, match=r"`use_rep='X_scvi'` is not in adata.obsm"):
        pp.neighbors(pbmc_adata, use_rep="X_scvi")
    with pytest.raises(TypeError, match="`key_added` must be a str or None"):
        pp.neighbors(pbmc_adata, key_added=1)
    assert (set(pbmc_adata.obsp), set(pbmc_adata.uns)) == before


def test_copy_and_view(pbmc_adata):
    view = pbmc_adata[:300]
    out = pp.neighbors(view, copy=True)
    assert view.is_view
    assert "neighbors" not in view.uns
    assert out.obsp["distances"].shape == (300, 300)
    pp.neighbors(view)
    assert view.obsp["connectivities"].shape == (300, 300)
    assert "neighbors" not in pbmc_adata.uns


def test_graph_survives_h5ad_and_zarr(pbmc_adata, tmp_path):
    pp.neighbors(pbmc_adata, metric="cosine")
    pbmc_adata.write_h5ad(tmp_path / "a.h5ad")
    pbmc_adata.write_zarr(tmp_path / "a.zarr")
    for back in (ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_zarr(tmp_path / "a.zarr")):
        assert back.uns["neighbors"]["params"]["metric"] == "cosine"
        assert (back.obsp["connectivities"] != pbmc_adata.obsp["connectivities"]).nnz == 0
