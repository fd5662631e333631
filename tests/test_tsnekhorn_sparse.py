"""TSNEkhorn beyond the dense limit: sparse symmetric entropic affinity, FFT Sinkhorn."""

import math
import types

import numpy as np
import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.affinity import SparseAffinity, SymmetricEntropicAffinity, symmetric_entropic
from torchdr_sc.knn import KNNGraph, knn
from torchdr_sc.objective import tsnekhorn as tsnekhorn_gradient
from torchdr_sc.objective.interpolated_weighted import (
    CauchyGrid,
    sinkhorn_potentials_fft,
    weighted_cauchy_sums,
)
from torchdr_sc.quality import knn_label_accuracy


def _all_pairs_graph(x: torch.Tensor) -> KNNGraph:
    d = torch.cdist(x, x).square().fill_diagonal_(float("inf"))
    dist, idx = torch.sort(d, dim=1)
    n = x.shape[0]
    return KNNGraph(idx[:, : n - 1], dist[:, : n - 1], "sqeuclidean")


def test_sparse_affinity_equals_dense_on_all_pairs(monkeypatch):
    # the dense solver's floor on the entropy multipliers (the sparse default is relative)
    monkeypatch.setattr(symmetric_entropic, "_SPARSE_GAMMA_FLOOR", 0.0)
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    aff = SymmetricEntropicAffinity(perplexity=20)  # 3 * perplexity >= n - 1: all pairs
    dense = aff.from_distances(torch.cdist(x, x).square())
    sparse = aff.from_knn(_all_pairs_graph(x))
    assert sparse.nnz == 60 * 59
    torch.testing.assert_close(sparse.to_dense(), dense, atol=1e-6, rtol=0)


def test_sparse_affinity_is_symmetric_stochastic_and_calibrated(blobs):
    x = torch.as_tensor(blobs[0], dtype=torch.float64)
    perplexity = 15.0
    aff = SymmetricEntropicAffinity(perplexity=perplexity, tol=1e-6)
    P = aff.from_knn(knn(x, 45, backend="torch"))
    dense = P.to_dense()
    torch.testing.assert_close(dense, dense.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        P.row_sums(), torch.ones(300, dtype=torch.float64), atol=1e-5, rtol=0
    )
    w = P.weights
    entropy = torch.zeros(300, dtype=torch.float64).index_add_(0, P.rows, -w * (w.log() - 1))
    gap = entropy - (math.log(perplexity) + 1)
    assert float(gap.min()) > -1e-5  # every row reaches the target entropy
    assert float((gap.abs() < 1e-5).double().mean()) > 0.9  # and most sit on it


@pytest.mark.parametrize("squared", [False, True])
def test_weighted_fft_sums_match_exact(squared):
    gen = torch.Generator().manual_seed(1)
    z = 4.0 * torch.randn(1000, 2, generator=gen, dtype=torch.float64)
    charges = torch.rand(1000, 3, generator=gen, dtype=torch.float64)
    kernel = 1.0 / (1.0 + torch.cdist(z, z).square())
    exact = (kernel.square() if squared else kernel) @ charges
    approx = weighted_cauchy_sums(z, charges, squared=squared)
    err = (approx - exact).norm(dim=0) / exact.norm(dim=0)
    assert float(err.max()) < 1e-2


def test_fft_sinkhorn_and_gradient_match_dense():
    gen = torch.Generator().manual_seed(2)
    n = 500
    z = 3.0 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    log_k = (-torch.log1p(torch.cdist(z, z).square())).fill_diagonal_(float("-inf"))
    f_exact = tdr.affinity.log_sinkhorn_potentials(log_k, None, 200, 0.0)
    f_fft = sinkhorn_potentials_fft(CauchyGrid(z), None, 200)
    assert float((f_fft - f_exact).abs().max()) < 1e-2
    a = (torch.rand(n, n, generator=gen, dtype=torch.float64) > 0.95).double()
    a = a + a.T
    P = SparseAffinity.from_dense(a / a.sum(1, keepdim=True))
    phase = types.SimpleNamespace(exaggeration=2.0)
    g_fft = tsnekhorn_gradient.fft_gradient(P, n, 200, {}, compile=False)(z, 0, phase)
    g_exact = tsnekhorn_gradient.dense_gradient(P, z, 200)(z, 0, phase)
    assert float((g_fft - g_exact).norm() / g_exact.norm()) < 1e-2


def test_tsnekhorn_fft_on_digits(digits):
    x, labels = digits
    est = tdr.TSNEkhorn(repulsion="fft", random_state=0)
    z = est.fit_transform(x)
    assert est.repulsion_used_ == "fft"
    assert est.knn_ is not None  # P came from the kNN graph
    acc = knn_label_accuracy(z, labels)
    print(f"digits: TSNEkhorn (kNN + FFT) {acc:.4f}")
    assert acc >= 0.95


def test_fft_needs_one_or_two_components():
    with pytest.raises(ValueError, match=r"repulsion='fft' supports n_components 1 or 2; got 3"):
        tdr.TSNEkhorn(repulsion="fft", n_components=3).fit_transform(np.zeros((50, 4)))


def test_dense_limit_names_the_alternatives():
    tdr.TSNEkhorn().check_n_samples(100_000)  # 'auto' -> kNN + FFT: no limit
    with pytest.raises(ValueError, match=r"repulsion='exact'.*at most 15000.*repulsion='fft'"):
        tdr.TSNEkhorn(repulsion="exact").check_n_samples(20_000)
    with pytest.raises(ValueError, match=r"n_components=3.*at most 15000"):
        tdr.TSNEkhorn(n_components=3).check_n_samples(20_000)
    with pytest.raises(ValueError, match=r"at most 50,000,000 kNN edges.*Lower `perplexity`"):
        tdr.TSNEkhorn().check_n_samples(1_000_000)


def test_exact_repulsion_needs_the_data(blobs):
    graph = knn(torch.as_tensor(blobs[0]), 30, backend="torch")
    with pytest.raises(ValueError, match=r"pass `X`, or use repulsion='fft'"):
        tdr.TSNEkhorn(repulsion="exact", perplexity=10, init="random").fit_transform(knn=graph)
    z = tdr.TSNEkhorn(repulsion="fft", perplexity=10, init="random", max_iter=20)
    assert z.fit_transform(knn=graph).shape == (300, 2)
