"""Input affinities: calibration properties, reference parity and errors (float64)."""

from __future__ import annotations

import math
from contextlib import ExitStack
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from torchdr_sc.affinity import (
    DoublyStochasticQuadraticAffinity,
    EntropicAffinity,
    NormalizedGaussianAffinity,
    SinkhornAffinity,
    SparseAffinity,
    SymmetricEntropicAffinity,
    UMAPAffinity,
    log_sinkhorn_potentials,
)
from torchdr_sc.affinity.root_search import root_search
from torchdr_sc.knn import KNNGraph

DT = torch.float64


# -- helpers --------------------------------------------------------------------------------


def exact_graph(x: torch.Tensor, k: int, metric: str = "sqeuclidean") -> KNNGraph:
    """Brute-force kNN graph (self excluded, rows sorted), independent of the package."""
    d = torch.cdist(x, x).square() if metric == "sqeuclidean" else torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    vals, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
    return KNNGraph(idx, vals, metric)


def row_entropy(P: torch.Tensor | SparseAffinity) -> torch.Tensor:
    """Shannon entropy (nats) of every row."""
    if isinstance(P, SparseAffinity):
        w = P.weights
        terms = torch.where(w > 0, -w * torch.log(w), torch.zeros_like(w))
        return torch.zeros(P.n, dtype=w.dtype, device=w.device).index_add_(0, P.rows, terms)
    return torch.where(P > 0, -P * torch.log(P), torch.zeros_like(P)).sum(1)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.as_tensor(load_digits().data, dtype=DT)


@pytest.fixture(scope="module")
def umap_interpreted():
    """umap-learn's own calibration code run by the interpreter (no numba compilation).

    ``smooth_knn_dist`` and ``compute_membership_strengths`` are numba functions compiled
    on first call (tens of seconds); their ``py_func`` is the same source run in Python.
    """
    umap_ = pytest.importorskip("umap.umap_")
    with ExitStack() as stack:
        for name in ("smooth_knn_dist", "compute_membership_strengths"):
            func = getattr(umap_, name)
            stack.enter_context(mock.patch.object(umap_, name, func.py_func))
        yield umap_


# -- shared root search ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_root_search_cubes_and_out_of_reach_rows(dtype):
    target = torch.tensor([-8.0, 0.5, 27.0, 1e9], dtype=dtype)

    def cube(x, rows):
        return x**3, 3 * x**2

    res = root_search(cube, target, -10.0, 10.0, n=4, like=target, increasing=True, tol=1e-5)
    assert torch.isfinite(res.x).all()
    torch.testing.assert_close(res.x[:3] ** 3, target[:3], atol=1e-4, rtol=0)
    assert abs(float(res.x[3]) - 10.0) < 1e-4  # root outside the bracket: ends at the bound
    assert res.n_unconverged == 1


# -- entropic affinity ----------------------------------------------------------------------


def test_entropic_sparse_rows_on_digits(digits):
    aff = EntropicAffinity(perplexity=30)
    graph = exact_graph(digits, aff.required_k(digits.shape[0]))
    assert graph.k == 90
    P = aff.from_knn(graph)
    assert P.nnz == digits.shape[0] * 90
    assert torch.all(P.rows[1:] >= P.rows[:-1])  # CSR order
    torch.testing.assert_close(P.row_sums(), torch.ones(P.n, dtype=DT), atol=1e-6, rtol=0)
    assert (row_entropy(P) - math.log(30)).abs().max() < 1e-3
    assert aff.n_iter_ < 50


