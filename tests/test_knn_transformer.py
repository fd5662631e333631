"""``KNNTransformer``: scikit-learn's transformer API with scanpy's ``n_neighbors`` (the sample
itself counted, not stored), inside scanpy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.neighbors import KNeighborsTransformer

from torchdr_sc.knn import KNNTransformer

# D = 16 and 10 neighbours: keops compiles one kernel per (metric, dimension, k) on first
# use; these are the shapes tests/test_knn.py compiles (self search k + 1 = query k = 11).
N, D, K = 500, 16, 10
METRICS = ("euclidean", "sqeuclidean", "cosine", "manhattan")


def _data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


def _rows(graph: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, data)`` of a graph with the same number of entries in every row."""
    per_row = np.diff(graph.indptr)
    assert (per_row == per_row[0]).all()
    shape = (graph.shape[0], int(per_row[0]))
    return graph.indices.reshape(shape), graph.data.reshape(shape)


def _assert_same_graph(ours: sp.csr_matrix, ref: sp.csr_matrix) -> None:
    """Same shape, nnz, neighbour set of every row, and distances."""
    assert isinstance(ours, sp.csr_matrix)
    assert ours.shape == ref.shape
    assert ours.nnz == ref.nnz
    assert ours.dtype == np.float64
    ind, dist = _rows(ours)
    ref_ind, ref_dist = _rows(ref)
    assert (np.diff(dist, axis=1) >= 0).all(), "rows not in increasing distance"
    order, ref_order = np.argsort(ind, axis=1), np.argsort(ref_ind, axis=1)
    np.testing.assert_array_equal(
        np.take_along_axis(ind, order, 1), np.take_along_axis(ref_ind, ref_order, 1)
    )
    np.testing.assert_allclose(
        np.take_along_axis(dist, order, 1),
        np.take_along_axis(ref_dist, ref_order, 1),
        rtol=1e-4,
        atol=1e-5,
    )


def _backends():
    yield "torch"
    yield pytest.param("faiss", marks=pytest.mark.skipif(not _importable("faiss"), reason="faiss"))
    yield pytest.param(
        "keops", marks=pytest.mark.skipif(not _importable("pykeops"), reason="pykeops")
    )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _without_self(graph: sp.csr_matrix) -> sp.csr_matrix:
    """scikit-learn's training graph with each sample's own entry removed."""
    coo = graph.tocoo()
    keep = coo.row != coo.col
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=graph.shape)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", list(_backends()))
def test_matches_sklearn(backend, metric):
    """``n_neighbors = K + 1`` (the sample counted): the K nearest other samples, as
    scikit-learn's ``n_neighbors = K`` graph without the sample itself."""
    X, Y = _data(N, 0), _data(40, 1)
    ours = KNNTransformer(n_neighbors=K + 1, backend=backend, metric=metric)
    ref = KNeighborsTransformer(n_neighbors=K, mode="distance", metric=metric)
    graph = ours.fit_transform(X)
    _assert_same_graph(graph, _without_self(ref.fit_transform(X)))
    assert graph.shape == (N, N)
    assert graph.nnz == N * K
    ind, _ = _rows(graph)
    assert (ind != np.arange(N)[:, None]).all()  # never itself
    assert (ours.n_samples_fit_, ours.n_features_in_) == (N, D)
    # new data: the K nearest training samples (scikit-learn stores n_neighbors + 1)
    query_ref = KNeighborsTransformer(n_neighbors=K - 1, mode="distance", metric=metric).fit(X)
    _assert_same_graph(ours.transform(Y), query_ref.transform(Y))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_connectivity_mode_matches_sklearn(metric):
    X, Y = _data(N, 0), _data(40, 1)
    ours = KNNTransformer(K + 1, mode="connectivity", metric=metric, backend="torch")
    ref = KNeighborsTransformer(n_neighbors=K + 1, mode="connectivity", metric=metric)
    graph = ours.fit_transform(X)
    _assert_same_graph(graph, _without_self(ref.fit_transform(X)))
    assert graph.nnz == N * K
    assert (graph.data == 1).all()
    query_ref = KNeighborsTransformer(n_neighbors=K, mode="connectivity", metric=metric).fit(X)
    _assert_same_graph(ours.transform(Y), query_ref.transform(Y))


