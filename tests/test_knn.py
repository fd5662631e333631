"""kNN backends: exactness against scipy, IVF recall, self exclusion, errors, 'auto'.

KeOps compiles one kernel per (formula, dtype, dimension, k), 5-20 s each: the exactness,
duplicate and query tests share D features and K = k + 1 = QUERY_K searched neighbours, and
float64 is checked for the L2 formula only, so that the file compiles 4 kernels (cached on
disk by KeOps after the first run).
"""

from __future__ import annotations

import importlib
import logging
import sys

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from torchdr_sc.knn import (
    BACKENDS,
    METRICS,
    KNNGraph,
    available_backends,
    knn,
    register_backend,
    resolve_backend,
)
from torchdr_sc.knn.faiss_search import default_nlist, default_nprobe

N, D, K = 300, 16, 10
QUERY_K = K + 1  # same keops kernel as the self search (which searches k + 1)
KEOPS_F32_ONLY = ("cosine", "manhattan")  # float64 keops kernels tested for the L2 metrics
SCIPY_METRIC = {
    "sqeuclidean": "sqeuclidean",
    "euclidean": "euclidean",
    "cosine": "cosine",
    "manhattan": "cityblock",
}
TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-5}, torch.float64: {"rtol": 1e-6, "atol": 1e-9}}


def _need(backend: str) -> None:
    if backend == "faiss":
        pytest.importorskip("faiss")
    elif backend == "keops":
        pytest.importorskip("pykeops")


def _data(n: int = N, d: int = D, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)


