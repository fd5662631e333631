"""The rate-sorted edge schedule: rate windows, active ranges, and when it is used."""

import pytest
import torch

from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.objective import sampled, schedule_sorted
from torchdr_sc.objective.sampled import RATE_BITS, EdgeSchedule
from torchdr_sc.objective.schedule_sorted import rate_windows

S = 1 << RATE_BITS


def _mask_rule(epoch: int, rates: torch.Tensor) -> torch.Tensor:
    """UMAP's rule in plain int64 arithmetic (no wrap): an integer multiple of ``S`` in
    ``(T R, (T + 1) R]``."""
    T = epoch % S
    return (T * rates) // S < ((T + 1) * rates) // S


def _in_windows(epoch: int, rates: torch.Tensor) -> torch.Tensor:
    lower, upper = rate_windows(epoch, S)
    assert lower.numel() == upper.numel() > 0
    assert bool((lower <= upper).all())
    assert bool((upper[:-1] < lower[1:]).all())  # disjoint and increasing
    assert int(lower[0]) >= 1
    assert int(upper[-1]) == S  # rate 1 fires at every epoch
    at = torch.searchsorted(lower, rates, right=True) - 1
    return (at >= 0) & (rates <= upper[at.clamp(min=0)])


def _rates_near_windows(epoch: int, gen: torch.Generator) -> torch.Tensor:
    lower, upper = rate_windows(epoch, S)
    if lower.numel() > 1000:  # a sample of the windows, the first and the last ones
        pick = torch.randint(0, lower.numel(), (1000,), generator=gen)
        pick = torch.cat([pick, torch.tensor([0, 1, lower.numel() - 2, lower.numel() - 1])])
        lower, upper = lower[pick], upper[pick]
    edges = torch.cat([lower - 1, lower, lower + 1, upper - 1, upper, upper + 1])
    special = torch.tensor([0, 1, 2, 3, S - 2, S - 1, S])
    tiny = torch.randint(0, 64, (200,), generator=gen)
    near_one = S - torch.randint(0, 64, (200,), generator=gen)
    anywhere = torch.randint(0, S + 1, (2000,), generator=gen)
    return torch.cat([edges, special, tiny, near_one, anywhere]).clamp_(0, S)


def test_rate_windows_are_the_mask_rule_near_every_window_bound():
    gen = torch.Generator().manual_seed(0)
    for epoch in [*range(301), 4095, 4096, S - 1, S, S + 1, S + 300, 10**6]:
        rates = _rates_near_windows(epoch, gen)
        got = _in_windows(epoch, rates)
        assert torch.equal(got, _mask_rule(epoch, rates)), epoch


@pytest.mark.parametrize("epoch", [0, 1, 300, S - 1, 10**6])
def test_rate_windows_are_the_mask_rule_for_every_rate(epoch):
    rates = torch.arange(S + 1)
    assert torch.equal(_in_windows(epoch, rates), _mask_rule(epoch, rates))


