"""torch's IVF index on CPU, probed per query and scanned list by list with a shrinking
bound (``knn.probed_ivf``): recall, exactness limits, queries, short cells, determinism."""

from __future__ import annotations

import pytest
import torch
from test_knn import _gmm  # the clustered test data of the other IVF tests
from test_knn_torch_ivf import _recall

from torchdr_sc.knn import knn
from torchdr_sc.knn.probed_ivf import default_nprobe, probed_ivf_select
from torchdr_sc.knn.torch_ivf import default_nlist, ivf_select


def test_recall_above_faiss_level_and_graph_invariants():
    n, k = 20_000, 15
    X = _gmm(n, 50, 30)
    nlist = default_nlist(n)
    assert (nlist, default_nprobe(nlist)) == (141, 8)
    exact = knn(X, k, backend="torch")
    approx = knn(X, k, backend="torch", index="ivf")
    assert _recall(approx.indices, exact.indices) >= 0.95
    assert not (approx.indices == torch.arange(n)[:, None]).any()
    assert torch.all(torch.diff(approx.distances, dim=1) >= 0)
    assert all(len(set(row)) == k for row in approx.indices[:500].tolist())
    # more cells visited: more true neighbours found
    low = knn(X, k, backend="torch", index="ivf", nprobe=2)
    assert _recall(low.indices, exact.indices) < _recall(approx.indices, exact.indices)


@pytest.mark.parametrize("largest", [False, True])
def test_visiting_every_cell_is_exact(largest):
    X = _gmm(3000, 16, 8, seed=1)
    if largest:
        X = torch.nn.functional.normalize(X, dim=1)
    nlist = default_nlist(3000)
    found = probed_ivf_select(X, X, 10, largest=largest, self_search=True, nprobe=nlist)
    score = X @ X.T if largest else -torch.cdist(X, X).square()
    score.fill_diagonal_(float("-inf"))
    expected = score.topk(10, 1).values
    torch.testing.assert_close(score.gather(1, found), expected, rtol=1e-4, atol=1e-4)


def test_separate_queries_and_crowded_rows():
    """Queries that are not the data; a bound still infinite at rank 1 (cells smaller than
    k) sends whole rows through the crowded-row path, and rows never filled are searched
    exactly."""
    data = _gmm(4300, 16, 10, seed=2)
    X, Q = data[:4000], data[4000:]
    exact = knn(X, 40, backend="torch", query=Q)
    found = probed_ivf_select(X, Q, 40, largest=False, self_search=False, nlist=400, nprobe=2)
    assert found.shape == (300, 40)
    assert _recall(found, exact.indices) >= 0.6
    # every row holds 40 distinct points, best first, whatever the cells held
    assert all(len(set(row)) == 40 for row in found.tolist())
    d = (Q[:, None, :] - X[found]).square().sum(-1)
    assert torch.all(torch.diff(d, dim=1) >= -1e-4)


def test_seeded_and_deterministic():
    X = _gmm(5000, 16, 10, seed=3)
    a = probed_ivf_select(
        X, X, 10, largest=False, self_search=True, generator=torch.Generator().manual_seed(1)
    )
    b = probed_ivf_select(
        X, X, 10, largest=False, self_search=True, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a, b)


def test_gpu_layout_search_still_tested_on_cpu():
    """The per-cell search (the CUDA path of ``index='ivf'``) called directly."""
    X = _gmm(5000, 16, 10, seed=4)
    exact = knn(X, 10, backend="torch")
    found = ivf_select(X, X, 10, largest=False, self_search=True)
    assert _recall(found, exact.indices) >= 0.95
