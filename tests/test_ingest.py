"""``tl.ingest``: new cells onto a reference's embeddings, labels by a kNN vote."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from sklearn.model_selection import train_test_split

import torchdr_sc.tl as tl

LABEL = "bulk_labels"


def _split() -> tuple[ad.AnnData, ad.AnnData, np.ndarray]:
    """pbmc68k_reduced: 80 % reference (with scanpy's PCA and graph), 20 % query."""
    adata = sc.datasets.pbmc68k_reduced()
    ref_idx, query_idx = train_test_split(
        np.arange(adata.n_obs), test_size=0.2, random_state=0, stratify=adata.obs[LABEL]
    )
    ref, query = adata[ref_idx].copy(), adata[query_idx].copy()
    sc.pp.pca(ref)  # sc.tl.ingest reads uns['pca']['params'], which the dataset lacks
    sc.pp.neighbors(ref)
    truth = query.obs[LABEL].astype(str).to_numpy()
    del query.obs[LABEL]
    del query.obsm["X_umap"]  # the dataset's own UMAP: the query has no embedding yet
    return ref, query, truth


@pytest.fixture(scope="module")
def split():
    ref, query, truth = _split()
    tl.umap(ref, maxiter=200)
    tl.tsne(ref, max_iter=300)
    return ref, query, truth


def _accuracy(query: ad.AnnData, truth: np.ndarray) -> float:
    return float((query.obs[LABEL].astype(str).to_numpy() == truth).mean())


def _patch_pynndescent(monkeypatch) -> None:
    """scanpy 1.11's ingest passes pynndescent 0.7's unset forest sizes (None) to make_forest."""
    rp_trees = pytest.importorskip("pynndescent.rp_trees")
    original = rp_trees.make_forest

    def make_forest(data, n_neighbors, n_trees, leaf_size, *args, **kwargs):
        n_trees = n_trees or min(64, 5 + round(data.shape[0] ** 0.5 / 20.0))
        return original(data, n_neighbors, n_trees, leaf_size or max(10, n_neighbors), *args)

    monkeypatch.setattr(rp_trees, "make_forest", make_forest)


@pytest.mark.slow
def test_label_transfer_at_least_scanpys(split, monkeypatch):
    ref, query, truth = split
    ours = query.copy()
    tl.ingest(ours, ref, obs=LABEL, embedding_method=("umap", "tsne", "pca"))
    _patch_pynndescent(monkeypatch)
    theirs = query.copy()
    sc.tl.ingest(theirs, ref, obs=LABEL, embedding_method="pca")
    acc_ours, acc_theirs = _accuracy(ours, truth), _accuracy(theirs, truth)
    print(f"\nbulk_labels transfer: tdr {acc_ours:.4f} vs sc.tl.ingest {acc_theirs:.4f}")
    assert acc_ours >= acc_theirs - 0.02
    # the keys and shapes scanpy writes, the reference's categories and colours
    assert ours.obsm["X_umap"].shape == (query.n_obs, 2)
    assert ours.obsm["X_tsne"].shape == (query.n_obs, 2)
    assert ours.obsm["X_pca"].shape == theirs.obsm["X_pca"].shape
    assert list(ours.obs[LABEL].cat.categories) == list(ref.obs[LABEL].cat.categories)
    assert list(ours.uns[f"{LABEL}_colors"]) == list(ref.uns[f"{LABEL}_colors"])
    for key in ("X_umap", "X_tsne"):
        assert np.isfinite(ours.obsm[key]).all()


def test_new_cells_land_among_their_reference_type(split):
    ref, query, truth = split
    out = tl.ingest(query, ref, obs=LABEL, embedding_method="umap", inplace=False)
    assert LABEL not in query.obs  # inplace=False
    assert "X_umap" not in query.obsm
    # each new cell's nearest reference cell on the map has the cell's true label mostly
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(10).fit(ref.obsm["X_umap"], ref.obs[LABEL].astype(str))
    assert clf.score(out.obsm["X_umap"], truth) >= 0.7


def test_reference_embedded_by_scanpy(split):
    ref, query, _ = split
    sc_ref = ref.copy()
    sc.tl.umap(sc_ref, maxiter=50)  # uns['umap']['params'] holds only a and b
    out = tl.ingest(query, sc_ref, embedding_method="umap", inplace=False)
    assert out.obsm["X_umap"].shape == (query.n_obs, 2)
    assert np.isfinite(out.obsm["X_umap"]).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embedding_method": "largevis"}, r"adata_ref has no largevis embedding: .*\(obsm holds"),
        ({"obs": "cell_type"}, r"`obs='cell_type'` is not a column of adata_ref.obs"),
        ({"embedding_method": "tsnekhorn"}, r"cannot take new cells.*tl.tsne"),
        ({"embedding_method": "phate"}, r"`embedding_method` must be one of"),
        ({"labeling_method": "svm"}, r"`labeling_method` must be one of 'knn'"),
    ],
)
def test_bad_requests_leave_the_query_untouched(split, kwargs, match):
    ref, query, _ = split
    before = (set(query.obs), set(query.obsm), set(query.uns))
    with pytest.raises(ValueError, match=match):
        tl.ingest(query, ref, **kwargs)
    assert (set(query.obs), set(query.obsm), set(query.uns)) == before


def test_bad_inputs(split):
    ref, query, _ = split
    other = query[:, :700].copy()  # fewer genes than the reference
    with pytest.raises(ValueError, match=r"65 of the reference's 765 variables are not in"):
        tl.ingest(other, ref, embedding_method="pca")
    broken = query.copy()
    broken.X[:3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf values in 3 of 140 rows"):
        tl.ingest(broken, ref, embedding_method="umap")
    assert "X_umap" not in broken.obsm
    unknown = ref.copy()
    unknown.uns["umap"] = {"params": {"spread": 1.0}}
    with pytest.raises(ValueError, match=r"does not say how adata_ref.obsm\['X_umap'\] was made"):
        tl.ingest(query, unknown, embedding_method="umap")


def test_command_line_ingest(split, tmp_path):
    from torchdr_sc.cli.main import main

    ref, query, truth = split
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    out = tmp_path / "out.h5ad"
    args = ["ingest", str(tmp_path / "query.h5ad"), "--reference", str(tmp_path / "ref.h5ad")]
    assert main([*args, "--obs", LABEL, "--out", str(out)]) == 0
    back = ad.read_h5ad(out)
    assert back.obsm["X_umap"].shape == (query.n_obs, 2)
    assert _accuracy(back, truth) >= 0.7
    assert main([*args, "--obs", LABEL, "--out", str(out)]) == 2  # exists: --overwrite
    assert main([*args, "--obs", "cell_type", "--out", str(tmp_path / "o2.h5ad")]) == 2
    assert not (tmp_path / "o2.h5ad").exists()
