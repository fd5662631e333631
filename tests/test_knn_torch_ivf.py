"""torch's IVF index (``backend='torch', index='ivf'``): recall, exactness limits, 'auto'.

Runs on the CPU here; on a CUDA machine the same code is what ``backend='auto'`` uses above
``AUTO_CUDA_EXACT_MAX_SAMPLES`` samples when faiss has no GPU support.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from test_knn import _gmm  # the clustered test data of the faiss IVF tests

from torchdr_sc.knn import AUTO_CUDA_EXACT_MAX_SAMPLES, auto_backend, drop_self, knn
from torchdr_sc.knn.torch_ivf import (
    GROUP,
    default_nlist,
    default_nprobe,
    grouped_topk,
)


def _recall(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return (approx[:, :, None] == exact[:, None, :]).any(-1).float().mean().item()


def test_recall_on_clustered_data_and_graph_invariants():
    n, k = 20_000, 15
    X = _gmm(n, 50, 30)
    nlist = default_nlist(n)
    assert (nlist, default_nprobe(nlist)) == (141, 16)
    exact = knn(X, k, backend="torch")
    approx = knn(X, k, backend="torch", index="ivf")
    assert _recall(approx.indices, exact.indices) >= 0.97
    assert not (approx.indices == torch.arange(n)[:, None]).any()
    assert torch.all(torch.diff(approx.distances, dim=1) >= 0)
    assert all(len(set(row)) == k for row in approx.indices[:500].tolist())  # no repeats
    # distances are exact for the neighbours found
    d = (X[:, None, :] - X[approx.indices]).square().sum(-1)
    torch.testing.assert_close(approx.distances, d, rtol=1e-4, atol=1e-4)
    # fewer cells probed: fewer true neighbours found
    low = knn(X, k, backend="torch", index="ivf", nprobe=2)
    assert _recall(low.indices, exact.indices) < _recall(approx.indices, exact.indices)


def test_probing_every_cell_is_exact():
    X = _gmm(3000, 16, 8, seed=1)
    nlist = default_nlist(3000)
    exact = knn(X, 10, backend="torch")
    full = knn(X, 10, backend="torch", index="ivf", nprobe=nlist)
    torch.testing.assert_close(full.distances, exact.distances)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
def test_metrics_and_queries(metric):
    data = _gmm(4300, 16, 10, seed=2)  # queries from the same mixture as the data
    X, Q = data[:4000], data[4000:]
    exact = knn(X, 10, backend="torch", metric=metric)
    approx = knn(X, 10, backend="torch", metric=metric, index="ivf")
    assert _recall(approx.indices, exact.indices) >= 0.95
    exact_q = knn(X, 10, backend="torch", metric=metric, query=Q)
    approx_q = knn(X, 10, backend="torch", metric=metric, query=Q, index="ivf")
    assert _recall(approx_q.indices, exact_q.indices) >= 0.95


def test_deterministic_and_seeded():
    X = _gmm(3000, 8, 6)
    a = knn(X, 5, backend="torch", index="ivf")
    b = knn(X, 5, backend="torch", index="ivf")
    assert torch.equal(a.indices, b.indices)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    c = knn(X, 5, backend="torch", index="ivf", generator=g1)
    d = knn(X, 5, backend="torch", index="ivf", generator=g2)
    assert torch.equal(c.indices, d.indices)


def test_small_cells_probe_enough_points_for_k():
    X = _gmm(2000, 8, 5)  # 44 cells of ~45 points: one probed cell cannot hold 100
    graph = knn(X, 100, backend="torch", index="ivf", nprobe=1)
    assert graph.indices.min() >= 0
    assert not (graph.indices == torch.arange(2000)[:, None]).any()
    assert all(len(set(row)) == 100 for row in graph.indices[:200].tolist())


def test_duplicates_never_return_the_row_itself():
    X = torch.cat([torch.zeros(50, 4), _gmm(1950, 4, 3)])  # 50 identical rows
    graph = knn(X, 5, backend="torch", index="ivf")
    assert not (graph.indices == torch.arange(2000)[:, None]).any()
    assert torch.all(graph.distances[:50] == 0)


def test_drop_self_removes_one_entry_per_row():
    found = torch.tensor([[[3, 1, 2], [7, 8, 9]]])
    q_ids = torch.tensor([[1, 5]])
    out = drop_self(found, query_ids=q_ids)
    assert out.tolist() == [[[3, 2], [7, 8]]]  # row 1 has no self: its farthest goes


def test_auto_picks_torch_ivf_on_large_cuda_data_without_faiss_gpu(monkeypatch, caplog):
    import torchdr_sc.knn.registry as pkg

    monkeypatch.setattr(pkg, "faiss_has_gpu", lambda: False)
    cuda = torch.device("cuda")
    big, small = AUTO_CUDA_EXACT_MAX_SAMPLES + 1, AUTO_CUDA_EXACT_MAX_SAMPLES
    assert auto_backend(big, cuda, "sqeuclidean")[:2] == ("torch", "ivf")
    assert auto_backend(small, cuda, "sqeuclidean")[:2] == ("torch", "flat")
    assert auto_backend(big, cuda, "manhattan")[:2] == ("torch", "flat")
    monkeypatch.setitem(pkg.BACKENDS, "faiss", replace(pkg.BACKENDS["faiss"], require=_missing))
    assert auto_backend(10**6, torch.device("cpu"), "cosine")[:2] == ("torch", "ivf")
    with caplog.at_level(logging.INFO, logger="torchdr_sc"):
        X = _gmm(600, 8, 4)
        monkeypatch.setattr(pkg, "AUTO_TORCH_MAX_SAMPLES", 500)
        graph = knn(X, 5)
    assert "600 samples > 500 on CPU: torch IVF" in caplog.text
    assert graph.indices.shape == (600, 5)


def _missing() -> None:
    raise ImportError("faiss is not installed (test)")


@pytest.mark.parametrize("largest", [False, True])
def test_grouped_topk_selects_the_same_values_as_topk(largest):
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 7, 40 * GROUP, generator=g)
    pos = grouped_topk(scores, 9, largest=largest, sorted=True)
    ref = torch.topk(scores, 9, dim=-1, largest=largest, sorted=True)
    torch.testing.assert_close(torch.gather(scores, -1, pos), ref.values, rtol=0, atol=0)
    assert torch.equal(pos, ref.indices)  # distinct values: the same positions
    short = scores[..., : 2 * GROUP]  # too few groups: plain topk
    torch.testing.assert_close(
        torch.gather(short, -1, grouped_topk(short, 9, largest=largest, sorted=True)),
        torch.topk(short, 9, dim=-1, largest=largest).values,
    )
