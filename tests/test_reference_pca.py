"""New cells on a reference's principal axes (``tl.ingest`` with ``X_pca``): scanpy's PCA
settings are honoured, and sparse data are never densified."""

from __future__ import annotations

import tracemalloc

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from torchdr_sc.adata.pca_projection import project_on_reference_pca


@pytest.fixture
def logged():
    """Log-normalised counts (sparse), 300 cells x 120 genes, 40 of them highly variable."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(0.6, 2.0, size=120), size=(300, 120)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = [f"g{i}" for i in range(120)]
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=40)
    return adata


@pytest.mark.parametrize("zero_center", [True, False])
def test_the_reference_projected_on_itself_gives_its_pca(logged, zero_center):
    """Centred by the reference's mean, or not centred when its PCA was not (scanpy's
    ``zero_center=False`` is a truncated SVD of the raw matrix)."""
    sc.pp.pca(logged, n_comps=10, zero_center=zero_center)
    assert bool(logged.uns["pca"]["params"]["zero_center"]) is zero_center
    got = project_on_reference_pca(logged.copy(), logged, 10)
    np.testing.assert_allclose(got, logged.obsm["X_pca"], rtol=1e-4, atol=1e-4)


def test_genes_outside_the_pcas_mask_never_enter(logged):
    """NaN (or anything) in a gene the PCA left out does not reach the coordinates."""
    sc.pp.pca(logged, n_comps=10, mask_var="highly_variable")
    query = logged.copy()
    dense = query.X.toarray()
    dense[:, ~logged.var["highly_variable"].to_numpy()] = np.nan
    query.X = dense
    got = project_on_reference_pca(query, logged, 10)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, logged.obsm["X_pca"], rtol=1e-4, atol=1e-4)


def test_a_custom_mask_and_older_records(logged):
    logged.var["mine"] = np.arange(logged.n_vars) % 3 == 0
    sc.pp.pca(logged, n_comps=8, mask_var="mine")
    np.testing.assert_allclose(
        project_on_reference_pca(logged.copy(), logged, 8), logged.obsm["X_pca"], atol=1e-4
    )
    # a record without mask_var: the genes with non-zero axes are the ones used
    logged.uns["pca"]["params"] = {"zero_center": True}
    np.testing.assert_allclose(
        project_on_reference_pca(logged.copy(), logged, 8), logged.obsm["X_pca"], atol=1e-4
    )


def test_the_pcas_layer_is_read_and_required(logged):
    logged.layers["scaled"] = sc.pp.scale(logged, copy=True, max_value=10).X
    sc.pp.pca(logged, n_comps=6, layer="scaled")
    np.testing.assert_allclose(
        project_on_reference_pca(logged.copy(), logged, 6), logged.obsm["X_pca"], atol=1e-3
    )
    without = logged.copy()
    del without.layers["scaled"]
    with pytest.raises(ValueError, match=r"layers\['scaled'\], which the query lacks"):
        project_on_reference_pca(without, logged, 6)


def test_query_genes_in_another_order(logged):
    sc.pp.pca(logged, n_comps=5)
    shuffled = logged[:, np.random.default_rng(1).permutation(logged.n_vars)].copy()
    np.testing.assert_allclose(
        project_on_reference_pca(shuffled, logged, 5), logged.obsm["X_pca"], atol=1e-4
    )


def test_a_large_sparse_reference_is_not_densified():
    """10,000 x 20,000 at 1% density: the dense matrix would take 800 MB (float32); the
    projection of 100 cells stays under 64 MB of new allocations."""
    n_ref, n_genes, k = 10_000, 20_000, 30
    rng = np.random.default_rng(0)
    x = sp.random(n_ref, n_genes, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    ref = ad.AnnData(x)
    axes, _ = np.linalg.qr(rng.normal(size=(n_genes, k)))
    ref.varm["PCs"] = axes
    ref.uns["pca"] = {"params": {"zero_center": True, "mask_var": None}}
    query = ad.AnnData(x[:100].copy())
    tracemalloc.start()
    try:
        got = project_on_reference_pca(query, ref, k)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"
    dense_mean = np.asarray(x.mean(axis=0)).ravel()
    expected = (x[:100].toarray() - dense_mean) @ axes
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
