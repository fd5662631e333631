"""Symmetrisation of a kNN-shaped affinity without a global sort (lean in memory).

A directed affinity built on a kNN graph has exactly ``k`` entries per row, ``P[i, idx[i, a]]
= W[i, a]``. Its transpose entry ``P[j, i]`` exists iff ``i`` is among ``j``'s neighbours,
which one gather of ``idx[j]`` per entry answers (``k^2`` comparisons per row, done in
bounded blocks). The symmetric matrix is then written straight into row order with a
counting sort (each entry's place is its rank among its row's entries of ``P``, plus the
number of ``P^T``-only entries of the row with a smaller column, and vice versa).
:meth:`SparseAffinity.symmetrize` instead sorts the ``2 nnz``
flat positions of ``P`` and ``P^T`` together: at 1M points that sort was the largest
allocation of a UMAP on the CPU.

With many neighbours (the t-SNE family's ``3 * perplexity`` = 90) the ``k^2`` lookup becomes
the slow part, and int64 indices the large part: :func:`symmetrize_knn_compact` finds the
reverse entries by binary search in the sorted ``(row, col)`` keys instead and returns int32
indices, rows grouped but each row's columns in two sorted runs (at 1M points and 90
neighbours, 12 instead of 20 bytes per stored entry).
"""

from __future__ import annotations

import itertools

import torch

from .sparse import SparseAffinity

#: Temporary bytes per block of rows in the reverse-entry lookup.
LOOKUP_BLOCK_BYTES = 64 * 2**20
#: Entries per block of binary searches in :func:`reverse_weights_sorted`.
SEARCH_BLOCK = 2**18


