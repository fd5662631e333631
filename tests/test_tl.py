"""The ``tl`` functions on scanpy's pbmc68k_reduced: keys, plots, I/O, copy, views, backed."""

from __future__ import annotations

import re
import warnings

import anndata as ad
import matplotlib
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import torchdr_sc.tl as tl

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FAST = {"max_iter": 20}
UMAP_FAST = {"maxiter": 20}  # tl.umap speaks scanpy
METHODS = ("umap", "tsne", "infotsne", "largevis")


@pytest.fixture(scope="module")
def embedded() -> ad.AnnData:
    """pbmc68k_reduced embedded by the four kNN-based methods (short runs)."""
    adata = sc.datasets.pbmc68k_reduced()
    for name in METHODS:
        fast = UMAP_FAST if name == "umap" else FAST
        assert getattr(tl, name)(adata, cache=True, **fast) is None
    return adata


@pytest.fixture
def pbmc_adata() -> ad.AnnData:
    return sc.datasets.pbmc68k_reduced()


def _png(path) -> int:
    plt.gcf().savefig(path)
    plt.close("all")
    return path.stat().st_size


@pytest.mark.parametrize("name", METHODS)
def test_documented_keys_shapes_and_dtypes(embedded, name):
    emb = embedded.obsm[f"X_{name}"]
    assert isinstance(emb, np.ndarray)
    assert emb.dtype == np.float32
    assert emb.shape == (embedded.n_obs, 2)
    assert np.isfinite(emb).all()
    params = embedded.uns[name]["params"]
    assert params["method"] == name
    assert params["use_rep"] == "X_pca"
    assert "n_pcs" not in params
    assert params["random_state"] == 0
    assert params["maxiter" if name == "umap" else "max_iter"] == 20
    assert params["torchdr_sc_version"]
    key = params["affinity_key"]
    P = embedded.obsp[key]
    assert sp.issparse(P)
    assert P.format == "csr"
    assert P.dtype == np.float32
    assert P.shape == (embedded.n_obs, embedded.n_obs)
    source = "neighbors:neighbors" if name == "umap" else "X_pca"  # umap read the graph
    assert embedded.uns["tdr_affinities"][key]["source"] == source
    assert set(embedded.uns[name]["timings"]) >= {"knn", "affinity", "optimize"}


def test_umap_records_scanpy_defaults(embedded):
    params = embedded.uns["umap"]["params"]
    assert params["min_dist"] == 0.5
    assert params["spread"] == 1.0
    assert params["n_neighbors"] == 10  # the graph of sc.pp.neighbors that the data holds
    assert params["neighbors_key"] == "neighbors"
    assert params["init_pos"] == "spectral"
    assert (params["maxiter"], params["alpha"], params["gamma"]) == (20, 1.0, 1.0)
    assert params["negative_sample_rate"] == 5
    assert "max_iter" not in params
    assert "lr" not in params
    assert params["a"] == pytest.approx(0.583, abs=1e-3)
    assert params["b"] == pytest.approx(1.334, abs=1e-3)


def test_tsne_family_shares_one_affinity(embedded):
    keys = {embedded.uns[m]["params"]["affinity_key"] for m in ("tsne", "infotsne", "largevis")}
    assert len(keys) == 1
    assert keys != {embedded.uns["umap"]["params"]["affinity_key"]}
    assert len([k for k in embedded.obsp if k.startswith("tdr_")]) == 2


def test_scanpy_plots_render(embedded, tmp_path):
    sizes = {}
    sc.pl.umap(embedded, color="bulk_labels", show=False)
    sizes["umap"] = _png(tmp_path / "umap.png")
    sc.pl.tsne(embedded, color="bulk_labels", show=False)
    sizes["tsne"] = _png(tmp_path / "tsne.png")
    for basis in ("infotsne", "largevis"):
        sc.pl.embedding(embedded, basis=basis, color="bulk_labels", show=False)
        sizes[basis] = _png(tmp_path / f"{basis}.png")
    assert all(size > 1000 for size in sizes.values()), sizes


