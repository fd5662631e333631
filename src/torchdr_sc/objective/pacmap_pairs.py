"""PaCMAP's mid-near and further pairs, drawn once per fit from a seeded generator.

Besides its near pairs (:mod:`torchdr_sc.affinity.pacmap`), PaCMAP (Wang, Huang, Rudin &
Shaposhnik, JMLR 22(201), 2021, section 5) gives every point

- **mid-near pairs**, ``round(n_neighbors * MN_ratio)`` of them: each one is drawn as 6
  random other points, of which the second closest in the input space is kept (all the
  candidates of a point distinct). Their weak attraction, strong early in the
  optimisation, lays out the global structure;
- **further pairs**, ``round(n_neighbors * FP_ratio)`` of them: distinct random other
  points that are not among its near pairs, repelled throughout.

Both are drawn once, before the optimisation, as the pacmap package does. Each kind's draws
come from a seeded :class:`torch.Generator` on the data's device, in a fixed order, and
conflicts (a repeated point, a near partner) are redrawn in rounds in that same order, so
the same seed gives the same pairs on a device whatever the number of threads. Distances to the 6
candidates are summed over the features of each candidate on its own (one reduction per
output), and ties between candidates keep their draw order (stable sorts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._logging import get_logger
from ..affinity import SparseAffinity

__all__ = ["MID_NEAR_CANDIDATES", "further_pairs", "mid_near_pairs"]

logger = get_logger(__name__)

#: Random candidates of one mid-near pair; the second closest is kept.
MID_NEAR_CANDIDATES = 6
#: Bytes of one block of candidate coordinates (rows x candidates x features).
BLOCK_BYTES = 64 * 2**20
#: Rounds of redraws before giving up (never reached when the counts fit the data).
MAX_ROUNDS = 100_000


def draw_others(rows: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """For each entry of ``rows``, a point drawn uniformly among the ``n - 1`` others."""
    drawn = torch.randint(0, n - 1, rows.shape, generator=generator, device=rows.device)
    return drawn + (drawn >= rows).long()


def repeated(ids: torch.Tensor) -> torch.Tensor:
    """``(r, c)`` mask of the entries equal to an earlier entry of their row."""
    values, where = torch.sort(ids, dim=1, stable=True)  # equal values keep their order
    again = values[:, 1:] == values[:, :-1]
    mask = torch.zeros_like(ids, dtype=torch.bool)
    return mask.scatter_(1, where[:, 1:], again)


def redraw(
    ids: torch.Tensor,
    rows: torch.Tensor,
    n: int,
    generator: torch.Generator,
    forbidden: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Redraw, round after round, the entries of ``ids`` that repeat an earlier entry of
    their row or that ``forbidden(ids, rows)`` (a boolean mask) refuses."""
    for _ in range(MAX_ROUNDS):
        bad = repeated(ids) | forbidden(ids, rows)
        if not bool(bad.any()):
            return ids
        ids[bad] = draw_others(rows[bad], n, generator)
    msg = "could not draw distinct PaCMAP pairs (too few points for the pairs asked for)"
    raise RuntimeError(msg)


def candidate_distances(x: torch.Tensor, rows: torch.Tensor, cand: torch.Tensor, metric: str):
    """``(r, c)`` distances between the points ``rows`` and their candidates ``cand``, in an
    order-preserving form of ``metric`` (squared euclidean for the euclidean metrics and,
    on unit rows, for ``'cosine'``; L1 for ``'manhattan'``), in blocks of rows."""
    out = torch.empty(cand.shape, dtype=x.dtype, device=x.device)
    per_row = max(1, cand.shape[1] * x.shape[1] * x.element_size())
    size = max(1, BLOCK_BYTES // per_row)
    for s in range(0, rows.shape[0], size):
        e = min(s + size, rows.shape[0])
        diff = x[cand[s:e]] - x[rows[s:e]][:, None, :]
        if metric == "manhattan":
            out[s:e] = diff.abs().sum(-1)
        else:
            out[s:e] = (diff * diff).sum(-1)
    return out


def mid_near_pairs(
    x: torch.Tensor, n_mid_near: int, generator: torch.Generator, metric: str = "sqeuclidean"
) -> torch.Tensor:
    """``(n, n_mid_near)`` mid-near partners of every point (module notes).

    The ``6 n_mid_near`` candidates of a point are drawn at once, all distinct, and each
    group of 6 gives one pair: the pairs of a point are then distinct, as in the pacmap
    package (which keeps each group apart from the pairs chosen before it; the two draws
    differ only when ``n`` is a few times ``6 n_mid_near``).

    Parameters
    ----------
    x
        ``(n, d)`` input data.
    n_mid_near
        Pairs per point; fewer (logged) when ``n - 1`` points cannot give that many groups
        of 6 distinct candidates.
    generator
        Draws the candidates (on ``x``'s device).
    metric
        The input metric (one of ``torchdr_sc.knn.METRICS``).
    """
    n = x.shape[0]
    count = max(0, min(n_mid_near, (n - 1) // MID_NEAR_CANDIDATES))
    if count < n_mid_near:
        shown = (count, n_mid_near, n)
        logger.info("PaCMAP: %d mid-near pairs per point (of %d) on %d points", *shown)
    if count == 0:
        return torch.empty(n, 0, dtype=torch.long, device=x.device)
    if metric == "cosine":
        x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
    ids = torch.arange(n, device=x.device)
    rows = ids[:, None].expand(n, count * MID_NEAR_CANDIDATES)
    cand = redraw(draw_others(rows, n, generator), rows, n, generator, _nothing)
    dist = candidate_distances(x, ids, cand, metric).view(n, count, MID_NEAR_CANDIDATES)
    second = torch.sort(dist, dim=2, stable=True).indices[:, :, 1:2]
    return cand.view(n, count, MID_NEAR_CANDIDATES).gather(2, second).squeeze(2)


def _nothing(ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """No entry is refused (only repeats are redrawn)."""
    return torch.zeros_like(ids, dtype=torch.bool)


def further_pairs(near: SparseAffinity, n_further: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, n_further)`` further partners of every point: distinct, not the point, not one
    of its near pairs (the edges of ``near``); fewer (logged) when ``n`` is too small.

    Parameters
    ----------
    near
        The near pairs (edges ``rows[e] -> cols[e]``).
    n_further
        Pairs per point.
    generator
        Draws them (on ``near``'s device).
    """
    n, device = near.n, near.device
    rows_near, cols_near = near.rows.long(), near.cols.long()
    most_near = int(torch.bincount(rows_near, minlength=n).max()) if near.nnz else 0
    count = max(0, min(n_further, n - 1 - most_near))
    if count < n_further:
        logger.info("PaCMAP: %d further pairs per point (of %d) on %d points", count, n_further, n)
    keys = torch.sort(rows_near * n + cols_near).values

    def is_near(cand: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if keys.numel() == 0:
            return torch.zeros_like(cand, dtype=torch.bool)
        key = rows * n + cand
        at = torch.searchsorted(keys, key).clamp_max(keys.numel() - 1)
        return keys[at] == key

    rows = torch.arange(n, device=device)[:, None].expand(n, count)
    if count == 0:
        return torch.empty(n, 0, dtype=torch.long, device=device)
    cand = draw_others(rows, n, generator)
    return redraw(cand, rows, n, generator, is_near)