def reverse_weights(
    indices: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``W^T`` on ``P``'s pattern: for each entry ``(i, a)`` with ``j = indices[i, a]``,
    ``P[j, i]`` (0 where absent) and whether it is present.

    Neighbour lists must hold distinct indices (a kNN graph's do).
    """
    n, k = indices.shape
    out = torch.zeros_like(weights)
    present = torch.zeros((n, k), dtype=torch.bool, device=indices.device)
    narrow = indices.int() if n < 2**31 - 1 else indices  # half the bytes gathered
    step = max(1, LOOKUP_BLOCK_BYTES // (k * k * 5))  # int32 gather + bool match
    for s in range(0, n, step):
        J = indices[s : s + step]
        me = torch.arange(s, s + J.shape[0], device=indices.device, dtype=narrow.dtype)
        back = narrow.index_select(0, J.reshape(-1)).view(*J.shape, k)
        match = back == me[:, None, None]  # is row s+r among the neighbours of J[r, a]?
        found = match.any(-1)
        pos = match.to(torch.uint8).argmax(-1)
        w_back = torch.take(weights, J * k + pos)
        out[s : s + J.shape[0]] = torch.where(found, w_back, 0.0)
        present[s : s + J.shape[0]] = found
    return out, present


def symmetrize_knn(indices: torch.Tensor, weights: torch.Tensor, mode: str) -> SparseAffinity:
    """The symmetric affinity of a kNN-shaped ``P``: the same entries, values and CSR order
    as :meth:`SparseAffinity.symmetrize`, with a fraction of its memory.

    Parameters
    ----------
    indices, weights
        ``(n, k)``: ``P[i, indices[i, a]] = weights[i, a]``, distinct indices per row.
    mode
        ``'sum'`` (P + P^T), ``'mean'`` ((P + P^T) / 2) or ``'fuzzy_union'``
        (P + P^T - P * P^T).
    """
    n = indices.shape[0]
    device = indices.device
    indices, by_col = torch.sort(indices, dim=1)  # CSR order within each row
    weights = torch.gather(weights, 1, by_col)
    del by_col
    back, present = reverse_weights(indices, weights)
    both = weights + back
    if mode == "mean":
        fwd = both * 0.5
    elif mode == "fuzzy_union":
        fwd = both - weights * back
    else:
        fwd = both
    # entries of P^T absent from P: (j, i) with P[i, j]'s value alone
    alone = ~present & (weights > 0)
    rev_w = weights[alone] * 0.5 if mode == "mean" else weights[alone]
    rev_rows = indices[alone]
    rev_cols = torch.arange(n, device=device).repeat_interleave(alone.sum(1))
    del back, present, both, alone
    order = torch.argsort(rev_rows, stable=True)  # by row, then by col (cols were ascending)
    rev_rows, rev_cols = rev_rows.index_select(0, order), rev_cols.index_select(0, order)
    rev_w = rev_w.index_select(0, order)
    del order
    keep = fwd > 0
    fwd_cols, fwd_w = indices[keep], fwd[keep]
    fwd_rank = (torch.cumsum(keep, 1) - 1)[keep]
    n_fwd = keep.sum(1)
    del keep, fwd
    fwd_rows = torch.arange(n, device=device).repeat_interleave(n_fwd)
    n_rev = torch.bincount(rev_rows, minlength=n)
    fwd_first, rev_first = torch.cumsum(n_fwd, 0) - n_fwd, torch.cumsum(n_rev, 0) - n_rev
    offsets = fwd_first + rev_first  # start of each row in the output
    # both parts are sorted by (row, col): an entry's place in its row is its rank in its own
    # part plus the number of entries of the other part of the row with a smaller column
    fwd_key, rev_key = fwd_rows * n + fwd_cols, rev_rows * n + rev_cols
    # (index_select and repeat_interleave: several times faster than tensor[index] on CPU)
    fwd_pos = (offsets - rev_first).repeat_interleave(n_fwd, output_size=fwd_rows.shape[0])
    fwd_pos += fwd_rank + torch.searchsorted(rev_key, fwd_key)
    rev_pos = torch.arange(rev_rows.shape[0], device=device)  # rank + rev_first
    rev_pos += (offsets - rev_first - fwd_first).index_select(0, rev_rows)
    rev_pos += torch.searchsorted(fwd_key, rev_key)
    del fwd_key, rev_key, fwd_rank
    total = fwd_rows.shape[0] + rev_rows.shape[0]
    rows = torch.empty(total, dtype=torch.int64, device=device)
    cols = torch.empty(total, dtype=torch.int64, device=device)
    vals = torch.empty(total, dtype=weights.dtype, device=device)
    rows[fwd_pos], cols[fwd_pos], vals[fwd_pos] = fwd_rows, fwd_cols, fwd_w
    rows[rev_pos], cols[rev_pos], vals[rev_pos] = rev_rows, rev_cols, rev_w
    return SparseAffinity(rows, cols, vals, int(n))


def reverse_weights_sorted(
    cols: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`reverse_weights` for neighbour lists sorted by column, by binary search.

    Entry ``(i, a)`` with ``j = cols[i, a]`` looks for ``i`` in row ``j`` by bisection:
    ``log2(k) + 1`` gathers per entry instead of :func:`reverse_weights`' ``k`` comparisons,
    with no array larger than a block of :data:`SEARCH_BLOCK` entries.
    """
    n, k = cols.shape
    device = cols.device
    flat, flat_w = cols.reshape(-1), weights.reshape(-1)
    out = torch.empty_like(weights)
    present = torch.empty((n, k), dtype=torch.bool, device=device)
    rows_per_block = max(1, SEARCH_BLOCK // k)
    for s in range(0, n, rows_per_block):
        e = min(n, s + rows_per_block)
        me = torch.arange(s, e, device=device, dtype=cols.dtype).repeat_interleave(k)
        lo = cols[s:e].reshape(-1).to(torch.int64).mul_(k)  # row j spans [j k, j k + k)
        hi = lo + k
        while True:  # lower bound of `me` in every row segment
            active = lo < hi
            if not bool(active.any()):
                break
            mid = (lo + hi).div_(2, rounding_mode="floor")
            less = flat.index_select(0, mid.clamp_max_(n * k - 1)) < me
            lo = torch.where(active & less, mid + 1, lo)
            hi = torch.where(active & ~less, mid, hi)
        pos = lo.clamp_max_(n * k - 1)
        found = flat.index_select(0, pos) == me
        found &= lo.div(k, rounding_mode="floor") == cols[s:e].reshape(-1)  # still in row j
        out[s:e] = torch.where(found, flat_w.index_select(0, pos), 0.0).view(e - s, k)
        present[s:e] = found.view(e - s, k)
    return out, present


def sorted_neighbour_lists(
    indices: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's neighbours sorted by index, as int32 when ``n < 2^31``, with their weights.

    The input of :func:`symmetrize_sorted_knn`; sorted in row blocks, so the only
    temporaries are one block's.
    """
    n, k = indices.shape
    narrow = torch.int32 if n < 2**31 - 1 else torch.int64
    cols = torch.empty((n, k), dtype=narrow, device=indices.device)
    out = torch.empty_like(weights)
    rows_per_block = max(1, SEARCH_BLOCK // k)
    for s in range(0, n, rows_per_block):
        block, order = torch.sort(indices[s : s + rows_per_block].to(narrow), dim=1)
        cols[s : s + rows_per_block] = block
        out[s : s + rows_per_block] = torch.gather(weights[s : s + rows_per_block], 1, order)
    return cols, out


def symmetrize_knn_compact(
    indices: torch.Tensor, weights: torch.Tensor, mode: str
) -> SparseAffinity:
    """The symmetric affinity of a kNN-shaped ``P`` in compact form.

    The same entries and values as :func:`symmetrize_knn` (and
    :meth:`SparseAffinity.symmetrize`), with int32 indices when ``n < 2^31`` and each row
    holding first its entries of ``P`` (ascending columns), then the entries of ``P^T``
    absent from ``P`` (ascending columns): no merge of the two runs. Every consumer sums
    over a row's entries, so the order within a row does not matter.

    Parameters
    ----------
    indices, weights
        ``(n, k)``: ``P[i, indices[i, a]] = weights[i, a]``, distinct indices per row.
    mode
        ``'sum'``, ``'mean'`` or ``'fuzzy_union'`` (see :func:`symmetrize_knn`).
    """
    cols, weights = sorted_neighbour_lists(indices, weights)
    return symmetrize_sorted_knn([cols, weights], mode)


def union_values(weights: torch.Tensor, back: torch.Tensor, mode: str) -> torch.Tensor:
    """``P + P^T`` (``'sum'``), its half (``'mean'``) or ``P + P^T - P * P^T``
    (``'fuzzy_union'``) on ``P``'s pattern, ``back`` holding ``P^T`` there; computed in
    place in ``weights`` (returned), in the order of :func:`symmetrize_knn`'s arithmetic,
    so that every builder of the symmetric P gives the same bits."""
    product = weights * back if mode == "fuzzy_union" else None
    fwd = weights.add_(back)
    if mode == "mean":
        fwd.mul_(0.5)
    elif product is not None:
        fwd.sub_(product)
    return fwd


def symmetrize_sorted_knn(lists: list[torch.Tensor], mode: str) -> SparseAffinity:
    """:func:`symmetrize_knn_compact` from :func:`sorted_neighbour_lists`' output.

    ``lists`` is ``[cols, weights]``; it is emptied, so that the lists are freed as soon as
    they are used when the caller holds no other reference. Peak memory: the result (12
    bytes per stored entry) plus about ``10 n k`` bytes (the lists and two masks); the
    entries are written in blocks of rows, with no edge-sized sort.
    """
    cols, weights = lists
    lists.clear()
    n = cols.shape[0]
    device, narrow = cols.device, cols.dtype
    back, present = reverse_weights_sorted(cols, weights)
    fwd = union_values(weights, back, mode)  # weights overwritten
    del back, weights
    # (j, i) is only in P^T where i is not among j's neighbours (its value is then fwd's)
    keep = fwd > 0
    alone = present.logical_not_().logical_and_(keep)
    del present
    n_fwd = keep.sum(1)
    n_rev = torch.zeros(n, dtype=torch.int64, device=device)
    rows_per_block = max(1, SEARCH_BLOCK // max(1, cols.shape[1]))
    for s in range(0, n, rows_per_block):
        n_rev += torch.bincount(
            cols[s : s + rows_per_block][alone[s : s + rows_per_block]], minlength=n
        )
    ends = torch.cumsum(n_fwd + n_rev, 0)
    total = int(ends[-1]) if n else 0
    out = (
        torch.empty(total, dtype=narrow, device=device),
        torch.empty(total, dtype=narrow, device=device),
        torch.empty(total, dtype=fwd.dtype, device=device),
    )
    starts = ends - n_fwd - n_rev
    del ends, n_rev
    filled = starts + n_fwd  # next free place of every row's P^T-only run
    for s in range(0, n, rows_per_block):
        e = min(n, s + rows_per_block)
        _place_forward(out, s, cols[s:e], fwd[s:e], keep[s:e], starts[s:e])
        _place_reverse(out, s, cols[s:e], fwd[s:e], alone[s:e], filled)
    return SparseAffinity(*out, int(n))


def _place_forward(out, s, cols, fwd, keep, starts) -> None:
    """Write the kept entries of ``P``'s rows ``s, s + 1, ...`` at ``starts`` onwards."""
    rows, out_cols, vals = out
    pos = torch.cumsum(keep, 1, dtype=torch.int64).sub_(1).add_(starts[:, None])[keep]
    ids = torch.arange(s, s + cols.shape[0], device=cols.device, dtype=rows.dtype)
    rows[pos] = ids.repeat_interleave(keep.sum(1))
    out_cols[pos], vals[pos] = cols[keep], fwd[keep]


def _place_reverse(out, s, cols, fwd, alone, filled) -> None:
    """Append the ``P^T``-only entries ``(j, i)`` of the rows ``i = s, s + 1, ...`` to their
    rows ``j``'s runs (``filled[j]``: next free place, advanced here).

    Rows are visited in increasing order and each block is sorted stably by ``j``, so every
    run holds its columns in increasing order.
    """
    rows, out_cols, vals = out
    targets = cols[alone]
    sources = torch.arange(s, s + cols.shape[0], device=cols.device, dtype=rows.dtype)
    sources = sources.repeat_interleave(alone.sum(1))
    w = fwd[alone]
    targets, order = torch.sort(targets, stable=True)
    sources, w = sources.index_select(0, order), w.index_select(0, order)
    # rank of each entry among the block's entries of the same row j
    counts = torch.bincount(targets, minlength=filled.shape[0])
    first = torch.cumsum(counts, 0).sub_(counts)
    rank = torch.arange(targets.shape[0], device=cols.device, dtype=torch.int64)
    pos = rank.sub_(first.index_select(0, targets)).add_(filled.index_select(0, targets))
    rows[pos], out_cols[pos], vals[pos] = targets, sources, w
    filled += counts


def in_csr_order(P: SparseAffinity) -> SparseAffinity:
    """``P`` (compact form: rows grouped, each row's columns in two sorted runs) with every
    row's columns in increasing order and int64 indices: :func:`symmetrize_knn`'s layout.

    Sorted in blocks of whole rows of about :data:`SEARCH_BLOCK` entries, written straight
    into the int64 result: at most the compact P, the result and one block's temporaries
    are held at once (32 bytes per entry), where :func:`symmetrize_knn` builds edge-sized
    keys, positions and copies.
    """
    n, total = P.n, P.nnz
    device = P.device
    rows = torch.empty(total, dtype=torch.int64, device=device)
    cols = torch.empty(total, dtype=torch.int64, device=device)
    vals = torch.empty(total, dtype=P.weights.dtype, device=device)
    counts = torch.bincount(P.rows.long(), minlength=n)
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    targets = torch.tensor(list(range(SEARCH_BLOCK, total, SEARCH_BLOCK)), dtype=crow.dtype)
    bounds = sorted({0, *torch.searchsorted(crow, targets.to(device)).tolist(), n})
    for r0, r1 in itertools.pairwise(bounds):
        e0, e1 = int(crow[r0]), int(crow[r1])
        if e1 <= e0:
            continue
        block_rows = P.rows[e0:e1].long()
        key = (block_rows - r0) * n + P.cols[e0:e1].long()
        order = torch.argsort(key)  # distinct keys: one order
        rows[e0:e1] = block_rows.index_select(0, order)
        cols[e0:e1] = P.cols[e0:e1].long().index_select(0, order)
        vals[e0:e1] = P.weights[e0:e1].index_select(0, order)
    return SparseAffinity(rows, cols, vals, int(n))