def _assert_same_value(a, b, where):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same_value(a[k], b[k], f"{where}/{k}")
    elif sp.issparse(a):
        assert (a != b).nnz == 0, where
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_every_written_key_round_trips(embedded, tmp_path, fmt):
    path = tmp_path / f"pbmc_adata.{fmt}"
    if fmt == "h5ad":
        embedded.write_h5ad(path)
        back = ad.read_h5ad(path)
    else:
        embedded.write_zarr(path)
        back = ad.read_zarr(path)
    for name in METHODS:
        _assert_same_value(embedded.obsm[f"X_{name}"], back.obsm[f"X_{name}"], name)
        _assert_same_value(embedded.uns[name], back.uns[name], name)
    for key in embedded.uns["tdr_affinities"]:
        _assert_same_value(embedded.obsp[key], back.obsp[key], key)
    _assert_same_value(embedded.uns["tdr_affinities"], back.uns["tdr_affinities"], "cache")


def test_copy_semantics(pbmc_adata):
    before = (
        set(pbmc_adata.obsm),
        set(pbmc_adata.obsp),
        set(pbmc_adata.uns),
        pbmc_adata.obsm["X_umap"].copy(),
    )
    out = tl.umap(pbmc_adata, copy=True, init_pos="pca", **UMAP_FAST)
    assert isinstance(out, ad.AnnData)
    assert out is not pbmc_adata
    assert "umap" in out.uns
    assert out.uns["umap"]["params"]["init_pos"] == "pca"
    assert not np.array_equal(out.obsm["X_umap"], before[3])
    assert (set(pbmc_adata.obsm), set(pbmc_adata.obsp), set(pbmc_adata.uns)) == before[:3]
    np.testing.assert_array_equal(pbmc_adata.obsm["X_umap"], before[3])
    assert tl.umap(pbmc_adata, init_pos="pca", **UMAP_FAST) is None
    assert "umap" in pbmc_adata.uns


def test_key_added_names_obsm_and_uns(pbmc_adata, tmp_path):
    tl.umap(pbmc_adata, key_added="umap_pca_init", init_pos="pca", **UMAP_FAST)
    assert "umap_pca_init" in pbmc_adata.obsm
    assert "umap_pca_init" in pbmc_adata.uns
    assert "umap" not in pbmc_adata.uns
    sc.pl.embedding(pbmc_adata, basis="umap_pca_init", color="bulk_labels", show=False)
    assert _png(tmp_path / "k.png") > 1000


def test_view_input(pbmc_adata):
    mask = (pbmc_adata.obs["bulk_labels"] != "Dendritic").to_numpy()
    view = pbmc_adata[mask]
    # the subset cut the stored graph's rows: search afresh (test_tl_graph tests the error)
    out = tl.umap(view, copy=True, init_pos="pca", recompute_neighbors=True, **UMAP_FAST)
    assert view.is_view
    assert "umap" not in view.uns
    assert out.obsm["X_umap"].shape == (int(mask.sum()), 2)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        tl.umap(view, init_pos="pca", recompute_neighbors=True, **UMAP_FAST)
    assert not [w for w in records if "view" in str(w.message)]
    assert not view.is_view
    assert view.obsm["X_umap"].shape == (int(mask.sum()), 2)
    assert "umap" not in pbmc_adata.uns


def test_backed_anndata_with_obsm_representation(pbmc_adata, tmp_path):
    path = tmp_path / "pbmc_adata.h5ad"
    pbmc_adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    out = tl.umap(backed, copy=True, init_pos="pca", **UMAP_FAST)
    assert not out.isbacked
    assert out.obsm["X_umap"].shape == (pbmc_adata.n_obs, 2)
    tl.umap(backed, init_pos="pca", **UMAP_FAST)
    assert backed.obsm["X_umap"].dtype == np.float32


def test_sparse_small_X_is_used_directly(pbmc_adata):
    x = pbmc_adata.obsm["X_pca"][:, :30].copy()
    x[np.abs(x) < 0.5] = 0
    small = ad.AnnData(sp.csr_matrix(x), obs=pbmc_adata.obs)
    tl.umap(small, init_pos="pca", **UMAP_FAST)
    assert small.uns["umap"]["params"]["use_rep"] == "X"
    assert small.obsm["X_umap"].shape == (small.n_obs, 2)


