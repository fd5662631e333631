"""Negative-sampling objectives: UMAP and LargeVis, with closed-form gradients.

One epoch follows the stochastic scheme of UMAP (McInnes et al. 2018): every directed edge
``(i, j)`` of the input affinity is active in an epoch with a frequency proportional to its
weight (``epochs_per_sample = max(w) / w``, applied deterministically as in umap-learn), and
each active edge draws ``n_negatives`` uniformly random points ``k`` as negatives of ``i``.
Attraction moves both ``i`` and ``j``; repulsion moves ``i``. Per-pair gradients are clipped
coordinate-wise, then all edges of the epoch are applied at once (the synchronous, parallel
form used by GPU implementations), which is what makes an epoch a handful of vectorised
kernels over ``(edges + negatives) x dims`` values instead of a Python loop.

The embedding kernels:

- UMAP: ``q = 1 / (1 + a d^{2b})``, loss ``-log q_ij - sum_k log(1 - q_ik)``.
- LargeVis (Tang et al. 2016): ``q = 1 / (1 + d^2)``,
  loss ``-log q_ij - gamma sum_k log(1 - q_ik)``.

InfoNC-t-SNE (Damrich et al. 2023) shares its negatives between the edges of a block of rows
instead (:mod:`~torchdr_sc.objective.infonce`).

References
----------
- L. McInnes, J. Healy, J. Melville. UMAP. arXiv:1802.03426, 2018.
- J. Tang, J. Liu, M. Zhang, Q. Mei. Visualizing Large-scale and High-dimensional Data. WWW 2016.
- S. Damrich, J. N. Böhm, F. A. Hamprecht, D. Kobak. From t-SNE to UMAP with contrastive
  learning. ICLR 2023.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .._threads import pinned_threads
from ..affinity import SparseAffinity
from . import schedule_sorted
from .pairs import _mix64, _shift_right, pair_terms
from .schedule_sorted import active_ranges, range_chunks, rate_windows, sort_blocks_by_rate

#: Below this many pair evaluations per epoch, the CPU loop runs on one intra-op thread:
#: an epoch is then ~40 small kernels whose thread fork/join costs more than it saves
#: (several times slower on two busy cores than on one thread, measured on digits).
SINGLE_THREAD_WORK = 2**19


def single_cpu_thread(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Run the block with one torch intra-op thread (kept by the thread policy's rechecks),
    restoring the setting afterwards; a no-op when not ``enabled``."""
    return pinned_threads(1) if enabled else contextlib.nullcontext()


@dataclass(frozen=True)
class SampledKernel:
    """Which negative-sampling objective to use and its constants.

    Attributes
    ----------
    kind
        ``'umap'`` or ``'largevis'``.
    a, b
        UMAP kernel parameters (``a = b = 1`` is the Student / Cauchy kernel).
    repulsion
        Weight of the repulsive term (UMAP's ``repulsion_strength``, LargeVis' ``gamma``).
    clip
        Coordinate-wise gradient clip of every pair (4 in umap-learn, 5 in LargeVis).
    """

    kind: str = "umap"
    a: float = 1.0
    b: float = 1.0
    repulsion: float = 1.0
    clip: float = 4.0


#: Rates are held as fixed-point integers with this many fractional bits.
RATE_BITS = 24
#: Edges per block when rates are computed in float64.
RATE_BLOCK = 2**20
#: Edges per block of the per-epoch activity test (:meth:`EdgeSchedule.active`): its
#: temporaries stay below glibc's mmap threshold, so they are reused from epoch to epoch
#: instead of being faulted in afresh (larger blocks cost page faults at every epoch).
MASK_BLOCK = 2**20
#: Golden-ratio step of splitmix64 (as int64) and a salt: the hash of :func:`lockstep_phases`.
_GOLDEN_STEP = -7046029254386353131
LOCKSTEP_SALT = 0x10C57E9
#: Edges of one head with bitwise equal weights from which :func:`lockstep_phases` spreads
#: them over the epochs.
LOCKSTEP_MIN_EDGES = 8


