"""The negative-sampling epoch: schedule, hashed negatives, fast power, compiled vs eager."""

import math

import numpy as np
import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.objective import epoch as epoch_mod
from torchdr_sc.objective.epoch import SampledEpoch, resolve_compile
from torchdr_sc.objective.pairs import (
    _fast_exp2,
    _fast_log2,
    hash_key,
    hashed_negatives,
    negative_key,
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


def test_hashed_negatives_are_uniform_and_keyed():
    n, A, m = 1000, 20_000, 5
    key = torch.tensor(negative_key(7, 3))
    negs = hashed_negatives(key, A, m, n)
    assert negs.shape == (m, A)
    assert int(negs.min()) >= 0
    assert int(negs.max()) < n
    counts = torch.bincount(negs.reshape(-1), minlength=n).double()
    expected = A * m / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < n + 5 * math.sqrt(2 * n)  # chi-square with n - 1 dof, ~5 sigma
    assert torch.equal(negs, hashed_negatives(key, A, m, n))
    # the compiled epoch's form of the key draws the same negatives
    assert torch.equal(negs, hashed_negatives(hash_key(7, 3, "cpu"), A, m, n))
    other = hashed_negatives(torch.tensor(negative_key(7, 4)), A, m, n)
    assert (other != negs).float().mean() > 0.99
    # consecutive edges are not correlated
    x, y = negs[0, :-1].double(), negs[0, 1:].double()
    assert abs(float(torch.corrcoef(torch.stack([x, y]))[0, 1])) < 0.03


@pytest.mark.parametrize("b", [0.5, 0.79, 1.0, 1.5])
def test_fast_power_is_accurate(b):
    x = torch.logspace(-12, 8, 50_001, dtype=torch.float64)
    approx = _fast_exp2(_fast_log2(x.float()) * b).double()
    exact = x.pow(b)
    assert float(((approx - exact) / exact).abs().max()) < 5e-5


def test_resolve_compile():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_compile("auto", cpu, epoch_mod.COMPILE_MIN_WORK) is True
    assert resolve_compile("auto", cpu, epoch_mod.COMPILE_MIN_WORK - 1) is False
    assert resolve_compile("auto", cuda, 1e12) is False
    assert resolve_compile(True, cpu, 1.0) is True
    assert resolve_compile(False, cpu, 1e12) is False


def test_compile_option_is_validated():
    with pytest.raises(ValueError, match="`compile` must be one of"):
        tdr.UMAP(compile="yes").fit_transform(np.random.default_rng(0).random((50, 4)))


@pytest.mark.parametrize(
    ("kind", "a", "b"), [("umap", 1.58, 0.9), ("largevis", 1.0, 1.0), ("infonce", 1.0, 1.0)]
)
def test_compiled_epoch_matches_eager_arithmetic(kind, a, b):
    P = _random_affinity(n=200, k=8)
    kernel = SampledKernel(kind, a=a, b=b, repulsion=1.0, clip=4.0)
    epoch = SampledEpoch(P, kernel, 5, seed=11, compile=True)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(2)) * 3
    got = epoch.gradient(z, 4, exaggeration=2.0)
    assert epoch.compiled
    # eager recomputation with the same hashed negatives
    heads, tails = epoch.schedule.active(4)
    negs = hashed_negatives(torch.tensor(negative_key(11, 4)), heads.numel(), 5, 200)
    consts = torch.tensor([a, b, 1.0, 4.0, 2.0])
    coords = list(z.T.contiguous())
    g_att, g_head = pair_terms(coords, heads, tails, negs, consts, epoch.kind)
    expected = scatter_pair_terms(z, heads, tails, g_att, g_head)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", ["umap", "infonce"])
def test_compiled_epoch_in_blocks_sums_blocks_with_their_own_keys(kind, monkeypatch):
    """CPU epochs run in blocks of active edges (bounded buffers); each block draws its
    negatives with its own key, block 0 with the epoch's."""
    monkeypatch.setattr(epoch_mod, "CPU_CHUNK_EDGES", 101)  # several blocks, one partial
    P = _random_affinity(n=200, k=8)
    kernel = SampledKernel(kind, a=1.58, b=0.9, repulsion=1.0, clip=4.0)
    epoch = SampledEpoch(P, kernel, 5, seed=11, compile=True)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(3)) * 3
    got = epoch.gradient(z, 6)
    heads, tails = epoch.schedule.active(6)
    assert heads.numel() > 3 * 101
    consts = torch.tensor([1.58, 0.9, 1.0, 4.0, 1.0])
    coords = list(z.T.contiguous())
    expected = torch.zeros_like(z)
    for chunk, start in enumerate(range(0, heads.numel(), 101)):
        h, t = heads[start : start + 101], tails[start : start + 101]
        key = hash_key(11, 6, "cpu", chunk)
        negs = hashed_negatives(key, h.numel(), 5, 200)
        g_att, g_head = pair_terms(coords, h, t, negs, consts, epoch.kind)
        expected += scatter_pair_terms(z, h, t, g_att, g_head)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)
    assert negative_key(11, 6, 0) == negative_key(11, 6)
    assert len({negative_key(11, 6, c) for c in range(50)}) == 50


def test_failed_compilation_falls_back_in_auto_mode_only(monkeypatch, caplog):
    def broken():
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(epoch_mod, "compiled_pair_terms", broken)
    P = _random_affinity()
    kernel = SampledKernel("umap", a=1.58, b=0.9)
    z = torch.randn(60, 2)
    auto = SampledEpoch(P, kernel, 5, seed=0, compile="auto")
    auto.compiled = True  # as if the epoch were large enough
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        grad = auto.gradient(z, 0)
    assert not auto.compiled
    assert torch.isfinite(grad).all()
    assert "running it eagerly" in caplog.text
    forced = SampledEpoch(P, kernel, 5, seed=0, compile=True)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        forced.gradient(z, 0)
