"""InfoNC-t-SNE's block-pair terms in PyTorch with the C kernel's order of operations.

The PyTorch form of :func:`~torchdr_sc.objective.native_infonce.repulsion`'s pairs: the path of
a machine without a C compiler and of float64 embeddings, and the C kernel's reference in the
tests. It spells out the kernel's arithmetic step by step: every difference, square, sum,
quotient and product rounded on its own, each sum over a row or a column kept as
:data:`~torchdr_sc.objective.native_infonce.LANES` partial sums (lane ``l`` adds every
``LANES``-th entry from ``l`` on, in order) that are then added in order, every sum from
``+0``. Elementwise PyTorch operations round each result once and add in the order written,
so this gives the kernel's bits; it takes many more passes over memory than the kernel.
"""

from __future__ import annotations

import math

import torch

from .native_infonce import LANES

__all__ = ["block_pair_terms"]

#: Bytes of one chunk of ``(pairs, B, L)`` matrices.
CHUNK_BYTES = 32 * 2**20


def _sum_lanes(x: torch.Tensor, dim: int, count: int) -> torch.Tensor:
    """``x`` summed along ``dim`` (its first ``count`` entries) in :data:`LANES` lanes: lane
    ``l`` adds entries ``l, l + LANES, ...`` in order, then the lanes are added in order."""
    x = x.movedim(dim, -1)
    lanes = x.new_zeros(*x.shape[:-1], LANES)
    for j in range(0, count, LANES):
        part = x[..., j : min(j + LANES, count)]
        lanes[..., : part.shape[-1]] = lanes[..., : part.shape[-1]] + part
    total = x.new_zeros(x.shape[:-1])
    for lane in range(LANES):
        total = total + lanes[..., lane]
    return total


def block_pair_terms(
    zp: torch.Tensor,
    cp: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    mutual: torch.Tensor,
    dropped: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both blocks' repulsion terms of every pair, ``(pairs, B, d)`` each.

    Parameters
    ----------
    zp, cp
        ``(n_blocks, B, d)`` rows and ``(n_blocks, B)`` masses.
    left, right
        ``(pairs,)`` blocks of each pair.
    mutual
        ``(pairs,)``: 1 where the right block's own terms count, else 0.
    dropped
        Flat indices ``p * B * B + i * B + k`` of the entries that do not count.
    """
    _, B, d = zp.shape
    pairs = int(left.shape[0])
    L = math.ceil(B / LANES) * LANES
    tiny = torch.finfo(zp.dtype).tiny
    ga, gb = zp.new_empty(pairs, B, d), zp.new_empty(pairs, B, d)
    per_chunk = max(1, CHUNK_BYTES // (B * L * zp.element_size()))
    mutual = mutual.to(zp.dtype)
    for c0 in range(0, pairs, per_chunk):
        c1 = min(c0 + per_chunk, pairs)
        za = zp[left[c0:c1]]
        zk = zp.new_zeros(c1 - c0, L, d)
        zk[:, :B] = zp[right[c0:c1]]
        diffs = [za[:, :, None, c] - zk[:, None, :, c] for c in range(d)]
        den = 1.0 + diffs[0] * diffs[0]
        for diff in diffs[1:]:
            den = den + diff * diff
        w = 1.0 / den
        w[..., B:] = 0.0
        here = dropped[(dropped >= c0 * B * B) & (dropped < c1 * B * B)] - c0 * B * B
        w.view(-1)[(here // (B * B)) * B * L + (here % (B * B)) // B * L + here % B] = 0.0
        ca = cp[left[c0:c1]] / _sum_lanes(w, 2, L).clamp_min(tiny)
        cb = zp.new_zeros(c1 - c0, L)
        column = _sum_lanes(w, 1, B)[:, :B].clamp_min(tiny)
        cb[:, :B] = cp[right[c0:c1]] / column * mutual[c0:c1, None]
        coef = (ca[:, :, None] + cb[:, None, :]) * (w * w)
        for c, diff in enumerate(diffs):
            term = coef * diff
            ga[c0:c1, :, c] = _sum_lanes(term, 2, L)
            gb[c0:c1, :, c] = _sum_lanes(-term, 1, B)[:, :B]
    return ga, gb
