"""Ties between exact duplicates in a kNN result, broken at random.

Every query picks its neighbours among a group of equal rows from its own pseudo-random
place in the group, instead of the first rows of the group by index for every query. Left
to the index order, all copies of a duplicated row choose the same few cells, which become
hubs linked to most of the data; the negative-sampling epochs then sum hundreds of steps
into those cells and throw them far off (UMAP and LargeVis on data with 90 % duplicated
rows reached coordinates of 250 instead of 5). Applied to the result of every backend that
builds on :class:`~torchdr_sc.knn.common.CandidateSearch` (torch, faiss, keops), and to the
streamed search, which hashes the rows chunk by chunk (:func:`row_hashes`) and groups them
from the hashes alone (:func:`groups_from_hashes`) before the same step (:func:`spread_ties`).
"""

from __future__ import annotations

import torch

from .common import block_bytes, rows_per_block

__all__ = [
    "duplicate_groups",
    "groups_from_hashes",
    "mix64",
    "row_hashes",
    "spread_duplicate_ties",
    "spread_ties",
]


#: Odd 64-bit constants of splitmix64 (Steele, Lea & Flood 2014), written as int64.
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15
_MIX_A = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX_B = -7723592293110705685  # 0x94D049BB133111EB
#: Salts that make the hashes of rows, of members and of (query, group) pairs independent.
_SALT_ROWS, _SALT_MEMBERS, _SALT_OFFSETS = 0x5EED0001, 0x5EED0002, 0x5EED0003


def _shift_right(h: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch shifts signed integers arithmetically)."""
    return (h >> bits) & ((1 << (64 - bits)) - 1)


def mix64(h: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 keys: a bijection whose outputs look uniformly random.

    Integer products wrap modulo ``2^64`` on every torch device, as the finaliser needs.

    Parameters
    ----------
    h
        int64 keys, any shape.

    Returns
    -------
    torch.Tensor
        int64 hashes, same shape and device.
    """
    h = (h ^ _shift_right(h, 30)) * _MIX_A
    h = (h ^ _shift_right(h, 27)) * _MIX_B
    return h ^ _shift_right(h, 31)


def row_hashes(X: torch.Tensor) -> torch.Tensor:
    """int64 hash of the bits of every row of ``X``: equal rows (bitwise) hash equally.

    Row by row, so a matrix read in chunks hashes to the concatenation of its chunks' hashes.
    """
    n, d = X.shape
    as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[X.element_size()]
    salt = torch.arange(d, dtype=torch.int64, device=X.device) + _SALT_ROWS
    weights = mix64(salt * _GOLDEN) | 1
    out = torch.empty(n, dtype=torch.int64, device=X.device)
    step = rows_per_block(d, 8, block_bytes(X.device))
    for s in range(0, n, step):
        bits = X[s : s + step].contiguous().view(as_int).to(torch.int64)
        out[s : s + step] = (bits * weights).sum(1)
    return mix64(out)