def test_default_is_scanpys_fifteen():
    assert KNNTransformer().n_neighbors == 15
    graph = KNNTransformer(backend="torch").fit_transform(_data(100, 0))
    assert (np.diff(graph.indptr) == 14).all()


def test_scanpy_neighbors_leiden_umap():
    """Inside sc.pp.neighbors: the graph scanpy's own exact search stores (14 neighbours a row
    for n_neighbors=15, the cell itself not stored), and the same connectivities."""
    sc = pytest.importorskip("scanpy")
    adata = sc.datasets.pbmc68k_reduced()
    n = adata.n_obs
    exact = adata.copy()
    # scanpy ignores its own n_neighbors for a transformer instance: it reads ours
    sc.pp.neighbors(adata, n_neighbors=99, transformer=KNNTransformer(15, backend="torch"))
    sc.pp.neighbors(exact, n_neighbors=15, transformer="sklearn")
    assert adata.uns["neighbors"]["params"]["n_neighbors"] == 15
    ours, theirs = adata.obsp["distances"], exact.obsp["distances"]
    assert ours.nnz == theirs.nnz == n * 14
    _assert_same_graph(ours, sp.csr_matrix(theirs, dtype=np.float64))
    conn, ref_conn = adata.obsp["connectivities"], exact.obsp["connectivities"]
    assert conn.nnz == ref_conn.nnz
    np.testing.assert_allclose(conn.toarray(), ref_conn.toarray(), rtol=1e-4, atol=1e-6)
    pytest.importorskip("igraph")
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False)
    sc.tl.umap(adata, maxiter=20)
    assert adata.obs["leiden"].nunique() > 1
    assert adata.obsm["X_umap"].shape == (n, 2)
    assert np.isfinite(adata.obsm["X_umap"]).all()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"metric": "minkowski"}, r"`metric` must be one of 'cosine', 'euclidean', .*'minkowski'"),
        ({"backend": "foo"}, r"`backend` must be one of 'auto', 'faiss', 'keops', 'torch', None"),
        ({"mode": "weights"}, r"`mode` must be one of 'connectivity', 'distance'; got 'weights'"),
        ({"n_neighbors": 1}, r"`n_neighbors` must be an int in \[2, inf\); got 1"),
        ({"n_neighbors": 31}, r"n_neighbors \(31\) must be at most .* counts the sample itself"),
        ({"index": "hnsw"}, r"`index` must be one of 'auto', 'flat', 'ivf'; got 'hnsw'"),
        ({"backend": "torch", "nprobe": 4}, r"`nprobe` applies to index='ivf' only"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        KNNTransformer(**params).fit(_data(30, 0))


def test_bad_input():
    X = _data(30, 0)
    X[[3, 7]] = np.nan
    with pytest.raises(ValueError, match=r"`X` holds NaN or inf values in 2 of 30 rows"):
        KNNTransformer(backend="torch").fit_transform(X)
    fitted = KNNTransformer(backend="torch").fit(_data(30, 0))
    with pytest.raises(ValueError, match=r"`X` has 5 features, but KNNTransformer was fitted "):
        fitted.transform(np.zeros((4, 5), dtype=np.float32))
    fitted.set_params(n_neighbors=40)
    with pytest.raises(ValueError, match=r"n_neighbors \(40\) must be at most"):
        fitted.transform(_data(4, 1))


def test_clone_and_get_params_round_trip():
    t = KNNTransformer(
        7, mode="connectivity", metric="cosine", backend="torch", device="cpu", random_state=3
    )
    params = t.get_params()
    assert params == {
        "n_neighbors": 7,
        "mode": "connectivity",
        "metric": "cosine",
        "backend": "torch",
        "index": "auto",
        "nprobe": None,
        "device": "cpu",
        "random_state": 3,
    }
    t.fit(_data(50, 0))
    c = clone(t)
    assert c is not t
    assert c.get_params() == params
    assert not hasattr(c, "n_samples_fit_")
    assert KNNTransformer(**params).get_params() == params
    assert repr(c).startswith("KNNTransformer(")
    assert list(t.get_feature_names_out()[:2]) == ["knntransformer0", "knntransformer1"]
