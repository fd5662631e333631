"""Objectives of new points placed on a fixed reference embedding (``transform``).

A new point ``i`` interacts with the reference points only: never with the other new points,
and the reference never moves. Its input affinity is one row ``p_i`` over its ``k`` nearest
reference points (rows summing to 1 for the t-SNE family, UMAP memberships otherwise), so
every new point has an objective of its own:

- t-SNE (Poličar, Stražar & Zupan, *openTSNE*, J. Stat. Softw. 2024; *Embedding to reference
  t-SNE space addresses batch effects in single-cell classification*, Machine Learning 2023):
  ``KL(p_i || q_i)`` with ``q_ij = w_ij / Z_i``, ``w_ij = (1 + |z_i - y_j|^2)^{-1}``,
  normalised over the new point's pairs with *all* reference points,
  ``Z_i = sum_j w_ij``. The repulsion ``sum_j w_ij^2 (z_i - y_j)`` and ``Z_i`` are exact
  (:class:`StudentRepulsion`, ``O(m n)`` in row blocks) or read from a grid of potentials of
  the reference computed once by FFT (:class:`GridStudentRepulsion`, ``O(m)`` per iteration
  after an ``O(n + G log G)`` set-up; 1-D and 2-D), as openTSNE's ``transform`` does.
- SNE: the same with the Gaussian kernel ``q_ij = softmax_j(-|z_i - y_j|^2)`` (exact).
- UMAP, LargeVis (McInnes, Healy & Melville 2018, section 4.3 and umap-learn's
  ``transform``): the method's negative-sampling loss on the edges ``i -> j`` of ``p_i``,
  sampled with UMAP's ``epochs_per_sample`` rule, negatives drawn among the reference points
  (:class:`SampledPartialEpoch`); only the heads (the new points) move.
- InfoTSNE: t-SNE's per-point objective with ``Z_i`` estimated from sampled reference
  points (:class:`~torchdr_sc.objective.infonce.SampledStudentRepulsion`).

Every gradient here is the exact gradient of the summed per-point objective (checked
against autograd in the tests); :func:`neighbour_mean` gives the starting positions.
"""

from __future__ import annotations

import math

import torch

from ..affinity import SparseAffinity
from .exact import BLOCK_BYTES, matvec_columns
from .interpolated import (
    MAX_BOXES_1D,
    MAX_BOXES_2D,
    SUPPORTED_DIMS,
    grid_potentials,
    read_potentials,
)
from .pairs import edge_negatives, hash_key, pair_terms
from .sampled import EdgeSchedule, SampledKernel, kernel_kind

__all__ = [
    "GridStudentRepulsion",
    "SampledPartialEpoch",
    "StudentRepulsion",
    "clip_rows",
    "neighbour_mean",
    "sne_partial_gradient",
    "tsne_partial_gradient",
]