class EdgeSchedule:
    """Deterministic per-epoch edge selection with UMAP's ``epochs_per_sample`` rule.

    Edge ``e`` with relative weight ``r_e = w_e / max(w)`` is active at epoch ``t`` when
    ``floor((t + 1) r_e) > floor(t r_e)``, i.e. ``r_e`` times per epoch on average. The rate
    is held in fixed point, ``R_e = round(r_e 2^24)``, and the test is the integer identity
    ``(t R_e mod 2^24) + R_e >= 2^24`` (three integer operations per edge; int32 products
    may wrap, which leaves their low 24 bits exact). Large groups of edges of one cell with
    equal weights get phase offsets (:func:`lockstep_phases`) so as not to fire together;
    on data without them the schedule is exactly this rule.

    On CPU, without phases, and when the schedule holds its own copies of the edges (not
    ``P``'s own tensors, such as its int32 ids: ``P`` is never modified), the edges of
    every block of :data:`~torchdr_sc.objective.schedule_sorted.SORT_BLOCK_EDGES` are
    sorted by rate at construction: an epoch's active edges are then a few ranges of every
    block, found by binary search (:mod:`~torchdr_sc.objective.schedule_sorted`).
    ``heads``, ``tails`` and ``fixed_rate`` are then in that order (consistently), and
    ``sort_block`` is the block size (``None`` when unsorted).

    Parameters
    ----------
    P
        Input affinity (directed edges; pass the symmetrised one).
    rows_of
        Optional ``(start, stop)`` to keep only edges whose head is owned by this process.
    """

    def __init__(self, P: SparseAffinity, rows_of: tuple[int, int] | None = None) -> None:
        rows, cols, w = P.rows, P.cols, P.weights
        w_max = float(w.max()) if w.numel() else 1.0  # of all of P: shards agree
        keep = w > 0
        if rows_of is not None:
            keep &= (rows >= rows_of[0]) & (rows < rows_of[1])
        if not bool(keep.all()):  # (P's own tensors otherwise: no edge-sized copies)
            rows, cols, w = rows[keep], cols[keep], w[keep]
        del keep
        self.fixed_rate = torch.empty(w.shape[0], dtype=torch.int32, device=w.device)
        for s in range(0, w.shape[0], RATE_BLOCK):  # the rate in float64, in blocks
            rate = w[s : s + RATE_BLOCK].double().div_(w_max).clamp_(max=1.0)
            self.fixed_rate[s : s + RATE_BLOCK] = rate.mul_(2**RATE_BITS).round_()
        self.phase = lockstep_phases(rows, cols, w, self.fixed_rate)
        # int32 ids when they fit: the per-epoch gathers of the active edges and the fused
        # kernel's index loads move half the bytes (a faster compiled epoch); P's own when
        # they are int32 already
        small = P.n < 2**31 - 1
        self.heads, self.tails = (rows.int(), cols.int()) if small else (rows, cols)
        # summed in blocks: an int64 copy of all rates would be the size of P's indices
        total = sum(
            int(self.fixed_rate[s : s + RATE_BLOCK].sum(dtype=torch.int64))
            for s in range(0, self.fixed_rate.shape[0], RATE_BLOCK)
        )
        self.mean_active = total / 2**RATE_BITS
        self.sort_block: int | None = None
        if self.phase is None and self.fixed_rate.device.type == "cpu" and _owns(self, P):
            self.sort_block = schedule_sorted.SORT_BLOCK_EDGES
            sort_blocks_by_rate(self.fixed_rate, self.heads, self.tails, self.sort_block)

    def _sorted_epoch(self, epoch: int) -> bool:
        """Whether ``epoch``'s active edges are found as ranges of the rate-sorted blocks."""
        windows = epoch % (1 << RATE_BITS) + 1
        return self.sort_block is not None and windows <= schedule_sorted.SORT_MAX_WINDOWS

    def _sorted_chunks(self, epoch: int, chunk_edges: int) -> Iterator[torch.Tensor]:
        """Positions of the edges active at ``epoch`` in the rate-sorted blocks, in chunks."""
        lower, upper = rate_windows(epoch, 1 << RATE_BITS)
        starts, lengths = active_ranges(self.fixed_rate, self.sort_block, lower, upper)
        return range_chunks(starts, lengths, chunk_edges)

    def active_mask(self, epoch: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Boolean mask of the edges ``start:stop`` (default: all, in the order of
        ``heads`` / ``tails`` / ``fixed_rate``) active at ``epoch``."""
        R = self.fixed_rate[start:stop]
        one = 1 << RATE_BITS
        phase = ((epoch % one) * R).bitwise_and_(one - 1)
        if self.phase is not None:
            phase = phase.add_(self.phase[start:stop]).bitwise_and_(one - 1)
        return phase.add_(R) >= one

    def active_chunks(
        self, epoch: int, chunk_edges: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Heads and tails of the edges active at ``epoch``, ``chunk_edges`` at a time.

        The same edges in the same order as :meth:`active` cut into consecutive chunks (the
        last one shorter), found block by block: the active edges of an epoch are never all
        held at once (~40M at 1M cells with 90 neighbours). In rate-sorted blocks
        (``sort_block``) they come block by block, then by rate, and only the ranges of the
        epoch's active edges (small) and one chunk's positions are built; otherwise in the
        order of the edges, from a mask of every block of :data:`MASK_BLOCK` edges.
        """
        if self._sorted_epoch(epoch):
            for on in self._sorted_chunks(epoch, chunk_edges):
                yield self.heads.index_select(0, on), self.tails.index_select(0, on)
            return
        heads, tails, held = [], [], 0
        for s in range(0, self.fixed_rate.shape[0], MASK_BLOCK):
            on = self.active_mask(epoch, s, s + MASK_BLOCK).nonzero().view(-1)
            heads.append(self.heads[s : s + MASK_BLOCK][on])
            tails.append(self.tails[s : s + MASK_BLOCK][on])
            held += on.shape[0]
            while held >= chunk_edges:
                h, t = torch.cat(heads), torch.cat(tails)
                yield h[:chunk_edges], t[:chunk_edges]
                heads, tails, held = [h[chunk_edges:]], [t[chunk_edges:]], held - chunk_edges
        if held:
            yield torch.cat(heads), torch.cat(tails)

    def active(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads and tails of the edges active at ``epoch``.

        The mask is computed, and the active ids gathered, in blocks of :data:`MASK_BLOCK`
        edges: no edge-sized temporaries, and no int64 positions of all active edges. In
        rate-sorted blocks (``sort_block``), the chunks of :meth:`active_chunks` put together.
        """
        if self._sorted_epoch(epoch):
            chunks = list(self.active_chunks(epoch, MASK_BLOCK))
            if len(chunks) == 1:
                return chunks[0]
            if not chunks:
                return self.heads[:0], self.tails[:0]
            return torch.cat([h for h, _ in chunks]), torch.cat([t for _, t in chunks])
        n_edges = self.fixed_rate.shape[0]
        if n_edges <= MASK_BLOCK:
            on = self.active_mask(epoch).nonzero().view(-1)
            return self.heads[on], self.tails[on]
        heads, tails = [], []
        for s in range(0, n_edges, MASK_BLOCK):
            on = self.active_mask(epoch, s, s + MASK_BLOCK).nonzero().view(-1)
            heads.append(self.heads[s : s + MASK_BLOCK][on])
            tails.append(self.tails[s : s + MASK_BLOCK][on])
        return torch.cat(heads), torch.cat(tails)


def _owns(schedule: EdgeSchedule, P: SparseAffinity) -> bool:
    """Whether ``schedule``'s heads and tails are its own, not views of ``P``'s tensors."""
    theirs = {t.untyped_storage().data_ptr() for t in (P.rows, P.cols, P.weights)}
    ours = [t.untyped_storage().data_ptr() for t in (schedule.heads, schedule.tails)]
    return schedule.fixed_rate.numel() > 0 and not theirs.intersection(ours)


def lockstep_phases(
    rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, fixed_rate: torch.Tensor
) -> torch.Tensor | None:
    """Phase offsets that stop many equal edges of one cell from firing in lockstep.

    Edges of a cell with exactly equal weights (duplicated rows: all at one distance) have
    the same rate, so the rule of :class:`EdgeSchedule` fires them all in the same epochs:
    the cell sums all those steps at once every ``1 / rate`` epochs (LargeVis on data with
    90 % duplicated rows: ~150 edges at once every 70 epochs, ~2 on average), and is thrown
    hundreds of units off. An edge in a group of at least :data:`LOCKSTEP_MIN_EDGES` edges
    of its head with bitwise equal weights gets a pseudo-random phase in ``[0, 2^24)`` (a
    hash of its two ends): it still fires ``rate`` times per epoch on average, at other
    epochs than its twins. Other edges, and edges of rate 1 (active at every epoch), keep
    phase 0: on data without such ties the schedule is exactly UMAP's.

    Parameters
    ----------
    rows, cols
        Heads and tails of the edges.
    weights
        Their float weights.
    fixed_rate
        Their rates in fixed point (:class:`EdgeSchedule`).

    Returns
    -------
    torch.Tensor or None
        int32 phases, one per edge (0 for the edges left alone); ``None`` when no edge
        needs one.
    """
    if rows.numel() == 0:
        return None
    tied = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    for s, e in _row_blocks(rows, TIE_BLOCK_EDGES):
        tied[s:e] = _tied_edges(rows[s:e], weights[s:e]) & (fixed_rate[s:e] < 1 << RATE_BITS)
    if not bool(tied.any()):
        return None
    edge = rows.long() * _GOLDEN_STEP + cols.long() * LOCKSTEP_SALT
    phase = _shift_right(_mix64(edge), 64 - RATE_BITS).to(torch.int32)
    return torch.where(tied, phase, torch.zeros_like(phase))


#: Edges per block of :func:`lockstep_phases`' search for ties (whole rows per block).
TIE_BLOCK_EDGES = 2**22
#: Buckets of the hash count that rules out ties in a block before any sort.
_TIE_BUCKET_BITS = 24


def _row_blocks(rows: torch.Tensor, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of about ``size`` edges that do not split a row (for
    row-grouped edges; otherwise plain ranges)."""
    n, out, s = rows.shape[0], [], 0
    while s < n:
        e = min(n, s + size)
        if e < n:
            first = int(torch.searchsorted(rows[s:e], rows[e : e + 1], right=False)) + s
            e = first if first > s else e
        out.append((s, e))
        s = e
    return out


def _tied_edges(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Edges in a group of at least :data:`LOCKSTEP_MIN_EDGES` of one row with bitwise equal
    weights. A count of hashed ``(row, weight)`` keys rules the groups out on normal data
    (a group fills one bucket) without the sort of the exact test."""
    bits = weights.float().view(torch.int32)
    # a multiplicative hash: equal keys share a bucket, distinct ones rarely do
    bucket = (rows.long() * _GOLDEN_STEP + bits).mul_(LOCKSTEP_SALT)
    bucket = _shift_right(bucket, 64 - _TIE_BUCKET_BITS)
    if int(torch.bincount(bucket, minlength=1 << _TIE_BUCKET_BITS).max()) < LOCKSTEP_MIN_EDGES:
        return torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    key = rows.long() * 2**32 + bits.long()
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    return counts[inverse] >= LOCKSTEP_MIN_EDGES


def sampled_gradient(
    z: torch.Tensor,
    heads: torch.Tensor,
    tails: torch.Tensor,
    negatives: torch.Tensor,
    kernel: SampledKernel,
    exaggeration: float = 1.0,
) -> torch.Tensor:
    """Gradient (descent direction is ``-grad``) of one epoch's sampled loss, given negatives.

    The estimators go through :class:`~torchdr_sc.objective.epoch.SampledEpoch`, which draws
    the negatives itself; this entry point takes them explicitly (the same arithmetic,
    :func:`~torchdr_sc.objective.pairs.pair_terms`), for checks against autograd.

    Parameters
    ----------
    z
        Embedding ``(n, d)``.
    heads, tails
        ``(A,)`` active edges.
    negatives
        ``(A, m)`` negative samples for every head.
    kernel
        The objective.
    exaggeration
        Multiplies the attractive term (early exaggeration).
    """
    coords = list(z.T.contiguous())
    consts = torch.tensor(
        [kernel.a, kernel.b, kernel.repulsion, kernel.clip, exaggeration],
        dtype=z.dtype,
        device=z.device,
    )
    g_att, g_head = pair_terms(coords, heads, tails, negatives.T, consts, kernel_kind(kernel))
    return scatter_pair_terms(z, heads, tails, g_att, g_head)


def kernel_kind(kernel: SampledKernel) -> str:
    """The :func:`~torchdr_sc.objective.pairs.pair_terms` kind of ``kernel``."""
    if kernel.kind == "largevis" or (kernel.a == 1.0 and kernel.b == 1.0):
        return "cauchy"
    return "umap"


#: Most pair terms (edges as head or tail) one cell may expect to sum in one epoch before
#: its summed step is scaled down (:func:`crowding_scale`). Normal data stay far below it for
#: LargeVis and InfoTSNE: at most 21 (pbmc68k; 5-7 for the median cell), against 180 for
#: every cell when each row's neighbours are all at one distance (duplicated rows).
CROWDED_TERMS = 32


def expected_terms(P: SparseAffinity) -> torch.Tensor:
    """Pair terms every cell takes part in per epoch on average: its edges' rates summed.

    Each edge counts for its head and its tail, with the rate of :class:`EdgeSchedule`
    (``w / max(w)``), over all of ``P`` whichever process owns the edges.

    Returns
    -------
    torch.Tensor
        ``(n,)`` float64 counts on ``P``'s device.
    """
    out = torch.zeros(P.n, dtype=torch.float64, device=P.device)
    if not P.nnz:
        return out
    w_max = float(P.weights.max())
    for s in range(0, P.nnz, RATE_BLOCK):  # float64 in blocks: no edge-sized copy
        rate = P.weights[s : s + RATE_BLOCK].double().clamp_min_(0).div_(w_max)
        out.index_add_(0, P.rows[s : s + RATE_BLOCK], rate)
        out.index_add_(0, P.cols[s : s + RATE_BLOCK], rate)
    return out


def crowding_scale(P: SparseAffinity, limit: float = CROWDED_TERMS) -> torch.Tensor | None:
    """Per-cell factor bounding the summed step of cells in very many edges per epoch.

    The synchronous epoch evaluates every active edge at the positions the epoch started
    from and adds up the clipped steps of each cell: that stands for the sequential updates
    of umap-learn while a cell takes part in a few edges per epoch. When all of a cell's
    neighbours are at one distance (duplicated rows) its edges have equal weights, all fire
    at every epoch, and the cell sums ~180 clipped steps (LargeVis, InfoTSNE) computed at
    its old position, where sequential updates would have moved it after a few: groups of
    equal rows are thrown tens of units apart. The step of a cell expecting more than
    ``limit`` terms per epoch (:func:`expected_terms`) is scaled by ``limit / expected``.

    Parameters
    ----------
    P
        Input affinity (all of it, also under ``torchrun``: every process scales alike).
    limit
        Expected terms per epoch summed in full (:data:`CROWDED_TERMS`).

    Returns
    -------
    torch.Tensor or None
        ``(n,)`` float64 factors ``min(1, limit / expected)``; ``None`` when all are 1 (no
        cell expects more than ``limit`` terms: normal data).
    """
    expected = expected_terms(P)
    if expected.numel() == 0 or float(expected.max()) <= limit:
        return None
    return (limit / expected.clamp_min(limit)).clamp_(max=1.0)


def scatter_pair_terms(
    z: torch.Tensor,
    heads: torch.Tensor,
    tails: torch.Tensor,
    g_att: list[torch.Tensor],
    g_head: list[torch.Tensor],
) -> torch.Tensor:
    """Sum per-edge gradients into an ``(n, d)`` gradient like ``z``.

    Heads receive ``g_head``, tails ``-g_att`` (one ``(A,)`` vector per coordinate): the
    heads' and the tails' terms are each summed in the edges' order, then subtracted
    (:func:`add_pair_terms`).
    """
    sums = torch.zeros((2, z.shape[1], z.shape[0]), dtype=z.dtype, device=z.device)
    add_pair_terms(sums, heads, tails, g_att, g_head)
    return (sums[0] - sums[1]).T


def add_pair_terms(
    sums: torch.Tensor,
    heads: torch.Tensor,
    tails: torch.Tensor,
    g_att: list[torch.Tensor],
    g_head: list[torch.Tensor],
) -> None:
    """Add per-edge gradients to ``sums`` ``(2, d, n)`` in place: ``g_head`` to the heads'
    sums ``sums[0]``, ``g_att`` to the tails' ``sums[1]`` (the gradient is their difference).

    Each sum takes its terms in the edges' order (``index_add_`` on CPU adds sequentially),
    so an epoch evaluated in chunks of edges gives the same bits as in one piece: with one
    accumulator for both, a chunk's tails would come before the next chunk's heads.
    """
    for c, (gh, ga) in enumerate(zip(g_head, g_att, strict=True)):
        sums[0, c].index_add_(0, heads, gh)
        sums[1, c].index_add_(0, tails, ga)
