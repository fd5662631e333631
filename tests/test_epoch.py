"""The negative-sampling epoch: schedule, the negative sampler, fast power, its paths."""

import math

import numpy as np
import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.objective import epoch as epoch_mod
from torchdr_sc.objective.epoch import SampledEpoch, resolve_epoch_path
from torchdr_sc.objective.pairs import (
    _fast_exp2,
    _fast_log2,
    edge_negatives,
    hash_key,
    pair_terms,
)
from torchdr_sc.objective.sampled import EdgeSchedule, SampledKernel, scatter_pair_terms


def _random_affinity(n=60, k=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(n).repeat_interleave(k)
    cols = (rows + torch.randint(1, n, (n * k,), generator=gen)) % n
    weights = torch.rand(n * k, generator=gen)
    return SparseAffinity(rows, cols, weights, n)


def test_schedule_fires_each_edge_rate_times_per_epoch():
    P = _random_affinity()
    # int32 ids: the schedule holds P's own, so its masks follow P's edges (copies are sorted
    # by rate in blocks: tests/test_edge_schedule_sorted.py counts those per edge)
    P = SparseAffinity(P.rows.int(), P.cols.int(), P.weights, P.n)
    schedule = EdgeSchedule(P)
    assert schedule.sort_block is None
    n_epochs = 200
    counts = torch.zeros(P.rows.numel(), dtype=torch.int64)
    for t in range(n_epochs):
        counts += schedule.active_mask(t)
    rate = (P.weights / P.weights.max()).double()
    # floor((t + 1) r) - floor(t r) summed over t telescopes to floor(T r)
    expected = torch.floor(n_epochs * rate + 1e-6).long()
    assert torch.equal(counts, expected)
    assert math.isclose(schedule.mean_active, float(rate.sum()), rel_tol=1e-6)


def test_schedule_in_blocks_gives_the_same_active_edges(monkeypatch):
    from torchdr_sc.objective import sampled

    P = _random_affinity(n=200, k=9)
    schedule = EdgeSchedule(P)
    whole = [schedule.active(t) for t in range(20)]
    monkeypatch.setattr(sampled, "MASK_BLOCK", 97)  # many blocks, one partial
    for t, (heads, tails) in enumerate(whole):
        blocked = schedule.active(t)
        assert torch.equal(blocked[0], heads)
        assert torch.equal(blocked[1], tails)


def test_active_chunks_cut_the_active_edges_in_order(monkeypatch):
    from torchdr_sc.objective import sampled

    P = _random_affinity(n=500, k=9)
    schedule = EdgeSchedule(P)
    monkeypatch.setattr(sampled, "MASK_BLOCK", 97)  # chunks span several mask blocks
    for t in range(6):
        heads, tails = schedule.active(t)
        chunks = list(schedule.active_chunks(t, 50))
        assert [h.numel() for h, _ in chunks[:-1]] == [50] * (len(chunks) - 1)
        assert 0 < chunks[-1][0].numel() <= 50
        assert torch.equal(torch.cat([h for h, _ in chunks]), heads)
        assert torch.equal(torch.cat([t_ for _, t_ in chunks]), tails)


def _negatives(key, heads, tails, m, n, discard=False):
    return torch.stack(
        [edge_negatives(key, heads, tails, j, m, n, discard_tails=discard) for j in range(m)]
    )


def test_edge_negatives_are_uniform_and_keyed():
    n, A, m = 1000, 20_000, 5
    gen = torch.Generator().manual_seed(0)
    heads, tails = (
        torch.randint(0, n, (A,), generator=gen),
        torch.randint(0, n, (A,), generator=gen),
    )
    key = hash_key(7, 3, "cpu")
    negs = _negatives(key, heads, tails, m, n)
    assert negs.shape == (m, A)
    assert int(negs.min()) >= 0
    assert int(negs.max()) < n
    counts = torch.bincount(negs.reshape(-1), minlength=n).double()
    expected = A * m / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < n + 5 * math.sqrt(2 * n)  # chi-square with n - 1 dof, ~5 sigma
    assert torch.equal(negs, _negatives(key, heads, tails, m, n))
    other = _negatives(hash_key(7, 4, "cpu"), heads, tails, m, n)
    assert (other != negs).float().mean() > 0.99
    # consecutive edges and consecutive draws of one edge are not correlated
    x, y = negs[0, :-1].double(), negs[0, 1:].double()
    assert abs(float(torch.corrcoef(torch.stack([x, y]))[0, 1])) < 0.03
    x, y = negs[0].double(), negs[1].double()
    assert abs(float(torch.corrcoef(torch.stack([x, y]))[0, 1])) < 0.03


def test_an_edges_negatives_do_not_depend_on_the_other_edges():
    """The draw is a function of the edge, not of its position: any subset, order or int32
    form of the edges gets the same negatives (what makes chunks, shards and paths agree)."""
    n = 500
    gen = torch.Generator().manual_seed(1)
    heads, tails = (
        torch.randint(0, n, (3000,), generator=gen),
        torch.randint(0, n, (3000,), generator=gen),
    )
    key = hash_key(3, 9, "cpu")
    whole = _negatives(key, heads, tails, 4, n, discard=True)
    pick = torch.randperm(3000, generator=gen)[:700]
    part = _negatives(key, heads[pick].int(), tails[pick].int(), 4, n, discard=True)
    assert torch.equal(part, whole[:, pick])
    assert not bool((whole == tails).any())  # discard_tails never draws the tail


@pytest.mark.parametrize("b", [0.5, 0.79, 1.0, 1.5])
def test_fast_power_is_accurate(b):
    x = torch.logspace(-12, 8, 50_001, dtype=torch.float64)
    approx = _fast_exp2(_fast_log2(x.float()) * b).double()
    exact = x.pow(b)
    assert float(((approx - exact) / exact).abs().max()) < 5e-5


def test_resolve_epoch_path(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_epoch_path("auto", cpu) == "native"  # at every size: no work threshold
    assert resolve_epoch_path(True, cpu) == "compiled"
    assert resolve_epoch_path(False, cpu) == "eager"
    monkeypatch.setattr(epoch_mod, "triton_available", lambda device: False)
    assert resolve_epoch_path("auto", cuda) == "eager"
    assert resolve_epoch_path(True, cuda) == "compiled"


def test_compile_option_is_validated():
    with pytest.raises(ValueError, match="`compile` must be one of"):
        tdr.UMAP(compile="yes").fit_transform(np.random.default_rng(0).random((50, 4)))


@pytest.mark.parametrize(("kind", "a", "b"), [("umap", 1.58, 0.9), ("largevis", 1.0, 1.0)])
def test_epoch_is_its_pair_terms_with_the_edge_negatives(kind, a, b):
    """The epoch's gradient is pair_terms with edge_negatives, scattered in edge order."""
    P = _random_affinity(n=200, k=8)
    kernel = SampledKernel(kind, a=a, b=b, repulsion=1.0, clip=4.0)
    epoch = SampledEpoch(P, kernel, 5, seed=11, compile=False, discard_tails=True)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(2)) * 3
    got = epoch.gradient(z, 4, exaggeration=2.0)
    heads, tails = epoch.schedule.active(4)
    negs = _negatives(hash_key(11, 4, "cpu"), heads, tails, 5, 200, discard=True)
    consts = torch.tensor([a, b, 1.0, 4.0, 2.0])
    g_att, g_head = pair_terms(list(z.unbind(1)), heads, tails, negs, consts, epoch.kind)
    expected = scatter_pair_terms(z, heads, tails, g_att, g_head)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["umap", "largevis"])