def test_entropic_dense_rows_and_sklearn_exact_parity(digits):
    x = digits[:400]
    P = EntropicAffinity(perplexity=20, sparsity=False)(x)
    assert P.shape == (400, 400)
    assert P.dtype == DT
    assert torch.all(P.diagonal() == 0)
    torch.testing.assert_close(P.sum(1), torch.ones(400, dtype=DT), atol=1e-6, rtol=0)
    assert (row_entropy(P) - math.log(20)).abs().max() < 1e-3
    # sklearn's exact (all pairs) t-SNE P: condensed (P + P^T) / (2n)
    from scipy.spatial.distance import squareform
    from sklearn.manifold._t_sne import _joint_probabilities

    ref = squareform(_joint_probabilities(torch.cdist(x, x).square().numpy(), 20.0, 0))
    ours = ((P + P.T) / 800).numpy()
    assert np.abs(ours - ref).max() < 1e-4 * ref.max()


def test_entropic_call_routes_through_knn_and_float32(digits):
    x = digits[:300].to(torch.float32).numpy()
    P = EntropicAffinity(perplexity=10)(x)
    assert isinstance(P, SparseAffinity)
    assert P.weights.dtype == torch.float32
    assert P.nnz == 300 * 30
    assert (P.row_sums() - 1).abs().max() < 1e-5
    assert (row_entropy(P.to(dtype=DT)).cpu() - math.log(10)).abs().max() < 1e-3


def _degenerate_data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(80, 5, generator=gen, dtype=DT)
    dup = torch.cat([base, base[:3].repeat(12, 1)])  # 3 points with 13 copies each
    const = base.clone()
    const[:, 2] = 7.0
    return {
        "duplicates": dup,
        "constant_column": const,
        "identical": torch.ones(50, 4, dtype=DT),
        "huge_scale": base * 1e15,
        "tiny_scale": base * 1e-15,
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(_degenerate_data()))
@pytest.mark.parametrize("sparsity", [True, False])
def test_entropic_degenerate_data_no_nan(case, dtype, sparsity):
    x = _degenerate_data()[case].to(dtype)
    P = EntropicAffinity(perplexity=5, sparsity=sparsity)(x)
    P = P.to_dense() if sparsity else P
    assert torch.isfinite(P).all()
    assert (P.sum(1) - 1).abs().max() < 1e-5
    H = row_entropy(P.to(DT))
    if case == "identical":  # every neighbour at distance 0: uniform rows
        k = 15 if sparsity else 49
        torch.testing.assert_close(H, torch.full_like(H, math.log(k)))
    elif case == "duplicates":  # rows with 12 duplicates: uniform over them (> perplexity)
        dup_rows = torch.cat([H[:3], H[80:]])
        torch.testing.assert_close(dup_rows, torch.full_like(dup_rows, math.log(12)))
        assert (H[3:80] - math.log(5)).abs().max() < 1e-3
    else:
        assert (H - math.log(5)).abs().max() < 1e-3


def test_tsne_joint_p_matches_sklearn(digits):
    from sklearn.manifold._t_sne import _joint_probabilities_nn

    n = digits.shape[0]
    graph = exact_graph(digits, 90)
    ref = _joint_probabilities_nn(sp.csr_matrix(graph.to_scipy().astype(np.float64)), 30.0, 0)
    ours = EntropicAffinity(30).from_knn(graph).symmetrize("mean").scaled(1.0 / n)
    diff = abs(ours.to_scipy(np.float64) - sp.csr_matrix(ref)).max()
    # sklearn stops its bisection at |H - log(perp)| <= 1e-5 on float32 distances.
    assert diff < 1e-4 * ref.max()


def test_tsne_joint_p_matches_opentsne(digits):
    affinity = pytest.importorskip("openTSNE.affinity")
    x = digits.numpy()
    ref = affinity.PerplexityBasedNN(x, perplexity=30, method="exact", n_jobs=1)
    indices, distances = ref.knn_index.build()  # euclidean distances, k = 90
    graph = KNNGraph(torch.as_tensor(indices), torch.as_tensor(distances, dtype=DT), "euclidean")
    ours = EntropicAffinity(30).from_knn(graph).symmetrize("mean").scaled(1.0 / x.shape[0])
    P = ref.P.tocsr()
    assert ours.nnz == P.nnz
    assert abs(ours.to_scipy(np.float64) - P).max() < 1e-4 * P.max()