def _gmm(n: int, d: int, n_clusters: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(n_clusters, d, generator=g)
    labels = torch.randint(0, n_clusters, (n,), generator=g)
    return centers[labels] + torch.randn(n, d, generator=g)


def _check_against(graph: KNNGraph, ref: np.ndarray, k: int, dtype: torch.dtype) -> None:
    """Compare with a dense reference distance matrix (self already masked with inf)."""
    dist = graph.distances.cpu().numpy()
    ind = graph.indices.cpu().numpy()
    assert graph.indices.dtype == torch.int64
    assert graph.distances.dtype == dtype
    assert np.all(np.diff(dist, axis=1) >= 0), "rows not sorted"
    assert np.all(dist >= 0)
    order = np.argsort(ref, axis=1, kind="stable")
    ref_sorted = np.take_along_axis(ref, order, axis=1)
    np.testing.assert_allclose(dist, ref_sorted[:, :k], **TOL[dtype])
    # the distances we report are those of the indices we report
    np.testing.assert_allclose(dist, np.take_along_axis(ref, ind, axis=1), **TOL[dtype])
    # same neighbour sets where the k-th and (k+1)-th reference distances are not tied
    gap = ref_sorted[:, k] - ref_sorted[:, k - 1]
    clear = gap > 1e-5 * np.maximum(1.0, np.abs(ref_sorted[:, k]))
    assert clear.mean() > 0.9
    for i in np.flatnonzero(clear):
        assert set(ind[i]) == set(order[i, :k])


def _cases():
    for backend in ("torch", "faiss", "keops"):
        for dtype in (torch.float32, torch.float64):
            for metric in METRICS:
                if backend == "keops" and dtype == torch.float64 and metric in KEOPS_F32_ONLY:
                    continue  # compile time: one float64 kernel (shared by both L2 metrics)
                yield pytest.param(backend, metric, dtype, id=f"{backend}-{metric}-{dtype}")


@pytest.mark.parametrize(("backend", "metric", "dtype"), list(_cases()))
def test_exact_backends_match_scipy(backend, metric, dtype):
    _need(backend)
    X = _data(dtype=dtype)
    kwargs = {"index": "flat"} if backend == "faiss" else {}
    graph = knn(X, K, backend=backend, metric=metric, **kwargs)
    ref = cdist(X.double().numpy(), X.double().numpy(), SCIPY_METRIC[metric])
    np.fill_diagonal(ref, np.inf)
    assert graph.indices.shape == (N, K)
    assert not (graph.indices == torch.arange(N)[:, None]).any()
    _check_against(graph, ref, K, dtype)


@pytest.mark.parametrize("backend", ["torch", "faiss", "keops"])
def test_query_mode(backend):
    _need(backend)
    X, Y = _data(), _data(n=40, seed=1)
    graph = knn(X, QUERY_K, backend=backend, query=Y)
    ref = cdist(Y.double().numpy(), X.double().numpy(), "sqeuclidean")
    assert graph.indices.shape == (40, QUERY_K)
    _check_against(graph, ref, QUERY_K, torch.float32)
    # searching X itself: no self exclusion in query mode
    own = knn(X, QUERY_K, backend=backend, query=X.clone())
    assert torch.equal(own.indices[:, 0], torch.arange(N))
    assert torch.all(own.distances[:, 0] == 0)


@pytest.mark.parametrize("backend", ["torch", "faiss", "keops"])
def test_self_excluded_with_exact_duplicates(backend):
    _need(backend)
    X = _data()
    X[:30] = X[0]  # 30 copies of one row (more than k + 1)
    X[30:33] = X[30]  # 3 copies of another
    graph = knn(X, K, backend=backend)
    assert not (graph.indices == torch.arange(N)[:, None]).any()
    assert torch.all(torch.diff(graph.distances, dim=1) >= 0)
    # the 29 other copies of row 0 are all at distance 0: any K of them
    assert torch.all(graph.distances[:30] == 0)
    assert torch.all(graph.indices[:30] < 30)
    for i in range(30, 33):
        assert set(graph.indices[i, :2].tolist()) == {30, 31, 32} - {i}
        assert torch.all(graph.distances[i, :2] == 0)
        assert graph.distances[i, 2] > 0


def test_torch_blocks_match_single_block(monkeypatch):
    torch_backend = importlib.import_module("torchdr_sc.knn.torch_search")
    X = _data(n=257)
    whole = knn(X, 7, backend="torch", metric="sqeuclidean")
    # force ~5 query rows per block
    monkeypatch.setattr(torch_backend, "rows_per_block", lambda *args: 5)
    blocked = knn(X, 7, backend="torch", metric="sqeuclidean")
    assert torch.equal(whole.indices, blocked.indices)
    assert torch.equal(whole.distances, blocked.distances)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_exact_far_from_origin(backend):
    # data far from the origin: ||x||^2 + ||y||^2 - 2 x.y alone loses all precision here
    _need(backend)
    X = _data(n=200, d=8) + 1e4
    graph = knn(X, 5, backend=backend, **({"index": "flat"} if backend == "faiss" else {}))
    ref = cdist(X.double().numpy(), X.double().numpy(), "sqeuclidean")
    np.fill_diagonal(ref, np.inf)
    _check_against(graph, ref, 5, torch.float32)
    assert torch.all(graph.distances > 0)


def test_faiss_ivf_recall_on_clustered_data():
    pytest.importorskip("faiss")
    n, k = 20_000, 15
    X = _gmm(n, 50, 30)
    nlist = default_nlist(n)
    assert (nlist, default_nprobe(nlist)) == (141, 8)
    exact = knn(X, k, backend="torch")
    approx = knn(X, k, backend="faiss", index="ivf")
    hits = (approx.indices[:, :, None] == exact.indices[:, None, :]).any(-1)
    recall = hits.float().mean().item()
    assert recall >= 0.95, recall
    assert not (approx.indices == torch.arange(n)[:, None]).any()
    assert torch.all(torch.diff(approx.distances, dim=1) >= 0)


def test_faiss_ivf_deterministic_and_fills_short_rows():
    pytest.importorskip("faiss")
    X = _gmm(2000, 8, 5)
    a = knn(X, 100, backend="faiss", index="ivf", nprobe=1)  # lists hold < 100 points
    b = knn(X, 100, backend="faiss", index="ivf", nprobe=1)
    assert torch.equal(a.indices, b.indices)
    assert a.indices.min() >= 0
    assert not (a.indices == torch.arange(2000)[:, None]).any()
    assert torch.all(torch.diff(a.distances, dim=1) >= 0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    c = knn(X, 5, backend="faiss", index="ivf", generator=g1)
    d = knn(X, 5, backend="faiss", index="ivf", generator=g2)
    assert torch.equal(c.indices, d.indices)


def test_faiss_ivf_cosine():
    pytest.importorskip("faiss")
    X = _gmm(3000, 16, 10)
    exact = knn(X, 10, backend="torch", metric="cosine")
    approx = knn(X, 10, backend="faiss", metric="cosine", index="ivf")
    hits = (approx.indices[:, :, None] == exact.indices[:, None, :]).any(-1)
    assert hits.float().mean() >= 0.95


def test_float64_and_generic_registry():
    seen = {}

    def fake(X, k, **kwargs):
        seen.update(kwargs)
        return BACKENDS["torch"](X, k, **kwargs)

    record = register_backend("fake_sq", fake, metrics=("sqeuclidean",))
    try:
        X = _data(n=50, dtype=torch.float64)
        graph = knn(X, 3, backend="fake_sq")
        assert graph.distances.dtype == torch.float64
        assert seen["metric"] == "sqeuclidean"
        assert "fake_sq" in available_backends()
        assert record(X, 3).k == 3
        with pytest.raises(ValueError, match=r"backend='fake_sq' does not support metric='cosine'"):
            knn(X, 3, backend="fake_sq", metric="cosine")
    finally:
        del BACKENDS["fake_sq"]


# ---------------------------------------------------------------- errors


def test_unknown_backend_and_metric():
    X = _data(n=20)
    with pytest.raises(
        ValueError,
        match=r"`backend` must be one of 'auto', 'faiss', 'keops', 'torch', None; got 'foo'\.",
    ):
        knn(X, 3, backend="foo")
    with pytest.raises(ValueError, match=r"`metric` must be one of 'cosine', .*; got 'l3'\."):
        knn(X, 3, metric="l3")
    with pytest.raises(ValueError, match=r"`index` must be one of 'auto', 'flat', 'ivf'"):
        knn(X, 3, index="hnsw")


def test_k_out_of_range():
    X = _data(n=20)
    with pytest.raises(
        ValueError, match=r"k \(30\) must be smaller than the number of samples \(20\)\."
    ):
        knn(X, 30)
    with pytest.raises(ValueError, match=r"k \(20\) must be smaller"):
        knn(X, 20)
    with pytest.raises(ValueError, match=r"`k` must be an int in \[1, inf\); got 0\."):
        knn(X, 0)
    with pytest.raises(TypeError, match=r"`k` must be an int"):
        knn(X, 2.5)
    with pytest.raises(ValueError, match=r"k \(21\) must be at most the number of samples \(20\)"):
        knn(X, 21, query=X[:3])
    assert knn(X, 20, query=X[:3]).k == 20


def test_bad_inputs():
    X = _data(n=20)
    with pytest.raises(ValueError, match=r"`query` has 3 features but `X` has 16"):
        knn(X, 3, query=X[:, :3])
    with pytest.raises(TypeError, match=r"`X` must be a 2-D floating-point torch.Tensor"):
        knn(X.numpy(), 3)
    with pytest.raises(ValueError, match=r"`nprobe` applies to index='ivf' only"):
        knn(X, 3, backend=None, nprobe=4)
    with pytest.raises(ValueError, match=r"index='ivf' does not support metric='manhattan'"):
        knn(X, 3, backend="torch", index="ivf", metric="manhattan")


def test_metric_unsupported_by_faiss_ivf():
    pytest.importorskip("faiss")
    X = _data(n=100)
    with pytest.raises(
        ValueError,
        match=r"IVF index does not support metric='manhattan'; use index='flat', "
        r"or backend='keops' or 'torch'",
    ):
        knn(X, 3, backend="faiss", metric="manhattan", index="ivf")


@pytest.mark.parametrize(
    ("backend", "module", "extra"), [("faiss", "faiss", "faiss"), ("keops", "pykeops", "keops")]
)
def test_missing_package(monkeypatch, backend, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, f"{module}.torch", None)
    X = _data(n=20)
    expected = (
        rf"backend='{backend}' needs the {module} package: "
        rf'pip install "torchdr-sc\[{extra}\]", or use backend=\'torch\'\.'
    )
    with pytest.raises(ImportError, match=expected):
        knn(X, 3, backend=backend)
    with pytest.raises(ImportError, match=expected):
        resolve_backend(backend, n=20, device="cpu", metric="sqeuclidean")
    assert backend not in available_backends()
    if backend == "faiss":  # 'auto' falls back to torch when faiss is missing
        assert resolve_backend("auto", n=100_000, device="cpu", metric="cosine") == "torch"


# ---------------------------------------------------------------- auto


def test_auto_resolution(caplog):
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="torchdr_sc"):
        assert resolve_backend("auto", n=1000, device=cpu, metric="sqeuclidean") == "torch"
    assert "kNN backend: 'torch' (auto:" in caplog.text
    assert resolve_backend(None, n=1000, device=cpu, metric="cosine") == "torch"
    assert resolve_backend("torch", n=10**6, device=cpu, metric="cosine") == "torch"
    assert resolve_backend("auto", n=10**6, device=cpu, metric="manhattan") == "torch"
    # above AUTO_TORCH_MAX_SAMPLES, torch's IVF whatever is installed and whatever k
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="torchdr_sc"):
        assert resolve_backend("auto", n=100_000, device=cpu, metric="cosine") == "torch"
    assert "torch IVF" in caplog.text