def test_the_chunks_of_an_epoch_change_no_bit(kind, monkeypatch):
    """CPU epochs run in chunks of active edges (bounded buffers): the negatives depend on
    the edge only, so any chunk size gives the same gradient."""
    P = _random_affinity(n=200, k=8)
    kernel = SampledKernel(kind, a=1.58, b=0.9, repulsion=1.0, clip=4.0)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(3)) * 3
    whole = SampledEpoch(P, kernel, 5, seed=11).gradient(z, 6)
    monkeypatch.setattr(epoch_mod, "CPU_CHUNK_EDGES", 101)  # several chunks, one partial
    epoch = SampledEpoch(P, kernel, 5, seed=11)
    assert epoch.schedule.active(6)[0].numel() > 3 * 101
    assert torch.equal(epoch.gradient(z, 6), whole)


def test_failed_compilation_falls_back_unless_forced(monkeypatch, caplog):
    def broken():
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(epoch_mod, "compiled_pair_terms", broken)
    P = _random_affinity()
    kernel = SampledKernel("umap", a=1.58, b=0.9)
    z = torch.randn(60, 2)
    expected = SampledEpoch(P, kernel, 5, seed=0, compile=False).gradient(z, 0)
    fallback = SampledEpoch(P, kernel, 5, seed=0, compile=True)
    fallback._must_compile = False  # as when a compiler fails on a path the user did not force
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        grad = fallback.gradient(z, 0)
    assert fallback.path == "eager"
    assert torch.equal(grad, expected)  # the fallback gives the same numbers
    assert "running the epoch eagerly" in caplog.text
    forced = SampledEpoch(P, kernel, 5, seed=0, compile=True)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        forced.gradient(z, 0)
