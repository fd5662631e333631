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

from ..affinity import SparseAffinity
from .pairs import pair_terms

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


#: Rates are held as fixed-point integers with this many fractional bits.
RATE_BITS = 24


class EdgeSchedule:
    """Deterministic per-epoch edge selection with UMAP's ``epochs_per_sample`` rule.

    Edge ``e`` with relative weight ``r_e = w_e / max(w)`` is active at epoch ``t`` when
    ``floor((t + 1) r_e) > floor(t r_e)``, i.e. ``r_e`` times per epoch on average. The rate
    is held in fixed point, ``R_e = round(r_e 2^24)``, and the test is the integer identity
    ``(t R_e mod 2^24) + R_e >= 2^24`` (three integer operations per edge; int32 products
    may wrap, which leaves their low 24 bits exact).

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
        rows, cols, w = rows[keep], cols[keep], w[keep].double()
        rate = (w / w_max.double()).clamp_(max=1.0)
        self.fixed_rate = (rate * 2**RATE_BITS).round_().to(torch.int32)
        # int32 ids when they fit: the per-epoch gathers of the active edges and the fused
        # kernel's index loads move half the bytes (72.7 -> 65.5 ms per compiled epoch,
        # 200k points, 2 CPU cores, interleaved A/B)
        small = P.n < 2**31 - 1
        self.heads, self.tails = (rows.int(), cols.int()) if small else (rows, cols)
        self.mean_active = float(self.fixed_rate.sum(dtype=torch.int64)) / 2**RATE_BITS

    def active_mask(self, epoch: int) -> torch.Tensor:
        """Boolean mask of the edges active at ``epoch``."""
        R = self.fixed_rate
        one = 1 << RATE_BITS
        phase = ((epoch % one) * R).bitwise_and_(one - 1)
        return phase.add_(R) >= one

    def active(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads and tails of the edges active at ``epoch``."""
        on = self.active_mask(epoch).nonzero().view(-1)
        return self.heads[on], self.tails[on]


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
    if kernel.kind == "infonce":
        return "infonce"
    if kernel.kind == "largevis" or (kernel.a == 1.0 and kernel.b == 1.0):
        return "cauchy"
    return "umap"


def scatter_pair_terms(
    z: torch.Tensor,
    heads: torch.Tensor,
    tails: torch.Tensor,
    g_att: list[torch.Tensor],
    g_head: list[torch.Tensor],
) -> torch.Tensor:
    """Sum per-edge gradients into an ``(n, d)`` gradient like ``z``.

    Heads receive ``g_head``, tails ``-g_att`` (one ``(A,)`` vector per coordinate).
    """
    grad = torch.zeros((z.shape[1], z.shape[0]), dtype=z.dtype, device=z.device)
    for g, gh, ga in zip(grad, g_head, g_att, strict=True):
        g.index_add_(0, heads, gh)
        g.index_add_(0, tails, ga, alpha=-1.0)
    return grad.T