def _graph(n=300, k=7, seed=0, dtype=torch.int64):
    """Unique directed edges, weights with ties, exact maxima (rate S), rates rounding to 0,
    near-1 and zero weights (dropped by the schedule)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(n).repeat_interleave(k)
    offsets = torch.stack([torch.randperm(n - 1, generator=gen)[:k] + 1 for _ in range(n)])
    cols = (rows + offsets.reshape(-1)) % n
    w = torch.rand(n * k, generator=gen)
    w[::17] = 1.0
    w[5::23] = 1e-9
    w[7::29] = 0.0
    w[3::31] = 1.0 - 1e-7
    w[11::37] = 0.25
    return SparseAffinity(rows.to(dtype), cols.to(dtype), w, n)


def _mask_rule_edges(P: SparseAffinity, epoch: int) -> torch.Tensor:
    """Sorted ``head * n + tail`` keys of the edges of ``P`` active at ``epoch``."""
    rates = (P.weights.double() / float(P.weights.max())).mul_(S).round_().long()
    on = _mask_rule(epoch, rates) & (P.weights > 0)
    return _keys(P.rows[on], P.cols[on], P.n)


def _keys(heads: torch.Tensor, tails: torch.Tensor, n: int) -> torch.Tensor:
    return (heads.long() * n + tails.long()).sort().values


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(schedule_sorted, "SORT_BLOCK_EDGES", 64)  # 33 blocks, one partial


def test_sorted_chunks_hold_the_active_edges_of_the_mask_rule(small_blocks):
    P = _graph()
    schedule = EdgeSchedule(P)
    assert schedule.sort_block == 64
    assert schedule.phase is None
    assert 0 < schedule.fixed_rate.shape[0] < P.nnz  # zero weights dropped
    epochs = [*range(41), 97, 150, 299, 300, 4095, S - 1, S, S + 1, S + 300, 10**6]
    for epoch in epochs:
        chunks = list(schedule.active_chunks(epoch, 50))
        heads = torch.cat([h for h, _ in chunks]) if chunks else schedule.heads[:0]
        tails = torch.cat([t for _, t in chunks]) if chunks else schedule.tails[:0]
        assert [h.numel() for h, _ in chunks[:-1]] == [50] * (len(chunks) - 1)
        assert all(0 < h.numel() <= 50 for h, _ in chunks)
        expected = _mask_rule_edges(P, epoch)
        assert torch.equal(_keys(heads, tails, P.n), expected), epoch
        assert torch.unique(expected).numel() == expected.numel()  # edges are unique
        # and in the schedule's own (sorted) order, each active edge exactly once
        mask = schedule.active_mask(epoch)
        if schedule._sorted_epoch(epoch):
            on = torch.cat([*schedule._sorted_chunks(epoch, 50), torch.zeros(0, dtype=int)])
            assert torch.equal(on.sort().values, mask.nonzero().view(-1)), epoch
        active = schedule.active(epoch)
        assert torch.equal(active[0], heads)
        assert torch.equal(active[1], tails)


@pytest.mark.parametrize("chunk_edges", [1, 7, 64, 10**6])
def test_sorted_chunks_of_any_size(small_blocks, chunk_edges):
    P = _graph(n=120, k=5, seed=1)
    schedule = EdgeSchedule(P)
    for epoch in (0, 1, 5, 77):
        chunks = list(schedule.active_chunks(epoch, chunk_edges))
        sizes = [h.numel() for h, _ in chunks]
        total = sum(sizes)
        assert sizes == [chunk_edges] * (total // chunk_edges) + [total % chunk_edges] * (
            total % chunk_edges > 0
        )
        heads = torch.cat([h for h, _ in chunks])
        tails = torch.cat([t for _, t in chunks])
        assert torch.equal(_keys(heads, tails, P.n), _mask_rule_edges(P, epoch))


def test_sorted_blocks_order_edges_by_rate_and_keep_them_paired(small_blocks):
    P = _graph()
    schedule = EdgeSchedule(P)
    kept = P.weights > 0  # the schedule's edges before the sort: P's, in P's order
    heads, tails = P.rows[kept], P.cols[kept]
    rates = (P.weights[kept].double() / float(P.weights.max())).mul_(S).round_().int()
    rate = schedule.fixed_rate
    assert rate.numel() == rates.numel()
    for s in range(0, rate.numel(), 64):
        block = rate[s : s + 64]
        assert bool((block[1:] >= block[:-1]).all())
        # the block holds the same edges as before, each with its own rate
        mine = _keys(schedule.heads[s : s + 64], schedule.tails[s : s + 64], P.n)
        assert torch.equal(mine, _keys(heads[s : s + 64], tails[s : s + 64], P.n))
    by_edge = dict(zip((heads * P.n + tails).tolist(), rates.tolist(), strict=True))
    ours = (schedule.heads.long() * P.n + schedule.tails).tolist()
    assert [by_edge[e] for e in ours] == rate.tolist()
    assert schedule.mean_active == pytest.approx(float(rates.sum()) / S, rel=1e-12)


def test_sorted_layout_fires_each_edge_rate_times_per_epoch(small_blocks):
    P = _graph()
    schedule = EdgeSchedule(P)
    assert schedule.sort_block == 64
    n_epochs = 200
    counts = torch.zeros(schedule.fixed_rate.numel(), dtype=torch.int64)
    for t in range(n_epochs):
        counts += schedule.active_mask(t)
    ours = (schedule.heads.long() * P.n + schedule.tails).tolist()
    fired = dict(zip(ours, counts.tolist(), strict=True))
    kept = P.weights > 0
    rate = (P.weights[kept] / P.weights.max()).double()
    expected = torch.floor(n_epochs * rate + 1e-6).long()  # floor(T r), telescoped
    keys = (P.rows[kept] * P.n + P.cols[kept]).tolist()
    assert [fired[e] for e in keys] == expected.tolist()


def _copies(P: SparseAffinity) -> tuple[torch.Tensor, ...]:
    return P.rows.clone(), P.cols.clone(), P.weights.clone()


def _unchanged(P: SparseAffinity, before: tuple[torch.Tensor, ...]) -> bool:
    return all(
        a.dtype == b.dtype and torch.equal(a, b)
        for a, b in zip((P.rows, P.cols, P.weights), before, strict=True)
    )


def test_int32_affinity_is_shared_not_sorted(small_blocks):
    P = _graph(dtype=torch.int32)
    P.weights[7::29] = 0.5  # no zero weight: the schedule holds P's own ids
    before = _copies(P)
    schedule = EdgeSchedule(P)
    assert schedule.sort_block is None
    assert schedule.heads.data_ptr() == P.rows.data_ptr()
    assert schedule.tails.data_ptr() == P.cols.data_ptr()
    for epoch in range(5):
        list(schedule.active_chunks(epoch, 50))
        schedule.active(epoch)
    assert _unchanged(P, before)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_sorted_layout_never_modifies_the_affinity(small_blocks, dtype):
    P = _graph(dtype=dtype)  # zero weights: the schedule holds copies, sorted
    before = _copies(P)
    schedules = [EdgeSchedule(P), EdgeSchedule(P, (0, 150)), EdgeSchedule(P, (150, 300))]
    for schedule in schedules:
        assert schedule.sort_block == 64
        for epoch in range(5):
            list(schedule.active_chunks(epoch, 50))
            schedule.active(epoch)
    assert _unchanged(P, before)
    # the two shards hold the whole schedule's active edges
    for epoch in (0, 3, 17):
        halves = [s.active(epoch) for s in schedules[1:]]
        union = _keys(torch.cat([h for h, _ in halves]), torch.cat([t for _, t in halves]), P.n)
        assert torch.equal(union, _keys(*schedules[0].active(epoch), P.n))


def test_lockstep_phases_keep_the_mask_path(small_blocks):
    P = _graph(k=9)
    P.weights[:9] = 0.3  # 9 >= LOCKSTEP_MIN_EDGES equal weights of head 0: phases
    before = _copies(P)
    schedule = EdgeSchedule(P)
    assert schedule.phase is not None
    assert schedule.sort_block is None
    kept = P.weights > 0
    assert torch.equal(schedule.heads.long(), P.rows[kept])  # P's order
    for epoch in range(20):
        heads, tails = schedule.active(epoch)
        chunks = list(schedule.active_chunks(epoch, 50))
        assert torch.equal(torch.cat([h for h, _ in chunks]), heads)
        assert torch.equal(torch.cat([t for _, t in chunks]), tails)
    assert _unchanged(P, before)


def test_late_epochs_test_every_edge(small_blocks, monkeypatch):
    P = _graph()
    schedule = EdgeSchedule(P)
    late = schedule_sorted.SORT_MAX_WINDOWS  # T + 1 windows: one too many
    assert not schedule._sorted_epoch(late)
    assert schedule._sorted_epoch(late - 1)
    for epoch in (late - 1, late):
        got = _keys(*schedule.active(epoch), P.n)
        assert torch.equal(got, _mask_rule_edges(P, epoch))
    monkeypatch.setattr(sampled, "MASK_BLOCK", 97)
    chunks = list(schedule.active_chunks(late, 50))
    heads = torch.cat([h for h, _ in chunks])
    assert torch.equal(heads, schedule.active(late)[0])
