"""torch's IVF index on CPU, probed per query and scanned list by list with a shrinking
bound (``knn.probed_ivf``): recall, exactness limits, queries, short cells, determinism."""

from __future__ import annotations

import pytest
import torch
from test_knn import _gmm  # the clustered test data of the other IVF tests
from test_knn_torch_ivf import _recall

from torchdr_sc.knn import knn, probed_ivf
from torchdr_sc.knn.probed_ivf import default_nlist, default_nprobe, probed_ivf_select
from torchdr_sc.knn.torch_ivf import ivf_select


def test_recall_above_faiss_level_and_graph_invariants():
    n, k = 20_000, 15
    X = _gmm(n, 50, 30)
    nlist = default_nlist(n)
    assert (nlist, default_nprobe(nlist, k)) == (71, 8)
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


def test_defaults_grow_with_n_and_k():
    assert [default_nlist(n) for n in (200_000, 1_000_000)] == [224, 500]
    assert [default_nprobe(500, k) for k in (15, 90)] == [11, 16]
    assert default_nprobe(10, 15) == 8  # at least 8
    assert [default_nprobe(158, k) for k in (15, 90)] == [8, 16]  # 16 for many neighbours
    assert default_nprobe(5, 90) == 5  # at most nlist


@pytest.mark.parametrize("queries", [7, 300])
def test_group_filter_finds_exactly_the_entries_under_the_bound(queries):
    gen = torch.Generator().manual_seed(0)
    points = 5 * 16
    cost_t = torch.randn(points, queries, generator=gen)
    cost_t[-9:] = float("inf")  # padding rows of a cell
    bound = torch.randn(queries, generator=gen) - 1.0
    query, point = probed_ivf._below(cost_t, bound)
    assert torch.all(torch.diff(query) >= 0)  # grouped by query, as the merge expects
    expected = (cost_t < bound[None, :]).T.nonzero()
    got = sorted(zip(query.tolist(), point.tolist(), strict=True))
    assert got == sorted(map(tuple, expected.tolist()))


def test_slots_keep_the_cheapest_k_of_a_crowded_query():
    query = torch.tensor([4, 4, 4, 4, 4, 1, 7, 7])
    cost = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 8.0, 0.5])
    run, slot, crowded = probed_ivf._slots(query, cost, 3)
    assert crowded
    assert run.tolist() == [0, 0, 0, 0, 0, 1, 2, 2]
    kept = sorted(cost[:5][slot[:5] < 3].tolist())
    assert kept == [1.0, 2.0, 3.0]
    assert sorted(slot[:5].tolist()) == [0, 1, 2, 3, 4]
    assert slot[5:].tolist() == [0, 0, 1]  # short runs keep their order
    assert probed_ivf._slots(query[5:], cost[5:], 3)[2] is False


def test_small_merge_blocks_and_short_row_blocks_give_the_same_neighbours(monkeypatch):
    """Merging after every tile, in blocks of 3 queries, and the exact search of short rows
    in blocks of one row change nothing (cells of ~10 points leave rows short at k=40)."""
    data = _gmm(2400, 16, 10, seed=5)
    X, Q = data[:2000], data[2000:]
    reference = probed_ivf_select(X, Q, 40, largest=False, self_search=False, nlist=200, nprobe=3)
    monkeypatch.setattr(probed_ivf, "MERGE_ENTRIES", 1)
    monkeypatch.setattr(probed_ivf, "MERGE_ROWS", 3)
    monkeypatch.setattr(probed_ivf, "SHORT_ROW_ENTRIES", 1)
    found = probed_ivf_select(X, Q, 40, largest=False, self_search=False, nlist=200, nprobe=3)
    d_ref = (Q[:, None, :] - X[reference]).square().sum(-1)
    d = (Q[:, None, :] - X[found]).square().sum(-1)
    torch.testing.assert_close(d, d_ref)
