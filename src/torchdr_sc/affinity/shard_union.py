"""The symmetric affinity of one block of rows, from that block's neighbour lists only.

Under ``torchrun`` the t-SNE family can keep P sharded by rows: each process calibrates the
rows it owns and keeps only their entries of the symmetric P, so that the memory P takes on a
process falls as processes are added. Row ``i`` of ``P + P^T`` needs, besides ``i``'s own list,
the entries ``P[j, i]`` of every row ``j`` that lists ``i``, which other processes hold: every
process sends each of its entries ``(j, i, P[j, i])`` to the owner of row ``i`` (one
all-to-all), then merges what it received with its own lists.

:func:`symmetrize_row_block` gives exactly the rows ``[start, stop)`` of
:func:`~torchdr_sc.affinity.knn_union.symmetrize_knn_compact` on the whole graph: the same
entries, values (the same floating-point operations) and order within each row (first the
entries of ``P``, ascending columns, then those of ``P^T`` alone, ascending columns).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .knn_union import union_values
from .sparse import SparseAffinity

#: ``exchange(dest, *columns)``: sends entry ``e`` of every column to process ``dest[e]`` and
#: returns the columns of the entries this process receives (in any grouping).
Exchange = Callable[..., tuple[torch.Tensor, ...]]


def owners(cols: torch.Tensor, block_starts: Sequence[int]) -> torch.Tensor:
    """The process owning each row id of ``cols``, from the first row of each block."""
    starts = torch.as_tensor(list(block_starts), dtype=torch.int64, device=cols.device)
    return torch.searchsorted(starts, cols.to(torch.int64), right=True).sub_(1)


def symmetrize_row_block(
    cols: torch.Tensor,
    weights: torch.Tensor,
    mode: str,
    *,
    start: int,
    n: int,
    block_starts: Sequence[int],
    exchange: Exchange,
) -> SparseAffinity:
    """Rows ``[start, start + m)`` of the symmetric affinity of a row-sharded kNN-shaped P.

    Parameters
    ----------
    cols, weights
        ``(m, k)``: this process's rows of the directed P, each row's columns ascending
        (:func:`~torchdr_sc.affinity.knn_union.sorted_neighbour_lists`), global ids.
    mode
        ``'sum'``, ``'mean'`` or ``'fuzzy_union'`` (see
        :func:`~torchdr_sc.affinity.knn_union.symmetrize_knn`).
    start, n
        First row of this block; number of rows of the whole P.
    block_starts
        First row of every process's block, in process order.
    exchange
        The all-to-all (see :data:`Exchange`).

    Returns
    -------
    SparseAffinity
        With ``row_range=(start, start + m)``; int32 indices when ``n < 2^31``.
    """
    m, k = cols.shape
    device = cols.device
    narrow = torch.int32 if n < 2**31 - 1 else torch.int64
    cols = cols.to(narrow)
    flat_cols, flat_w = cols.reshape(-1), weights.reshape(-1)
    ids = torch.arange(start, start + m, device=device, dtype=narrow).repeat_interleave(k)
    # every entry (i, j, P[i, j]) goes to the owner of row j, which reads it as P^T[j, i]
    dst, src, w_in = exchange(owners(flat_cols, block_starts), flat_cols, ids, flat_w)
    del ids
    in_key = (dst.to(torch.int64) - start) * n + src.to(torch.int64)
    in_key, order = torch.sort(in_key)
    w_in = w_in.index_select(0, order)
    del dst, src, order
    own_rows = torch.arange(m, device=device, dtype=torch.int64).repeat_interleave(k)
    own_key = own_rows.mul_(n).add_(flat_cols.to(torch.int64))  # ascending: rows, then cols
    present, pos = _find(own_key, in_key)
    back = w_in.index_select(0, pos) if w_in.numel() else torch.zeros_like(flat_w)
    back = torch.where(present, back, torch.zeros((), dtype=back.dtype)).view(m, k)
    del pos
    fwd = union_values(weights.clone(), back, mode)  # the caller's lists stay as they are
    del back
    keep = fwd > 0
    # entries of P^T alone: received (i, j) with i not among this row's neighbours
    received_is_own, _ = _find(in_key, own_key)
    del own_key, present
    rev = ~received_is_own & (w_in > 0)
    rev_key, rev_w = in_key[rev], w_in[rev]
    if mode == "mean":
        rev_w = rev_w * 0.5
    del in_key, w_in, rev, received_is_own
    return _assemble(cols, fwd, keep, rev_key, rev_w, start=start, n=n, narrow=narrow)


def _find(keys: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each key is in the sorted ``table``, and its place there (0 where absent)."""
    if table.numel() == 0:
        zeros = torch.zeros(keys.shape, dtype=torch.int64, device=keys.device)
        return zeros.bool(), zeros
    pos = torch.searchsorted(table, keys).clamp_max_(table.numel() - 1)
    found = table.index_select(0, pos) == keys
    return found, pos


def _assemble(
    cols: torch.Tensor,
    fwd: torch.Tensor,
    keep: torch.Tensor,
    rev_key: torch.Tensor,
    rev_w: torch.Tensor,
    *,
    start: int,
    n: int,
    narrow: torch.dtype,
) -> SparseAffinity:
    """Each row: its kept entries of ``P`` (ascending columns), then its ``P^T``-only ones."""
    m = cols.shape[0]
    device = cols.device
    rev_row = torch.div(rev_key, n, rounding_mode="floor")
    rev_col = rev_key - rev_row * n
    n_fwd = keep.sum(1)
    n_rev = torch.bincount(rev_row, minlength=m)
    ends = torch.cumsum(n_fwd + n_rev, 0)
    begins = ends - n_fwd - n_rev
    total = int(ends[-1]) if m else 0
    rows_out = torch.empty(total, dtype=narrow, device=device)
    cols_out = torch.empty(total, dtype=narrow, device=device)
    vals = torch.empty(total, dtype=fwd.dtype, device=device)
    pos = torch.cumsum(keep, 1, dtype=torch.int64).sub_(1).add_(begins[:, None])[keep]
    local = torch.arange(start, start + m, device=device, dtype=narrow)
    rows_out[pos] = local.repeat_interleave(n_fwd)
    cols_out[pos], vals[pos] = cols[keep], fwd[keep]
    first_rev = torch.cumsum(n_rev, 0).sub_(n_rev)  # rev entries are sorted by (row, col)
    rank = torch.arange(rev_row.shape[0], device=device, dtype=torch.int64)
    pos = rank.sub_(first_rev.index_select(0, rev_row)).add_(
        (begins + n_fwd).index_select(0, rev_row)
    )
    rows_out[pos] = rev_row.add(start).to(narrow)
    cols_out[pos], vals[pos] = rev_col.to(narrow), rev_w
    return SparseAffinity(rows_out, cols_out, vals, int(n), row_range=(start, start + m))
