"""Negative-sampling objectives: UMAP, LargeVis and InfoNC-t-SNE, with closed-form gradients.

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
- InfoNC-t-SNE (Damrich et al. 2023): ``q = 1 / (1 + d^2)``,
  loss ``-log(q_ij / (q_ij + sum_k q_ik))``.

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

from ..graph import SparseAffinity

#: Squared-distance offset in the repulsive gradient, as in umap-learn.
REPULSION_EPS = 1e-3

#: Below this many pair evaluations per epoch, the CPU loop runs on one intra-op thread:
#: an epoch is then ~40 small kernels whose thread fork/join costs more than it saves
#: (measured on digits: 1.4 ms per epoch on one thread, 6.9 ms on two busy cores).
SINGLE_THREAD_WORK = 2**19


@contextlib.contextmanager
def single_cpu_thread(enabled: bool) -> Iterator[None]:
    """Run the block with one torch intra-op thread, restoring the setting afterwards."""
    if not enabled:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class SampledKernel:
    """Which negative-sampling objective to use and its constants.

    Attributes
    ----------
    kind
        ``'umap'``, ``'largevis'`` or ``'infonce'``.
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


class EdgeSchedule:
    """Deterministic per-epoch edge selection with UMAP's ``epochs_per_sample`` rule.

    Edge ``e`` with relative weight ``r_e = w_e / max(w)`` is active at epoch ``t`` when
    ``floor((t + 1) r_e) > floor(t r_e)``, i.e. ``r_e`` times per epoch on average. Edges
    with ``r_e == 1`` are active every epoch and skip the test.

    Parameters
    ----------
    P
        Input affinity (directed edges; pass the symmetrised one).
    rows_of
        Optional ``(start, stop)`` to keep only edges whose head is owned by this process.
    """

    def __init__(self, P: SparseAffinity, rows_of: tuple[int, int] | None = None) -> None:
        rows, cols, w = P.rows, P.cols, P.weights
        w_max = w.max() if w.numel() else w.new_ones(())  # of all of P: shards agree
        keep = w > 0
        if rows_of is not None:
            keep &= (rows >= rows_of[0]) & (rows < rows_of[1])
        rows, cols, w = rows[keep], cols[keep], w[keep].float()
        rate = w / w_max.float()
        always = rate >= 1.0
        self.head_always, self.tail_always = rows[always], cols[always]
        self.heads, self.tails = rows[~always], cols[~always]
        self.rate = rate[~always]
        self.mean_active = float(rate.sum()) if rate.numel() else 0.0

    def active(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads and tails of the edges active at ``epoch``."""
        r = self.rate
        on = torch.floor((epoch + 1) * r) > torch.floor(epoch * r)
        heads = torch.cat([self.head_always, self.heads[on]])
        tails = torch.cat([self.tail_always, self.tails[on]])
        return heads, tails


def _pow_b(d2: torch.Tensor, b: float) -> torch.Tensor:
    return d2 if b == 1.0 else d2.clamp_min(1e-12).pow(b)


def _coefficients(
    d2: torch.Tensor, nd2: torch.Tensor, kernel: SampledKernel, exaggeration: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair gradient coefficients: ``grad_i += coef * (z_i - z_other)``."""
    a, b = kernel.a, kernel.b
    if kernel.kind == "infonce":
        q_pos = (1.0 + d2).reciprocal_()
        q_neg = (1.0 + nd2).reciprocal_()
        total = q_neg.sum(1).add_(q_pos)
        # d/dz_i of -exaggeration * log q_ij + log(q_ij + sum_k q_ik), q = 1 / (1 + d^2)
        att = 2.0 * q_pos * (exaggeration - q_pos / total)
        rep = q_neg.square_().mul_((-2.0 / total)[:, None])
        return att, rep
    d2b = _pow_b(d2, b)
    att = (exaggeration * 2.0 * a * b) * d2b / (d2.clamp_min(1e-12) * (1.0 + a * d2b))
    att = torch.where(d2 > 0, att, torch.zeros_like(att))
    nd2b = _pow_b(nd2, b)
    denom = (nd2 + REPULSION_EPS).mul_(nd2b.mul_(a).add_(1.0))
    rep = denom.reciprocal_().mul_(-2.0 * kernel.repulsion * b)
    return att, rep


def sampled_gradient(
    z: torch.Tensor,
    heads: torch.Tensor,
    tails: torch.Tensor,
    negatives: torch.Tensor,
    kernel: SampledKernel,
    exaggeration: float = 1.0,
) -> torch.Tensor:
    """Gradient (descent direction is ``-grad``) of one epoch's sampled loss.

    Works coordinate by coordinate on contiguous 1-D vectors (gathers with ``index_select``
    and scatters with ``index_add_``), which is several times faster on CPU than indexing
    ``(n, d)`` rows and never materialises a ``(edges, negatives, d)`` tensor.

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
    n_active, m = negatives.shape
    coords = z.T.contiguous()  # (d, n): one contiguous vector per coordinate
    flat_neg = negatives.reshape(-1)
    z_head = [c.index_select(0, heads) for c in coords]
    diff = [zh - c.index_select(0, tails) for zh, c in zip(z_head, coords, strict=True)]
    ndiff = [
        zh[:, None] - c.index_select(0, flat_neg).view(n_active, m)
        for zh, c in zip(z_head, coords, strict=True)
    ]
    d2 = sum(dc * dc for dc in diff)
    nd2 = sum(nc * nc for nc in ndiff)
    att, rep = _coefficients(d2, nd2, kernel, exaggeration)
    clip = kernel.clip
    grad = torch.zeros_like(coords)
    for g, dc, nc in zip(grad, diff, ndiff, strict=True):
        g_att = dc.mul_(att).clamp_(-clip, clip)
        g_rep = nc.mul_(rep).clamp_(-clip, clip).sum(1)
        g.index_add_(0, heads, g_att + g_rep)
        g.index_add_(0, tails, g_att, alpha=-1.0)
    return grad.T.contiguous()


def draw_negatives(
    n: int, n_active: int, n_negatives: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Uniform negatives ``(n_active, n_negatives)`` in ``[0, n)``.

    Drawn as int32 when ``n`` allows it (about twice as fast on CPU as int64, and half the
    memory traffic in the gathers that use them).
    """
    dtype = torch.int32 if n < 2**31 - 1 else torch.int64
    out = torch.empty((n_active, n_negatives), dtype=dtype, device=device)
    return out.random_(0, n, generator=generator)
