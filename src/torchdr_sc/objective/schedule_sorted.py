"""Edges sorted by rate in blocks: an epoch's active edges as a few contiguous ranges (CPU).

:class:`~torchdr_sc.objective.sampled.EdgeSchedule` fires an edge of fixed-point rate ``R``
(``0 <= R <= S = 2^24``) at epoch ``t`` when ``(T R mod S) + R >= S`` with ``T = t mod S``,
that is when an integer ``j`` has ``T R < j S <= (T + 1) R``. For ``T = 0`` that is
``R = S``; for ``T >= 1`` the active rates form the disjoint, increasing integer windows
``[ceil(j S / (T + 1)), ceil(j S / T) - 1]`` capped at ``S``, ``j = 1 .. T + 1``
(:func:`rate_windows`; some are empty once ``T^2 > S``). Rate 0 is never active.

With the edges of every block of :data:`SORT_BLOCK_EDGES` sorted by rate
(:func:`sort_blocks_by_rate`), the active edges of a block are at most ``T + 1`` contiguous
ranges, found by one batched binary search over all blocks (:func:`active_ranges`) instead
of a test of every edge and a ``nonzero``; :func:`range_chunks` cuts the ranges into
chunks of positions without ever indexing all active edges at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import torch

#: Edges per block sorted by rate. Blocks, not one global sort, keep an epoch's edges of one
#: head near each other as in ``P`` (its gathers and scatters stay cache friendly): sorted
#: blocks made the schedule and the whole compiled epoch faster, where one global sort lost
#: most of the gain to the lost head locality (``benchmarks/README.md``).
SORT_BLOCK_EDGES = 2**20
#: Most rate windows (``epoch mod 2^24``, plus one) an epoch is searched with; later
#: epochs test every edge. The searches grow with the windows, the test does not: the two
#: cost about the same near 8191 windows, and beyond ``sqrt(2^24)`` windows most hold less
#: than one rate value.
SORT_MAX_WINDOWS = 2**12


def rate_windows(epoch: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive bounds of the fixed-point rates active at ``epoch``.

    Parameters
    ----------
    epoch
        The epoch ``t`` (any non-negative integer; only ``t mod scale`` matters).
    scale
        ``S``, the fixed-point value of rate 1 (``2^24``).

    Returns
    -------
    tuple of torch.Tensor
        int64 ``lower`` and ``upper``: rate ``R`` in ``[0, S]`` is active exactly when
        ``lower[i] <= R <= upper[i]`` for some ``i``. The windows are nonempty, disjoint
        and increasing.
    """
    T = epoch % scale
    if T == 0:  # only rate 1 fires at t = 0 mod S
        return torch.tensor([scale]), torch.tensor([scale])
    j = torch.arange(1, T + 2, dtype=torch.int64) * scale
    lower = (j + T) // (T + 1)  # ceil(j S / (T + 1))
    upper = ((j + T - 1) // T - 1).clamp_(max=scale)  # ceil(j S / T) - 1
    keep = lower <= upper
    return lower[keep], upper[keep]


def sort_blocks_by_rate(
    rate: torch.Tensor, heads: torch.Tensor, tails: torch.Tensor, block: int
) -> None:
    """Sort the edges of every block of ``block`` edges by rate, in place.

    A stable sort (deterministic); only per-block temporaries are allocated.

    Parameters
    ----------
    rate
        ``(E,)`` fixed-point rates, sorted in place.
    heads, tails
        ``(E,)`` ends of the edges, permuted in place alike.
    block
        Edges per block.
    """
    for s in range(0, rate.shape[0], block):
        sorted_rate, order = torch.sort(rate[s : s + block], stable=True)
        rate[s : s + block] = sorted_rate
        heads[s : s + block] = heads[s : s + block].index_select(0, order)
        tails[s : s + block] = tails[s : s + block].index_select(0, order)


def active_ranges(
    rate: torch.Tensor, block: int, lower: torch.Tensor, upper: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nonempty ranges of the edges whose rate lies in one of the windows.

    Parameters
    ----------
    rate
        ``(E,)`` rates, sorted within every block of ``block`` edges.
    block
        Edges per sorted block.
    lower, upper
        Inclusive windows of rates (:func:`rate_windows`).

    Returns
    -------
    tuple of torch.Tensor
        int64 ``starts`` and ``lengths`` of the ranges, block by block, then by window.
    """
    lower, upper = lower.to(rate.dtype), upper.to(rate.dtype)
    full = rate.shape[0] // block * block
    parts = []
    if full:
        parts.append(_block_ranges(rate[:full].view(-1, block), 0, lower, upper))
    if full < rate.shape[0]:  # the last, shorter block
        parts.append(_block_ranges(rate[full:].view(1, -1), full, lower, upper))
    if not parts:
        empty = torch.zeros(0, dtype=torch.int64, device=rate.device)
        return empty, empty
    starts, lengths = zip(*parts, strict=True)
    return torch.cat(starts), torch.cat(lengths)


def _block_ranges(
    blocks: torch.Tensor, offset: int, lower: torch.Tensor, upper: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Starts and lengths of the nonempty ranges of ``blocks`` ``(n_blocks, width)`` (rows
    sorted) in the windows, positions counted from ``offset``."""
    n_blocks, width = blocks.shape
    first = torch.searchsorted(blocks, lower.expand(n_blocks, -1).contiguous())
    stop = torch.searchsorted(blocks, upper.expand(n_blocks, -1).contiguous(), right=True)
    lengths = (stop - first).view(-1)
    base = torch.arange(n_blocks, device=blocks.device)[:, None] * width + offset
    starts = first.add_(base).view(-1)
    keep = lengths > 0
    return starts[keep], lengths[keep]


def range_chunks(
    starts: torch.Tensor, lengths: torch.Tensor, chunk_edges: int
) -> Iterator[torch.Tensor]:
    """Positions of the edges of the ranges, in order, ``chunk_edges`` at a time.

    The ranges laid end to end are cut at every multiple of ``chunk_edges``: a chunk is the
    pieces of ranges between two cuts, and its int64 positions are built from them alone.

    Parameters
    ----------
    starts, lengths
        int64 ranges (:func:`active_ranges`; lengths positive).
    chunk_edges
        Positions per chunk (the last one holds the rest).

    Yields
    ------
    torch.Tensor
        int64 positions of a chunk's edges.
    """
    if not lengths.numel():
        return
    ends = lengths.cumsum(0)
    total = int(ends[-1])
    first = ends - lengths  # position of every range in the chunks' concatenation
    chunk_starts = torch.arange(0, total, chunk_edges, device=starts.device)
    cuts = torch.cat([first, chunk_starts]).unique()  # sorted starts of the pieces
    owner = torch.searchsorted(ends, cuts, right=True)
    source = starts[owner] + (cuts - first[owner])
    size = torch.diff(cuts, append=ends[-1:])
    bounds = [*torch.searchsorted(cuts, chunk_starts).tolist(), cuts.numel()]
    for c, (a, b) in enumerate(pairwise(bounds)):
        piece, src = size[a:b], source[a:b]
        n = min(chunk_edges, total - c * chunk_edges)
        shift = src - (piece.cumsum(0) - piece)  # position of a piece minus its rank
        positions = torch.repeat_interleave(shift, piece, output_size=n)
        yield positions.add_(torch.arange(n, device=starts.device))