def neighbour_mean(y: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of the reference positions of every new point's neighbours.

    Parameters
    ----------
    y
        ``(n, d)`` reference embedding.
    indices, weights
        ``(m, k)`` reference neighbours of the new points and their affinities; a row whose
        weights are all zero takes the plain mean of its neighbours.

    Returns
    -------
    ``(m, d)`` starting positions.
    """
    w = weights.to(y.dtype)
    total = w.sum(1, keepdim=True)
    w = torch.where(total > 0, w / total.clamp_min(torch.finfo(y.dtype).tiny), 1.0 / w.shape[1])
    return torch.einsum("mk,mkd->md", w, y[indices])


def clip_rows(grad: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale down, in place, the rows of ``grad`` whose norm exceeds ``max_norm``.

    openTSNE's ``max_grad_norm``: keeps a new point that starts on top of reference points
    (large repulsion) from being thrown out of the embedding.
    """
    if max_norm is None:
        return grad
    norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
    return grad.mul_((max_norm / norm.clamp_min(1e-12)).clamp_max(1.0))


def _row_blocks(m: int, width: int, itemsize: int) -> range:
    """Starts of row blocks such that ``block x width`` values fit :data:`BLOCK_BYTES`."""
    return range(0, m, max(1, BLOCK_BYTES // max(1, width * itemsize)))


class StudentRepulsion:
    """Exact ``Z_i = sum_j w_ij`` and ``sum_j w_ij^2 (z_i - y_j)`` over the reference.

    ``O(m n)`` per call in row blocks of at most :data:`~torchdr_sc.objective.exact.BLOCK_BYTES`
    per temporary: no ``m x n`` matrix is allocated.

    Parameters
    ----------
    y
        ``(n, d)`` reference embedding (fixed).
    """

    def __init__(self, y: torch.Tensor) -> None:
        self.y = y
        self.coords = y.T.contiguous()
        self.sq = (y * y).sum(1)

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Z, rep)`` of shapes ``(m,)`` and ``(m, d)`` for the points ``z``."""
        m, n = z.shape[0], self.y.shape[0]
        zsum = torch.empty(m, dtype=z.dtype, device=z.device)
        rep = torch.empty_like(z)
        step = _row_blocks(m, n, z.element_size()).step
        for s in range(0, m, step):
            zb = z[s : s + step]
            d2 = torch.addmm(self.sq[None, :], zb, self.coords, alpha=-2.0)
            w = d2.add_((zb * zb).sum(1, keepdim=True) + 1.0).clamp_min_(1.0).reciprocal_()
            zsum[s : s + step] = w.sum(1)
            w2 = w.square_()
            rep[s : s + step] = zb * w2.sum(1, keepdim=True) - matvec_columns(w2, self.coords)
        return zsum, rep


class GridStudentRepulsion:
    """:class:`StudentRepulsion` read from potentials of the reference on a fixed grid.

    The grid covers the reference's bounding box widened by ``padding`` of its span on every
    side, in boxes of at most ``ints_in_interval`` (at least ``min_num_intervals`` boxes, at
    most :data:`~torchdr_sc.objective.interpolated.MAX_BOXES_2D` in 2-D); the potentials of
    the reference's charges are computed once by FFT
    (:func:`~torchdr_sc.objective.interpolated.grid_potentials`), after which a call costs
    ``O(m p^d)``. Points outside the grid get exact sums (:class:`StudentRepulsion`).

    Parameters
    ----------
    y
        ``(n, d)`` reference embedding, ``d`` in
        :data:`~torchdr_sc.objective.interpolated.SUPPORTED_DIMS`.
    n_interpolation_points, min_num_intervals, ints_in_interval
        The grid, as :class:`~torchdr_sc.estimators.TSNE`'s parameters of the same names.
    padding
        Margin of the grid around the reference, as a fraction of its span.
    """

    def __init__(
        self,
        y: torch.Tensor,
        *,
        n_interpolation_points: int = 4,
        min_num_intervals: int = 50,
        ints_in_interval: float = 1.0,
        padding: float = 0.1,
    ) -> None:
        if y.shape[1] not in SUPPORTED_DIMS:
            msg = f"The interpolated repulsion supports 1-D and 2-D embeddings; got {y.shape[1]}-D."
            raise ValueError(msg)
        low, high = float(y.min()), float(y.max())
        span = max(high - low, 1e-12)
        full = span * (1.0 + 2.0 * padding)
        cap = MAX_BOXES_2D if y.shape[1] == 2 else MAX_BOXES_1D
        self.boxes = min(max(math.ceil(full / ints_in_interval), min_num_intervals), cap)
        self.lo, self.width, self.p = (
            low - padding * span,
            full / self.boxes,
            n_interpolation_points,
        )
        self.hi = self.lo + full
        self.potentials = grid_potentials(y, self.lo, self.width, self.boxes, self.p)
        self.exact = StudentRepulsion(y)

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Z, rep)`` of shapes ``(m,)`` and ``(m, d)`` for the points ``z``."""
        sums = read_potentials(self.potentials, z, self.lo, self.width, self.boxes, self.p)
        zsum = sums[0]
        rep = z * sums[1][:, None] - sums[2:].T
        outside = ((z <= self.lo) | (z >= self.hi)).any(1).nonzero().view(-1)
        if outside.numel():
            zsum[outside], rep[outside] = self.exact(z[outside])
        return zsum, rep


def _attraction_blocks(
    z: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, p: torch.Tensor, kernel: str
) -> torch.Tensor:
    """``sum_j p_ij k_ij (z_i - y_j)`` over each new point's neighbours, in row blocks.

    ``k_ij = w_ij`` (Cauchy) for ``kernel='student'``, 1 for ``'gaussian'``.
    """
    out = torch.empty_like(z)
    m, k = indices.shape
    step = _row_blocks(m, k * z.shape[1], z.element_size()).step
    for s in range(0, m, step):
        diff = z[s : s + step, None, :] - y[indices[s : s + step]]  # (b, k, d)
        coef = p[s : s + step].to(z.dtype)
        if kernel == "student":
            coef = coef / (1.0 + diff.square().sum(-1))
        out[s : s + step] = torch.einsum("bk,bkd->bd", coef, diff)
    return out


def tsne_partial_gradient(
    z: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    p: torch.Tensor,
    exaggeration: float,
    repulsion: StudentRepulsion | GridStudentRepulsion,
) -> torch.Tensor:
    """Gradient of ``sum_i KL(p_i || q_i)`` for new points ``z`` on the fixed reference ``y``.

    ``grad_i = 2 (e sum_j p_ij w_ij (z_i - y_j) - sum_j w_ij^2 (z_i - y_j) / Z_i)`` where the
    first sum runs over the point's neighbours and the second over all reference points
    (``repulsion``; ``Z_i = sum_j w_ij``); ``e`` is the exaggeration.

    Parameters
    ----------
    z
        ``(m, d)`` positions of the new points.
    y
        ``(n, d)`` reference embedding.
    indices, p
        ``(m, k)`` reference neighbours and the rows of P over them (each summing to 1).
    exaggeration
        Multiplier of the attraction.
    repulsion
        The repulsion sums over the reference.
    """
    attraction = _attraction_blocks(z, y, indices, p, "student")
    zsum, rep = repulsion(z)
    return 2.0 * (exaggeration * attraction - rep / zsum[:, None])


def sne_partial_gradient(
    z: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    p: torch.Tensor,
    exaggeration: float,
) -> torch.Tensor:
    """Gradient of ``sum_i KL(p_i || q_i)`` with ``q_ij = softmax_j(-|z_i - y_j|^2)`` (SNE).

    ``grad_i = 2 (e sum_j p_ij (z_i - y_j) - sum_j q_ij (z_i - y_j))``, the softmax over
    all reference points, exact in row blocks (``O(m n)``).
    """
    grad = _attraction_blocks(z, y, indices, p, "gaussian").mul_(exaggeration)
    coords, sq = y.T.contiguous(), (y * y).sum(1)
    m, n = z.shape[0], y.shape[0]
    step = _row_blocks(m, n, z.element_size()).step
    for s in range(0, m, step):
        zb = z[s : s + step]
        d2 = torch.addmm(sq[None, :], zb, coords, alpha=-2.0) + (zb * zb).sum(1, keepdim=True)
        q = torch.softmax(-d2.clamp_min_(0.0), dim=1)
        grad[s : s + step] -= zb * q.sum(1, keepdim=True) - matvec_columns(q, coords)
    return grad.mul_(2.0)


class SampledPartialEpoch:
    """Negative-sampling gradient of new points on a fixed reference, one epoch per call.

    The edges ``i -> j`` of the new points' rows are active with UMAP's ``epochs_per_sample``
    frequency (:class:`~torchdr_sc.objective.sampled.EdgeSchedule`); every active edge draws
    ``n_negatives`` uniform reference points as negatives (umap-learn's ``transform``), with
    the fit's sampler (:func:`~torchdr_sc.objective.pairs.edge_negatives`). The
    per-pair terms are those of the fit (:func:`~torchdr_sc.objective.pairs.pair_terms`,
    same kernel and clipping); only the new points receive gradient.

    Parameters
    ----------
    y
        ``(n, d)`` reference embedding.
    indices, weights
        ``(m, k)`` reference neighbours of the new points and the edge weights.
    kernel
        The fit's objective and its constants.
    n_negatives
        Negatives per active edge.
    seed
        Seeds the negatives (same seed, same negatives).
    discard_tails
        Replace a negative equal to the edge's tail by the next reference point.
    """

    def __init__(
        self,
        y: torch.Tensor,
        indices: torch.Tensor,
        weights: torch.Tensor,
        kernel: SampledKernel,
        n_negatives: int,
        *,
        seed: int,
        discard_tails: bool = False,
    ) -> None:
        n, d = y.shape
        m, k = indices.shape
        heads = torch.arange(n, n + m, device=y.device).repeat_interleave(k)
        edges = SparseAffinity(heads, indices.reshape(-1), weights.reshape(-1), n + m)
        self.schedule = EdgeSchedule(edges)
        self.n_ref, self.kernel, self.n_negatives = n, kernel, int(n_negatives)
        self.kind, self.discard_tails = kernel_kind(kernel), bool(discard_tails)
        self.work = self.schedule.mean_active * (self.n_negatives + 1)
        # reference and new points in one buffer: the pair terms index a single embedding
        self.buffer = torch.empty(n + m, d, dtype=y.dtype, device=y.device)
        self.buffer[:n] = y
        self.seed = int(seed)

    def gradient(self, z: torch.Tensor, epoch: int, exaggeration: float = 1.0) -> torch.Tensor:
        """Gradient ``(m, d)`` of the new points at epoch ``epoch`` (descend along ``-grad``)."""
        n = self.n_ref
        self.buffer[n:] = z
        heads, tails = self.schedule.active(epoch)
        key = hash_key(self.seed, epoch, heads.device)
        negatives = [
            edge_negatives(
                key, heads, tails, j, self.n_negatives, n, discard_tails=self.discard_tails
            )
            for j in range(self.n_negatives)
        ]
        k = self.kernel
        consts = torch.tensor(
            [k.a, k.b, k.repulsion, k.clip, exaggeration], dtype=z.dtype, device=z.device
        )
        coords = list(self.buffer.unbind(1))
        _, g_head = pair_terms(coords, heads, tails, negatives, consts, self.kind)
        grad = torch.zeros((z.shape[1], z.shape[0]), dtype=z.dtype, device=z.device)
        local = heads - n
        for g, gh in zip(grad, g_head, strict=True):
            g.index_add_(0, local, gh)
        return grad.T