def test_auto_large_cpu_uses_torch_ivf_for_many_neighbours_too(monkeypatch, caplog):
    """The t-SNE family's 90 neighbours: torch's IVF (it was faiss's, at a lower recall)."""
    knn_module = importlib.import_module("torchdr_sc.knn.registry")  # where the auto rule reads it
    monkeypatch.setattr(knn_module, "AUTO_TORCH_MAX_SAMPLES", 500)
    X = _gmm(1000, 8, 5)
    with caplog.at_level(logging.INFO, logger="torchdr_sc"):
        graph = knn(X, 90)
    assert "kNN backend: 'torch' (auto: 1000 samples > 500 on CPU: torch IVF)" in caplog.text
    exact = knn(X, 90, backend="torch")
    hits = (graph.indices[:, :, None] == exact.indices[:, None, :]).any(-1)
    assert hits.float().mean() >= 0.95


def test_auto_large_cpu_uses_torch_ivf_for_few_neighbours(monkeypatch, caplog):
    knn_module = importlib.import_module("torchdr_sc.knn.registry")
    monkeypatch.setattr(knn_module, "AUTO_TORCH_MAX_SAMPLES", 500)
    X = _gmm(1000, 8, 5)
    with caplog.at_level(logging.INFO, logger="torchdr_sc"):
        graph = knn(X, 15)
    assert "kNN backend: 'torch' (auto: 1000 samples > 500 on CPU: torch IVF)" in caplog.text
    exact = knn(X, 15, backend="torch")
    hits = (graph.indices[:, :, None] == exact.indices[:, None, :]).any(-1)
    assert hits.float().mean() >= 0.95


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["torch", "faiss", "keops"])
def test_cuda_results_stay_on_device(backend):
    _need(backend)
    X = _data().cuda()
    graph = knn(X, K, backend=backend)
    ref = knn(X.cpu(), K, backend="torch")
    assert graph.indices.device == X.device
    assert graph.distances.device == X.device
    torch.testing.assert_close(graph.distances.cpu(), ref.distances, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_duplicated_rows_do_not_make_hubs(backend):
    """Ties between copies of one row are spread over the copies by every backend: without
    it every copy chose the same few cells (in-degree ~ the number of copies)."""
    if backend == "faiss":
        pytest.importorskip("faiss")
    from torchdr_sc.knn import knn

    rng = np.random.default_rng(0)
    x = np.concatenate([np.ones((200, 8)), rng.normal(size=(20, 8))]).astype(np.float32)
    graph = knn(torch.as_tensor(x), 15, backend=backend)
    in_degree = torch.bincount(graph.indices.reshape(-1), minlength=len(x))
    assert int(in_degree[:200].max()) <= 3 * 15, int(in_degree[:200].max())
    assert bool((graph.indices != torch.arange(len(x))[:, None]).all())  # never itself
    assert float(graph.distances[:200, :14].max()) == 0.0  # still exact: copies first