def test_tsnekhorn_writes_its_keys(pbmc_adata, tmp_path):
    small = pbmc_adata[:100].copy()
    tl.tsnekhorn(small, perplexity=10, **FAST)
    emb = small.obsm["X_tsnekhorn"]
    assert emb.dtype == np.float32
    assert emb.shape == (100, 2)
    assert small.uns["tsnekhorn"]["params"]["perplexity"] == 10
    sc.pl.embedding(small, basis="tsnekhorn", color="bulk_labels", show=False)
    assert _png(tmp_path / "khorn.png") > 1000


def test_recorded_seed_reproduces_the_run(pbmc_adata):
    # device="cpu": bitwise reproducibility is a CPU guarantee (see test_estimators)
    tl.umap(
        pbmc_adata, random_state=np.random.RandomState(3), init_pos="pca", device="cpu", **UMAP_FAST
    )
    seed = pbmc_adata.uns["umap"]["params"]["random_state"]
    assert isinstance(seed, int)
    again = sc.datasets.pbmc68k_reduced()
    tl.umap(again, random_state=seed, init_pos="pca", device="cpu", **UMAP_FAST)
    np.testing.assert_array_equal(again.obsm["X_umap"], pbmc_adata.obsm["X_umap"])


def test_init_may_name_an_obsm_key(pbmc_adata):
    tl.umap(pbmc_adata, init_pos="X_pca", **UMAP_FAST)
    assert pbmc_adata.uns["umap"]["params"]["init_pos"] == "X_pca"


def test_backed_small_X_is_read_into_memory(pbmc_adata, tmp_path):
    small = ad.AnnData(pbmc_adata.obsm["X_pca"][:, :30].copy(), obs=pbmc_adata.obs)
    small.write_h5ad(tmp_path / "small.h5ad")
    backed = ad.read_h5ad(tmp_path / "small.h5ad", backed="r")
    tl.umap(backed, init_pos="pca", **UMAP_FAST)
    assert backed.uns["umap"]["params"]["use_rep"] == "X"
    assert backed.obsm["X_umap"].shape == (pbmc_adata.n_obs, 2)


def test_logs_like_scanpy(pbmc_adata):
    import io

    stream = io.StringIO()
    old_file, old_verbosity = sc.settings.logfile, sc.settings.verbosity
    sc.settings.logfile, sc.settings.verbosity = stream, 3
    try:
        tl.umap(pbmc_adata, init_pos="pca", cache=True, **UMAP_FAST)
        tl.umap(pbmc_adata, init_pos="pca", key_added="again", cache=True, **UMAP_FAST)
    finally:
        sc.settings.logfile, sc.settings.verbosity = old_file, old_verbosity
    text = stream.getvalue()
    assert text.startswith("computing UMAP\n")
    assert "using 'X_pca' with n_pcs = 50" in text
    assert "'X_umap', UMAP coordinates (adata.obsm)" in text
    assert re.search(r"finished: added.*\(0:\d\d:\d\d\)", text, flags=re.DOTALL)
    assert "using the cached input affinity .obsp['tdr_UMAPAffinity_" in text


def test_quiet_at_default_verbosity(pbmc_adata):
    import io

    stream = io.StringIO()
    old_file = sc.settings.logfile
    sc.settings.logfile = stream
    try:
        tl.umap(pbmc_adata, init_pos="pca", **UMAP_FAST)
    finally:
        sc.settings.logfile = old_file
    assert sc.settings.verbosity <= 1
    assert stream.getvalue() == ""


def test_progress_bar_can_be_turned_on(pbmc_adata, capsys):
    tl.umap(pbmc_adata, init_pos="pca", progress_bar=True, **UMAP_FAST)
    assert "UMAP" in capsys.readouterr().err
    assert pbmc_adata.uns["umap"]["params"]["progress_bar"] is True
