"""Unit tests of the AnnData layer's helpers (no embedding is computed here)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from torchdr_sc._random import resolve_seed
from torchdr_sc.adata import cache as affinity_cache
from torchdr_sc.adata.changes import Changes, commit
from torchdr_sc.adata.representation import choose_representation, fingerprint
from torchdr_sc.adata.stored_graph import graph_keys, knn_for, read_graph
from torchdr_sc.adata.uns import to_uns
from torchdr_sc.affinity import SparseAffinity


def _adata(n: int = 40, d: int = 8, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    a = ad.AnnData(rng.normal(size=(n, d)).astype(np.float32))
    a.obsm["X_pca"] = rng.normal(size=(n, 5)).astype(np.float32)
    return a


# ---- params -------------------------------------------------------------------------


def test_to_uns_converts_what_anndata_cannot_write(tmp_path):
    params = {
        "none": None,
        "tuple": (1, 2),
        "strs": ["a", "b"],
        "mixed": [1, "a"],
        "tensor": torch.ones(2),
        "device": torch.device("cpu"),
        "cls": torch.optim.SGD,
        "nested": {1: 2.5, "x/y": np.float64(3)},
        "flag": True,
    }
    out = to_uns(params)
    assert "none" not in out
    np.testing.assert_array_equal(out["tuple"], [1, 2])
    assert out["mixed"] == "[1, 'a']"
    assert out["device"] == "cpu"
    assert out["cls"] == "torch.optim.sgd.SGD"
    assert out["nested"] == {"1": 2.5, "x_y": 3.0}
    a = _adata()
    a.uns["p"] = out
    a.write_h5ad(tmp_path / "p.h5ad")
    back = ad.read_h5ad(tmp_path / "p.h5ad").uns["p"]
    assert back["cls"] == "torch.optim.sgd.SGD"
    assert bool(back["flag"]) is True


def test_resolve_seed():
    assert resolve_seed(3) == 3
    assert resolve_seed(np.int64(4)) == 4
    rs1, rs2 = np.random.RandomState(0), np.random.RandomState(0)
    assert resolve_seed(rs1) == resolve_seed(rs2)
    assert 0 <= resolve_seed(None) < 2**31
    with pytest.raises(TypeError, match="`random_state` must be an int"):
        resolve_seed("seed")


# ---- representation -----------------------------------------------------------------


def test_choose_representation_rules():
    a = _adata(d=8)
    rep = choose_representation(a)
    assert rep.use_rep == "X"
    assert rep.data.dtype == np.float32
    big = ad.AnnData(np.zeros((10, 60), np.float32))
    big.obsm["X_pca"] = np.ones((10, 7))
    rep = choose_representation(big, n_pcs=3)
    assert rep.use_rep == "X_pca"
    assert rep.data.shape == (10, 3)
    assert rep.n_pcs == 3
    sparse = ad.AnnData(sp.random(10, 20, density=0.3, format="csr", dtype=np.float32))
    rep = choose_representation(sparse)
    assert isinstance(rep.data, np.ndarray)
    assert rep.data.shape == (10, 20)


def test_choose_representation_errors():
    a = _adata()
    a.obsm["X_umap"] = np.zeros((a.n_obs, 2))
    with pytest.raises(
        ValueError,
        match=r"`use_rep='X_scvi'` is not in adata.obsm \(available: 'X_pca', 'X_umap'\)\.",
    ):
        choose_representation(a, use_rep="X_scvi")
    big = ad.AnnData(np.zeros((10, 60), np.float32))
    with pytest.raises(ValueError, match=r"run `sc.pp.pca\(adata\)` first"):
        choose_representation(big)
    assert "X_pca" not in big.obsm  # no silent PCA
    with pytest.raises(ValueError, match="larger than the 5 columns"):
        choose_representation(a, use_rep="X_pca", n_pcs=6)
    a.obsm["X_pca"][3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf values in 1 of 40 rows"):
        choose_representation(a, use_rep="X_pca")
    with pytest.raises(TypeError, match="`use_rep` must be a str or None"):
        choose_representation(a, use_rep=3)


def test_fingerprint_sees_changes_subsets_and_order():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    fp = fingerprint(x)
    assert fingerprint(x.copy()) == fp
    y = x.copy()
    y[10, 2] += 1e-3
    assert fingerprint(y) != fp
    assert fingerprint(x[:49]) != fp
    assert fingerprint(x[::-1]) != fp
    assert fingerprint(sp.csr_matrix(x)) == fingerprint(sp.csr_matrix(x.copy()))


# ---- all-or-nothing writes -----------------------------------------------------------


class _Exploding(dict):
    def __setitem__(self, key, value):
        if key == "boom":
            raise KeyboardInterrupt
        super().__setitem__(key, value)


def test_commit_rolls_back_on_interrupt():
    a = _adata()
    a.uns["keep"] = {"x": 1}
    before_obsm, before_uns = set(a.obsm), dict(a.uns)
    changes = Changes()
    changes.add("obsm", "X_new", np.zeros((a.n_obs, 2), np.float32))
    changes.add("uns", "keep", {"x": 2})
    changes.add("uns", "boom", 1)
    a.uns = _Exploding(a.uns)
    with pytest.raises(KeyboardInterrupt):
        commit(a, changes)
    assert set(a.obsm) == before_obsm
    assert dict(a.uns) == before_uns


def test_commit_turns_a_view_into_an_actual_object_quietly(recwarn):
    a = _adata()
    v = a[:10]
    changes = Changes()
    changes.add("obsm", "X_new", np.zeros((10, 2), np.float32), "coordinates")
    commit(v, changes)
    assert not v.is_view
    assert "X_new" in v.obsm
    assert "X_new" not in a.obsm
    assert not [w for w in recwarn if "view" in str(w.message)]
    assert "'X_new', coordinates (adata.obsm)" in changes.summary()


# ---- cache -------------------------------------------------------------------------


def test_cache_slot_and_lookup():
    a = _adata()
    params = {"affinity": "EntropicAffinity", "perplexity": 30.0, "metric": "sqeuclidean"}
    slot = affinity_cache.make_slot(params, "X_pca", None, "abc", 40)
    assert slot.key.startswith("tdr_EntropicAffinity_")
    assert affinity_cache.make_slot(dict(params), "X_pca", None, "other", 40).key == slot.key
    assert (
        affinity_cache.make_slot({**params, "perplexity": 10.0}, "X_pca", None, "abc", 40).key
        != slot.key
    )
    assert affinity_cache.lookup(a, slot) is None
    P = SparseAffinity.from_scipy(sp.random(40, 40, density=0.1, format="csr", random_state=0))
    a.obsp[slot.key] = affinity_cache.to_obsp(P)
    a.uns[affinity_cache.UNS_KEY] = {slot.key: slot.description("0.1.0")}
    hit = affinity_cache.lookup(a, slot)
    assert hit is not None
    assert hit.nnz == P.nnz
    assert (
        affinity_cache.lookup(a, affinity_cache.make_slot(params, "X_pca", None, "changed", 40))
        is None
    )
    # a subset of cells keeps the (subset) matrix and the description, but never matches
    assert (
        affinity_cache.lookup(a[:20], affinity_cache.make_slot(params, "X_pca", None, "abc", 20))
        is None
    )


# ---- stored graphs -----------------------------------------------------------------


def test_graph_keys_follow_scanpy():
    assert graph_keys(None) == ("neighbors", "distances", "connectivities")
    assert graph_keys("nn") == ("nn", "nn_distances", "nn_connectivities")


def test_read_graph_errors_and_k_check():
    a = _adata()
    with pytest.raises(ValueError, match=r"`neighbors_key='nn'` is not in adata.uns"):
        read_graph(a, "nn")
    rows = np.repeat(np.arange(40), 4)
    cols = (rows + np.tile(np.arange(1, 5), 40)) % 40
    a.obsp["distances"] = sp.csr_matrix((np.full(160, 2.0), (rows, cols)), shape=(40, 40))
    a.uns["neighbors"] = {"params": {"n_neighbors": 5, "metric": "euclidean"}}
    graph = read_graph(a, "neighbors")
    assert graph.knn.k == 4
    knn = knn_for(graph, 3, "sqeuclidean", "tl.tsne with perplexity=1")
    assert knn.k == 3
    assert knn.metric == "sqeuclidean"
    assert torch.allclose(knn.distances, torch.full((40, 3), 4.0))
    with pytest.raises(
        ValueError, match=r"has k=4 neighbours per cell \(n_neighbors=5\) but .* needs k >= 90"
    ):
        knn_for(graph, 90, "sqeuclidean", "tl.tsne with perplexity=30")
    with pytest.raises(
        ValueError, match="uses metric 'euclidean' but the method uses metric_in='cosine'"
    ):
        knn_for(graph, 3, "cosine", "x")