# -- symmetric entropic (SNEkhorn) ----------------------------------------------------------


def test_symmetric_entropic_rows_entropies_symmetry(digits):
    aff = SymmetricEntropicAffinity(perplexity=30, tol=1e-5)
    P = aff(digits[:300])
    assert P.dtype == DT
    assert torch.all(P.diagonal() == 0)
    assert torch.equal(P, P.T)
    assert (P.sum(1) - 1).abs().max() < 1e-3
    H = row_entropy(P)
    assert H.min() > math.log(30) - 1e-3
    assert ((H - math.log(30)).abs() < 1e-3).float().mean() > 0.9  # saturated rows
    assert aff.n_iter_ < 50


def test_symmetric_entropic_float32_input():
    x = torch.randn(150, 8, generator=torch.Generator().manual_seed(1))
    P = SymmetricEntropicAffinity(perplexity=10)(x)
    assert P.dtype == torch.float32
    assert torch.equal(P, P.T)
    assert (P.sum(1) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("eps_square", [True, False])
def test_symmetric_entropic_first_order_dual_ascent_improves(digits, eps_square):
    x = digits[:80]
    P0 = SymmetricEntropicAffinity(perplexity=10, optimizer="Adam", max_iter=0)(x)
    P = SymmetricEntropicAffinity(
        perplexity=10, optimizer="Adam", eps_square=eps_square, lr=0.05, max_iter=100
    )(x)
    assert torch.equal(P, P.T)
    assert (P.sum(1) - 1).abs().max() < 0.1 * (P0.sum(1) - 1).abs().max()


# -- doubly stochastic affinities -----------------------------------------------------------


@pytest.mark.parametrize(
    ("base_kernel", "eps"), [("gaussian", 0.2), ("gaussian", 1.0), ("student", 1.0)]
)
def test_sinkhorn_marginals(digits, base_kernel, eps):
    # eps=0.2: Sinkhorn alone converges too slowly, the Newton polish finishes the job
    x = digits[:200] / digits.std()
    P = SinkhornAffinity(eps, base_kernel=base_kernel, tol=1e-6)(x)
    assert torch.equal(P, P.T)
    assert torch.all(P.diagonal() == 0)
    torch.testing.assert_close(P.sum(1), torch.ones(200, dtype=DT), atol=1e-5, rtol=0)


def test_log_sinkhorn_potentials_student_kernel_and_warm_start():
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(200, 2, generator=gen, dtype=DT)

    def log_kernel(z):
        log_k = -torch.log1p(torch.cdist(z, z).square())
        return log_k.fill_diagonal_(float("-inf"))

    log_k = log_kernel(z)
    f = log_sinkhorn_potentials(log_k, None, n_iter=1000, tol=1e-9)
    Q = torch.exp(f[:, None] + f[None, :] + log_k)
    torch.testing.assert_close(Q.sum(1), torch.ones(200, dtype=DT), atol=1e-8, rtol=0)
    # one optimiser step later: a warm start is far closer after a few iterations
    log_k2 = log_kernel(z + 0.01 * torch.randn(200, 2, generator=gen, dtype=DT))

    def err(f):
        return (torch.exp(f[:, None] + f[None, :] + log_k2).sum(1) - 1).abs().max()

    warm = log_sinkhorn_potentials(log_k2, f, n_iter=5, tol=0.0)
    cold = log_sinkhorn_potentials(log_k2, None, n_iter=5, tol=0.0)
    assert err(warm) < 0.1 * err(cold)
    assert err(warm) < err(f)


def test_doubly_stochastic_quadratic_is_sparse_and_doubly_stochastic(digits):
    x = digits[:300] / digits.std()
    P = DoublyStochasticQuadraticAffinity(eps=10.0, tol=1e-7)(x)
    assert torch.equal(P, P.T)
    assert torch.all(P.diagonal() == 0)
    assert torch.all(P >= 0)
    torch.testing.assert_close(P.sum(1), torch.ones(300, dtype=DT), atol=1e-6, rtol=0)
    assert (P > 0).float().mean() < 0.1


@pytest.mark.parametrize("dim", [(0, 1), 0, 1, None])
def test_normalized_gaussian(digits, dim):
    x = digits[:100]
    sigma = 500.0
    P = NormalizedGaussianAffinity(sigma, normalization_dim=dim)(x)
    K = torch.exp(-torch.cdist(x, x).square() / sigma).fill_diagonal_(0.0)
    expected = K if dim is None else K / K.sum(dim=dim, keepdim=True)
    torch.testing.assert_close(P, expected)
    Ps = NormalizedGaussianAffinity(sigma, normalization_dim=dim).from_knn(exact_graph(x, 99))
    torch.testing.assert_close(Ps.to_dense(), expected)


# -- UMAP -----------------------------------------------------------------------------------


def test_umap_rows_solve_the_calibration_equation(digits):
    graph = exact_graph(digits, 14, "euclidean")
    P = UMAPAffinity(n_neighbors=15, symmetrize=False, tol=1e-8).from_knn(graph)
    # sum_j exp(-max(d_ij - rho_i, 0) / sigma_i) = log2(15) on every row
    torch.testing.assert_close(P.row_sums(), torch.full((P.n,), math.log2(15), dtype=DT))
    assert P.weights.max() == 1.0  # the nearest non-zero neighbour has weight 1


def test_umap_matches_umap_learn(digits, umap_interpreted):
    x = digits.numpy()
    graph = exact_graph(digits, 14, "euclidean")
    n = x.shape[0]
    knn_indices = np.concatenate([np.arange(n)[:, None], graph.indices.numpy()], axis=1)
    knn_dists = np.concatenate([np.zeros((n, 1)), graph.distances.numpy()], axis=1)
    sq = KNNGraph(graph.indices, graph.distances.square(), "sqeuclidean")
    for kwargs in ({}, {"set_op_mix_ratio": 0.3, "local_connectivity": 1.5}):
        ref, _, _ = umap_interpreted.fuzzy_simplicial_set(
            x, 15, None, "euclidean", knn_indices=knn_indices, knn_dists=knn_dists, **kwargs
        )
        ref = ref.tocsr()
        for g in (graph, sq):  # a squared-distance graph gives the same fuzzy set
            ours = UMAPAffinity(15, **kwargs).from_knn(g).to_scipy(np.float64)
            assert ours.nnz == ref.nnz
            assert abs(ours - ref).max() < 1e-4


def test_umap_matches_scanpy_connectivities(umap_interpreted):
    sc = pytest.importorskip("scanpy")
    adata = sc.datasets.pbmc68k_reduced()
    sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca", method="umap")
    ref = adata.obsp["connectivities"]
    P = UMAPAffinity(n_neighbors=15)(adata.obsm["X_pca"])  # float32 input, our kNN
    assert P.nnz == ref.nnz
    assert abs(P.to_scipy(np.float64) - ref).max() < 1e-4
    dense = UMAPAffinity(n_neighbors=15, sparsity=False)(adata.obsm["X_pca"])
    assert abs(dense.cpu().numpy().astype(np.float64) - ref.toarray()).max() < 1e-4


# -- errors and round trip ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 0, float("inf")])
def test_error_perplexity_not_positive(bad):
    with pytest.raises(ValueError, match=r"`perplexity` must be a float in \(0, inf\)"):
        EntropicAffinity(perplexity=bad)
    with pytest.raises(ValueError, match=r"`perplexity` must be a float in \(0, inf\)"):
        SymmetricEntropicAffinity(perplexity=bad)


def test_error_perplexity_too_large():
    x = torch.randn(60, 3)
    msg = r"perplexity \(100\) must be smaller than the number of samples \(60\)\."
    for sparsity in (True, False):
        with pytest.raises(ValueError, match=msg):
            EntropicAffinity(perplexity=100, sparsity=sparsity)(x)
    with pytest.raises(ValueError, match=msg):
        SymmetricEntropicAffinity(perplexity=100)(x)
    with pytest.raises(ValueError, match=r"number of neighbours in the kNN graph \(10\)"):
        EntropicAffinity(perplexity=30).from_knn(exact_graph(x.double(), 10))


def test_error_messages_for_options():
    with pytest.raises(ValueError, match=r"`n_neighbors` must be an int in \[2, inf\); got 1"):
        UMAPAffinity(n_neighbors=1)
    with pytest.raises(ValueError, match=r"`metric` must be one of 'cosine', 'euclidean', "):
        EntropicAffinity(metric="chebyshev")
    with pytest.raises(ValueError, match=r"`base_kernel` must be one of 'gaussian', 'student'"):
        SinkhornAffinity(base_kernel="laplace")
    with pytest.raises(ValueError, match=r"`base_kernel` must be one of"):
        DoublyStochasticQuadraticAffinity(base_kernel="laplace")
    for bad in (2, (0, 2), "rows", True):
        with pytest.raises(ValueError, match=r"`normalization_dim` must be one of \(0, 1\), 0"):
            NormalizedGaussianAffinity(normalization_dim=bad)
    with pytest.raises(ValueError, match=r"`backend` must be one of"):
        UMAPAffinity(backend="annoy")
    with pytest.raises(ValueError, match=r"holds 'cosine' distances"):
        EntropicAffinity(perplexity=1).from_knn(
            KNNGraph(torch.zeros(5, 2).long(), torch.ones(5, 2), "cosine")
        )


def test_sparse_affinity_scipy_round_trip(digits):
    P = UMAPAffinity(15).from_knn(exact_graph(digits, 14, "euclidean"))
    back = SparseAffinity.from_scipy(P.to_scipy(np.float64), dtype=DT)
    assert back.n == P.n
    assert torch.equal(back.rows, P.rows)
    assert torch.equal(back.cols, P.cols)
    assert torch.equal(back.weights, P.weights)
    E = EntropicAffinity(30).from_knn(exact_graph(digits[:200], 90))
    back = SparseAffinity.from_scipy(E.to_scipy(np.float64), dtype=DT)
    assert torch.equal(back.to_dense(), E.to_dense())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_affinities_on_cuda(digits):
    x = digits[:500].cuda()
    for dtype in (torch.float32, torch.float64):
        P = EntropicAffinity(30)(x.to(dtype))
        assert P.device.type == "cuda"
        assert (P.row_sums() - 1).abs().max() < 1e-4
        U = UMAPAffinity(15)(x.to(dtype))
        assert U.device.type == "cuda"
        assert torch.isfinite(U.weights).all()
        S = SymmetricEntropicAffinity(30)(x.to(dtype))
        assert (S.sum(1) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("cls", [SinkhornAffinity, DoublyStochasticQuadraticAffinity])
def test_doubly_stochastic_affinities_share_parameter_checks(cls):
    with pytest.raises(ValueError, match=r"`tol` must be a float in \(0, inf\); got 0"):
        cls(tol=0)
    with pytest.raises(ValueError, match=r"`eps` must be a float in \(0, inf\)"):
        cls(eps=-1.0)
    with pytest.raises(ValueError, match=r"`base_kernel` must be one of 'gaussian', 'student'"):
        cls(base_kernel="cauchy")
    with pytest.raises(ValueError, match=r"`max_iter` must be an int in \[1, inf\)"):
        cls(max_iter=0)


@pytest.mark.parametrize("mode", ["fuzzy_union", "sum", "mean"])
def test_knn_symmetrisation_matches_the_sorting_one(digits, mode):
    from torchdr_sc.affinity.knn_union import symmetrize_knn
    from torchdr_sc.knn import knn

    graph = knn(digits.float(), 15, backend="torch")
    g = torch.Generator().manual_seed(0)
    w = torch.rand(graph.indices.shape, generator=g)
    w[:, -3:] = torch.where(w[:, -3:] > 0.5, w[:, -3:], 0.0)  # some zero weights too
    ours = symmetrize_knn(graph.indices, w, mode)
    ref = SparseAffinity.from_knn(graph.indices, w).symmetrize(mode)
    assert ours.nnz == ref.nnz
    assert torch.all(torch.diff(ours.rows) >= 0)  # rows sorted
    diff = ours.to_scipy(np.float64) - ref.to_scipy(np.float64)
    assert abs(diff).max() == 0  # the same arithmetic, entry for entry
    assert bool((ours.weights > 0).all())


@pytest.mark.parametrize("mode", ["fuzzy_union", "sum", "mean"])
@pytest.mark.parametrize("block", [2**18, 1000])
def test_compact_knn_symmetrisation_has_the_entries_of_the_sorting_one(
    digits, mode, block, monkeypatch
):
    from torchdr_sc.affinity import knn_union
    from torchdr_sc.knn import knn

    monkeypatch.setattr(knn_union, "SEARCH_BLOCK", block)  # 1000: many blocks of rows
    graph = knn(digits.float(), 40, backend="torch")
    g = torch.Generator().manual_seed(0)
    w = torch.rand(graph.indices.shape, generator=g)
    w[:, -3:] = torch.where(w[:, -3:] > 0.5, w[:, -3:], 0.0)  # some zero weights too
    shuffled = torch.randperm(40, generator=g)  # neighbour lists in any order
    ours = knn_union.symmetrize_knn_compact(graph.indices[:, shuffled], w[:, shuffled], mode)
    ref = SparseAffinity.from_knn(graph.indices, w).symmetrize(mode)
    assert ours.rows.dtype == ours.cols.dtype == torch.int32
    assert ours.nnz == ref.nnz  # no duplicate entry
    assert torch.all(torch.diff(ours.rows) >= 0)  # rows grouped, in order
    diff = ours.to_scipy(np.float64) - ref.to_scipy(np.float64)
    assert abs(diff).max() == 0  # the same arithmetic, entry for entry
    assert bool((ours.weights > 0).all())


@pytest.mark.parametrize("block", [1000, 2**18])
def test_compact_union_in_csr_order_is_the_sorting_union_bit_for_bit(digits, block, monkeypatch):
    """UMAP's P: the compact union then each row sorted equals symmetrize_knn exactly (the
    same entries, bits, order and int64 ids) in less memory."""
    from torchdr_sc.affinity import knn_union
    from torchdr_sc.knn import knn

    monkeypatch.setattr(knn_union, "SEARCH_BLOCK", block)  # 1000: many blocks of rows
    graph = knn(digits.float(), 14, backend="torch")
    w = torch.rand(graph.indices.shape, generator=torch.Generator().manual_seed(0))
    w[:, -2:] = torch.where(w[:, -2:] > 0.5, w[:, -2:], 0.0)  # some zero weights too
    lists = list(knn_union.sorted_neighbour_lists(graph.indices, w))
    ours = knn_union.in_csr_order(knn_union.symmetrize_sorted_knn(lists, "fuzzy_union"))
    ref = knn_union.symmetrize_knn(graph.indices, w, "fuzzy_union")
    for got, want in zip(
        (ours.rows, ours.cols, ours.weights), (ref.rows, ref.cols, ref.weights), strict=True
    ):
        assert got.dtype == want.dtype
        assert torch.equal(got, want)


def test_umap_affinity_uses_the_lean_symmetrisation(digits):
    x = digits.float()
    P = UMAPAffinity(n_neighbors=15)(x)
    mixed = UMAPAffinity(n_neighbors=15, set_op_mix_ratio=1.0 - 1e-12)(x)  # sorting path
    assert abs(P.to_scipy(np.float64) - mixed.to_scipy(np.float64)).max() < 1e-6
    assert abs(P.to_scipy(np.float64) - P.to_scipy(np.float64).T).max() == 0