def duplicate_groups(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Groups of rows of ``X`` that are exactly equal, or ``None`` when all rows differ.

    Rows are grouped by a hash of their bits (splitmix64, one pass over ``X``); rows of
    a group are then compared with the group's first row, and a hash collision between
    different rows (not expected to ever happen) falls back to an exact
    ``torch.unique(X, dim=0)``.

    Parameters
    ----------
    X
        ``(n, d)`` data.

    Returns
    -------
    tuple of torch.Tensor or None
        ``group``: ``(n,)`` int64 group id of every row (equal rows, equal ids);
        ``counts``: ``(n_groups,)`` size of every group. ``None`` when no two rows are
        equal.
    """
    n = X.shape[0]
    grouped = groups_from_hashes(row_hashes(X))
    if grouped is None:
        return None
    group, counts = grouped
    ids = torch.arange(n, device=X.device)
    first = torch.full_like(counts, n).scatter_reduce_(0, group, ids, "amin")
    rows = (counts[group] > 1).nonzero().view(-1)
    if not bool((X[rows] == X[first[group[rows]]]).all()):
        _, group, counts = torch.unique(X, dim=0, return_inverse=True, return_counts=True)
        if counts.numel() == n:
            return None
    return group, counts


def groups_from_hashes(hashes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Groups of rows with equal :func:`row_hashes` (``(group, counts)`` as
    :func:`duplicate_groups`), or ``None`` when all hashes differ.

    Without the rows to compare, a group is trusted to hold equal rows: two different rows
    share a 64-bit hash with probability about ``n^2 / 2^65`` (3e-6 for 10 million rows).
    """
    _, group, counts = torch.unique(hashes, return_inverse=True, return_counts=True)
    if counts.numel() == hashes.numel():
        return None
    return group, counts


def _rank_in_runs(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every entry among the entries with the same key (in order), and their count."""
    order = torch.argsort(keys, stable=True)
    ordered = keys[order]
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    position = torch.arange(ordered.numel(), device=keys.device)
    run_start = torch.where(starts, position, 0).cummax(0).values
    run = starts.cumsum(0) - 1
    run_length = torch.bincount(run)
    rank, length = torch.empty_like(position), torch.empty_like(position)
    rank[order] = position - run_start
    length[order] = run_length[run]
    return rank, length


def spread_duplicate_ties(
    indices: torch.Tensor, X: torch.Tensor, self_search: bool
) -> torch.Tensor:
    """Neighbour ``indices`` with the ties between exact duplicates broken at random.

    All rows of a group of equal rows of ``X`` are at the same distance from any query, so
    any of them can stand for another in a kNN result. A search breaks these ties by index,
    the same way for every query, so every copy of a duplicated row picks the same few
    cells, which become hubs of the graph (each one the neighbour of every copy). Here, a
    query with ``t`` neighbours in a group of ``c`` equal rows gets the ``t`` members that
    follow a pseudo-random offset (a hash of the query and the group) in a pseudo-random
    order of the group, skipping the query itself: each member is then chosen by about
    ``t`` queries. Deterministic (no seed: the graph depends on the data only), and the
    identity when no two rows of ``X`` are equal.

    Parameters
    ----------
    indices
        ``(m, k)`` distinct candidates of every query row, the query itself excluded.
    X
        ``(n, d)`` searched data (duplicates are bitwise equal rows).
    self_search
        Whether query row ``r`` is row ``r`` of ``X`` (it is then never chosen).

    Returns
    -------
    torch.Tensor
        ``(m, k)`` indices, each one equal to the input or to a row equal to it.
    """
    groups = duplicate_groups(X)
    if groups is None:
        return indices
    return spread_ties(indices, *groups, self_search)


def spread_ties(
    indices: torch.Tensor,
    group: torch.Tensor,
    counts: torch.Tensor,
    self_search: bool,
    query_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`spread_duplicate_ties` from the groups of the data (``(group, counts)`` of
    :func:`duplicate_groups` or :func:`groups_from_hashes`).

    Parameters
    ----------
    indices
        ``(m, k)`` distinct candidates of every query row, the query itself excluded.
    group, counts
        Group id of every data row, size of every group.
    self_search
        Whether the queries are rows of the data (``query_ids``) and never their own
        neighbours.
    query_ids
        Data row of every query row in a self search (default ``0 .. m - 1``; a shard of
        rows passes its own). The pseudo-random choices depend on these ids, so a search in
        shards gives the graph of one search of all rows.

    Returns
    -------
    torch.Tensor
        ``(m, k)`` indices, each one equal to the input or to a row equal to it.
    """
    device = indices.device
    group, counts = group.to(device), counts.to(device)
    if query_ids is None:
        query_ids = torch.arange(indices.shape[0], device=device)
    g = group[indices]
    rows, cols = (counts[g] > 1).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return indices
    g = g[rows, cols]
    queries = query_ids.to(device)[rows]
    # a query's entries in one group: their rank, and how many there are
    key = queries * counts.numel() + g
    rank, taken = _rank_in_runs(key)
    own = (group[queries] == g) if self_search else torch.zeros_like(g, dtype=torch.bool)
    size = counts[g] - own.long()
    # members of every group, consecutive, in a pseudo-random order
    n = group.shape[0]
    ids = torch.arange(n, device=device)
    shuffled = torch.argsort(mix64((ids + _SALT_MEMBERS) * _GOLDEN))
    members = shuffled[torch.argsort(group[shuffled], stable=True)]
    first = torch.cumsum(counts, 0) - counts
    place = torch.empty_like(ids)
    place[members] = ids - first[group[members]]
    offset = torch.remainder(mix64(key * _GOLDEN + _SALT_OFFSETS), size.clamp_min(1))
    slot = torch.remainder(offset + rank, size.clamp_min(1))
    if self_search:
        slot += (own & (slot >= place[queries])).long()  # skip the query itself
    keep = taken <= size  # always, for distinct candidates; guards repeated ones
    out = indices.clone()
    out[rows[keep], cols[keep]] = members[first[g] + slot][keep]
    return out
