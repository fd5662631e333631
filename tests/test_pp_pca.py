"""``tdr.pp.pca`` against ``sc.pp.pca``: dense, sparse and backed input, keys, errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import torchdr_sc as tdr


def sine_of_largest_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Sine of the largest principal angle between the column spaces of ``a`` and ``b``."""
    qa = np.linalg.qr(np.asarray(a, np.float64))[0]
    qb = np.linalg.qr(np.asarray(b, np.float64))[0]
    return float(np.linalg.norm(qa @ qa.T - qb @ qb.T, 2))


@pytest.fixture(scope="module")
def lognorm():
    """Log-normalised counts of 500 cells x 200 genes from 8 programmes, 80 genes flagged HVG."""
    rng = np.random.default_rng(1)
    rates = np.exp(0.5 * rng.normal(size=(500, 8)) @ rng.normal(size=(8, 200)) / 2)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(rates).astype(np.float32)))
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    adata.var["highly_variable"] = np.arange(200) % 5 < 2
    return adata


def _compare(ours: ad.AnnData, ref: ad.AnnData) -> tuple[float, float]:
    sine = sine_of_largest_angle(ours.varm["PCs"], ref.varm["PCs"])
    ratio = np.abs(ours.uns["pca"]["variance_ratio"] - ref.uns["pca"]["variance_ratio"]).max()
    return sine, float(ratio)


@pytest.mark.parametrize("kind", ["dense", "sparse", "backed"])
def test_subspace_matches_scanpy(lognorm, kind, tmp_path):
    base = lognorm.copy()
    del base.var["highly_variable"]
    if kind == "dense":
        base.X = base.X.toarray()
    ref = base.copy()
    if kind == "backed":
        base.write_h5ad(tmp_path / "x.h5ad")
        base = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    sc.pp.pca(ref, n_comps=6)
    tdr.pp.pca(base, n_comps=6)
    sine, ratio = _compare(base, ref)
    assert sine < 1e-4
    assert ratio < 1e-6
    np.testing.assert_allclose(np.abs(base.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]), atol=1e-3)
    assert base.obsm["X_pca"].dtype == np.float32
    np.testing.assert_allclose(base.uns["pca"]["variance"], ref.uns["pca"]["variance"], rtol=1e-4)


def test_highly_variable_mask_and_keys_as_scanpy(lognorm, tmp_path):
    ours, ref = lognorm.copy(), lognorm.copy()
    sc.pp.pca(ref, n_comps=5)
    tdr.pp.pca(ours, n_comps=5, key_added="hv")
    assert {"hv"} <= set(ours.obsm)
    assert {"hv"} <= set(ours.varm)
    assert "hv" in ours.uns
    hv = ours.var["highly_variable"].to_numpy()
    assert np.all(ours.varm["hv"][~hv] == 0)
    assert sine_of_largest_angle(ours.varm["hv"][hv], ref.varm["PCs"][hv]) < 1e-4
    params = ours.uns["hv"]["params"]
    assert params == {
        "zero_center": True,
        "use_highly_variable": True,
        "mask_var": "highly_variable",
    }
    ours.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(back.obsm["hv"], ours.obsm["hv"])


def test_default_n_comps_and_uncentred_and_layer(lognorm):
    small = lognorm[:, :30].copy()
    del small.var["highly_variable"]
    small.layers["lg"] = small.X.copy()
    tdr.pp.pca(small, layer="lg", zero_center=False)
    assert small.obsm["X_pca"].shape == (500, 29)  # min(n_obs, n_vars) - 1
    assert small.uns["pca"]["params"] == {
        "zero_center": False,
        "use_highly_variable": False,
        "layer": "lg",
    }
    ref = small.copy()
    sc.pp.pca(ref, zero_center=False, n_comps=29, svd_solver="arpack")
    assert sine_of_largest_angle(small.varm["PCs"][:, :5], ref.varm["PCs"][:, :5]) < 1e-3


def test_array_input_returns_arrays_and_copy_leaves_the_input(lognorm):
    x = lognorm.X.toarray()
    z = tdr.pp.pca(x, n_comps=4)
    assert isinstance(z, np.ndarray)
    assert z.shape == (500, 4)
    z2, comps, ratio, variance = tdr.pp.pca(sp.csr_matrix(x), n_comps=4, return_info=True)
    assert comps.shape == (4, 200)
    assert ratio.shape == variance.shape == (4,)
    np.testing.assert_allclose(np.abs(z2), np.abs(z), atol=1e-4)
    before = set(lognorm.obsm)
    out = tdr.pp.pca(lognorm, n_comps=3, copy=True)
    assert "X_pca" in out.obsm
    assert set(lognorm.obsm) == before


def test_bad_input_raises_early_and_writes_nothing(lognorm):
    adata = lognorm.copy()
    with pytest.raises(ValueError, match=r"`mask_var='hvg'` is not a column of adata.var"):
        tdr.pp.pca(adata, mask_var="hvg")
    with (
        pytest.warns(FutureWarning, match="deprecated"),
        pytest.raises(ValueError, match="`use_highly_variable` and `mask_var` are incompatible"),
    ):
        tdr.pp.pca(adata, use_highly_variable=True, mask_var=None)
    with pytest.raises(
        ValueError, match=r"`n_comps` \(81\) must be at most min\(n_obs, n_vars\) = 80"
    ):
        tdr.pp.pca(adata, n_comps=81)
    with pytest.raises(ValueError, match="`svd_solver` must be one of"):
        tdr.pp.pca(adata, svd_solver="magic")
    with pytest.raises(ValueError, match=r"`layer='counts'` is not in adata.layers"):
        tdr.pp.pca(adata, layer="counts")
    bad = adata.copy()
    bad.X = bad.X.toarray()
    bad.X[[0, 7, 9], 5] = np.inf  # gene 5 is highly variable: it enters the PCA
    with pytest.raises(ValueError, match=r"`adata.X` holds NaN or inf values in 3 of 500 rows"):
        tdr.pp.pca(bad)
    for obj in (adata, bad):
        assert "X_pca" not in obj.obsm
        assert "PCs" not in obj.varm
        assert "pca" not in obj.uns


def test_use_highly_variable_is_deprecated(lognorm):
    adata = lognorm.copy()
    with pytest.warns(FutureWarning, match="`use_highly_variable` is deprecated"):
        tdr.pp.pca(adata, n_comps=3, use_highly_variable=False)
    assert adata.uns["pca"]["params"]["use_highly_variable"] is False
    assert not np.any(adata.varm["PCs"] == 0)
