"""CO-SNE's objective: t-SNE in the Poincaré ball, plus a norm-matching term.

CO-SNE (Guo, Guo & Yu, *CO-SNE: Dimensionality Reduction and Visualization for Hyperbolic
Data*, CVPR 2022) embeds in the Poincaré ball (:mod:`~torchdr_sc.objective.poincare`). With
``D_ij`` the squared hyperbolic distance of two embedded points, its output similarity is the
hyperbolic Cauchy kernel ``w_ij = gamma / (D_ij + gamma^2)``, and the loss (TorchDR's form)

``L = -sum_ij P_ij log w_ij + log sum_{i != j} w_ij + lambda1 / n sum_i (|x_i|^2 - d(0, y_i)^2)^2``

is t-SNE's KL divergence (up to a constant; ``P`` scaled to sum 1) plus the paper's
"h-loss": each point's squared hyperbolic distance to the origin pulled towards the squared
norm of its input row, so that points near the input's origin (the root of a hierarchy, for
hyperbolic input) stay near the ball's centre.

Writing ``a_i = 1 - |y_i|^2``, ``u_ij = |y_i - y_j|^2`` and ``t_ij = 2 u_ij / (a_i a_j)``,
``D_ij = arccosh(1 + t_ij)^2`` and

``dD_ij / dy_i = 8 r(t_ij) / (a_i a_j) ((y_i - y_j) + u_ij y_i / a_i)``, with
``r(t) = arccosh(1 + t) / sqrt(t (t + 2))`` (1 at ``t = 0``).

The attraction runs over P's edges (each edge adds to both of its points), the repulsion over
all pairs in row blocks, each pair once (``O(n^2)`` per iteration, no ``n x n`` matrix
beyond a block). The differences ``y_i - y_j`` are formed coordinate by coordinate, not as
``|y_i|^2 + |y_j|^2 - 2 y_i . y_j``: near the boundary ``a_i a_j`` is small and that
cancellation would be magnified by ``1 / (a_i a_j)``.

No FFT or sampled path: the interpolation of :mod:`~torchdr_sc.objective.interpolated`
needs a kernel of the Euclidean difference ``y_i - y_j`` (a convolution); the hyperbolic
kernel depends on ``|y_i|`` and ``|y_j|`` too, so it is not one.

Every sum is a row or column sum (one thread per output), an ``index_add_`` over P's edges
or :func:`~torchdr_sc._reduce.fixed_order_sum`, and the transcendental functions are
``sqrt`` and ``log1p``: the same bits whatever the number of CPU threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._logging import get_logger
from .._reduce import fixed_order_sum
from ..affinity import SparseAffinity
from ..distributed import RowShard
from .poincare import distance_to_origin, max_norm

__all__ = ["COSNEObjective", "cosne_gradient", "h_loss_gradient"]

logger = get_logger(__name__)

#: Pairs per row block of the repulsion: its dozen temporaries (``block x n`` each) stay in
#: a core's cache, which the chain of elementwise operations is bound by.
BLOCK_PAIRS = 1 << 16


def _row_blocks(shard: RowShard, n: int) -> list[tuple[int, int]]:
    """The shard's rows in blocks whose tiles (rows ``[s, e)``, columns ``[s, n)``) hold
    about :data:`BLOCK_PAIRS` pairs (at least one row each)."""
    blocks, s = [], shard.start
    while s < shard.stop:
        e = min(s + max(1, BLOCK_PAIRS // max(1, n - s)), shard.stop)
        blocks.append((s, e))
        s = e
    return blocks


def _pair_coefficients(
    diffs: list[torch.Tensor], half_a_i: torch.Tensor, a_j: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u, v, q)`` of pairs from their coordinate differences, ``a_i / 2`` and ``a_j``
    (``a = 1 - |y|^2``): ``u = |y_i - y_j|^2``, ``v = 1 / (D + gamma^2)`` (the kernel is
    ``gamma v``) and ``q = r(t) / (a_i a_j / 2)``, so that ``dD/dy_i = 4 q ((y_i - y_j) +
    u y_i / a_i)``. In place where it can (the repulsion's blocks run through this every
    iteration); ``q`` is 0 where ``t = 0`` (there ``y_i = y_j`` and ``dD/dy_i = 0``)."""
    u = diffs[0] * diffs[0]
    for dc in diffs[1:]:
        u.addcmul_(dc, dc)
    half_aa = half_a_i * a_j
    t = torch.div(u, half_aa)
    root = (t + 2.0).mul_(t).sqrt_()
    acosh = torch.add(t, root).log1p_()
    q = torch.div(acosh, root.clamp_min_(torch.finfo(t.dtype).tiny)).div_(half_aa)
    v = acosh.square_().add_(gamma * gamma).reciprocal_()
    return u, v, q


def _attraction(
    z: torch.Tensor, a: torch.Tensor, P: SparseAffinity, gamma: float, shard: RowShard
) -> torch.Tensor:
    """``sum_edges P_ij / (D_ij + gamma^2) dD_ij`` for the shard's edges, added to both ends
    (``P`` as given; the caller scales)."""
    n = z.shape[0]
    rows, cols, p = P.rows, P.cols, P.weights.to(z.dtype)
    if shard.start or shard.stop < n:
        mask = (P.rows >= shard.start) & (P.rows < shard.stop)
        rows, cols, p = rows[mask], cols[mask], p[mask]
    coords = z.T.contiguous()
    zi = [c.index_select(0, rows) for c in coords]
    zj = [c.index_select(0, cols) for c in coords]
    diffs = [ci - cj for ci, cj in zip(zi, zj, strict=True)]
    a_i, a_j = a.index_select(0, rows), a.index_select(0, cols)
    u, v, q = _pair_coefficients(diffs, a_i * 0.5, a_j, gamma)
    k = p * v * (4.0 * q)  # P / (D + gamma^2) dD/dy
    out = torch.zeros(len(coords), n, dtype=z.dtype, device=z.device)
    radial_i, radial_j = k * u / a_i, k * u / a_j
    for c in range(len(coords)):
        out[c].index_add_(0, rows, k * diffs[c] + radial_i * zi[c])
        out[c].index_add_(0, cols, radial_j * zj[c] - k * diffs[c])
    return out.T


def _repulsion_terms(
    z: torch.Tensor, a: torch.Tensor, gamma: float, shard: RowShard
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rep, vsum)`` of the pairs ``i < j`` with ``i`` in the shard: ``rep`` holds, for
    every point, ``sum v_ij^2 q_ij ((y_i - y_j) + u_ij y_i / a_i)`` over those of its pairs
    (the pair's term for either end), and ``vsum = 2 sum v_ij`` (ordered pairs). Summed
    over the shards they give every pair once. With ``Z = gamma vsum`` the normaliser,
    ``dw/dD = -w^2 / gamma`` and each pair counted in both orders, the repulsion's gradient
    is ``-8 rep / vsum``.

    Each pair is computed once: a row block ``[s, e)`` meets the columns ``[s, n)``, the
    pairs ``j <= i`` of its square part set to zero. Every sum over a tile is a row or a
    column sum of a product (one thread per output; ``torch.mv``'s bits change with the
    thread count), added to ``rep`` block after block in a fixed order."""
    n = z.shape[0]
    coords = z.T.contiguous()
    half_a = a * 0.5
    rep = torch.zeros_like(z)
    vsum = torch.zeros((), dtype=z.dtype, device=z.device)
    for s, e in _row_blocks(shard, n):
        diffs = [c[s:e, None] - c[None, s:] for c in coords]
        u, v, q = _pair_coefficients(diffs, half_a[s:e, None], a[None, s:], gamma)
        v[:, : e - s].triu_(1)  # each pair once, no self-pair
        vsum = vsum + 2.0 * fixed_order_sum(v)
        k = v.square_().mul_(q)
        ku = u.mul_(k)
        radial_rows = ku.sum(1).div_(a[s:e])
        radial_cols = ku.sum(0).div_(a[s:])
        for c, dc in enumerate(diffs):
            kd = dc.mul_(k)
            rep[s:e, c] += kd.sum(1).addcmul_(radial_rows, coords[c, s:e])
            rep[s:, c] += radial_cols.mul(coords[c, s:]).sub_(kd.sum(0))
    return rep, vsum


def h_loss_gradient(
    z: torch.Tensor, sqnorms_in: torch.Tensor, lambda1: float, n: int | None = None
) -> torch.Tensor:
    """Gradient of ``lambda1 / n sum_i (s_i - h_i)^2``, ``h_i = d(0, y_i)^2`` and ``s_i`` the
    input's squared norms, for the rows ``z`` (of ``n`` in all; default: ``len(z)``):
    ``2 lambda1 / n (h_i - s_i) dh_i/dy_i`` with ``dh/dy = 4 (l / |y|) / (1 - |y|^2) y``,
    ``l = d(0, y)`` (``l / |y| -> 2`` at 0)."""
    n = z.shape[0] if n is None else n
    r2 = (z * z).sum(1)
    r = torch.sqrt(r2)
    ell = distance_to_origin(z)
    per_r = torch.where(r > 0, ell / r.clamp_min(torch.finfo(z.dtype).tiny), 2.0)
    dh = 4.0 * per_r / (1.0 - r2)
    coef = (2.0 * lambda1 / n) * (ell * ell - sqnorms_in) * dh
    return z * coef[:, None]


def cosne_gradient(
    z: torch.Tensor,
    P: SparseAffinity,
    *,
    gamma: float,
    lambda1: float,
    sqnorms_in: torch.Tensor,
    exaggeration: float = 1.0,
    shard: RowShard | None = None,
    p_scale: float = 1.0,
    reduce_scalar: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Euclidean gradient of CO-SNE's loss (module docstring) at ``z`` (inside the ball).

    Parameters
    ----------
    z
        ``(n, d)`` embedding, every row of norm below 1.
    P
        The input affinity; ``p_scale`` times its weights sum to 1.
    gamma, lambda1
        The kernel's scale and the h-loss's weight.
    sqnorms_in
        ``(n,)`` squared norms of the input rows (the h-loss's targets).
    exaggeration
        Multiplies the attraction.
    shard
        Rows this process owns (all by default); the processes' gradients add up to the
        full one, with ``reduce_scalar`` summing the normaliser across them.
    """
    shard = shard or RowShard.full(z.shape[0])
    a = 1.0 - (z * z).sum(1)
    attraction = _attraction(z, a, P, gamma, shard)
    rep, vsum = _repulsion_terms(z, a, gamma, shard)
    if reduce_scalar is not None:
        vsum = reduce_scalar(vsum)
    grad = attraction.mul_(exaggeration * p_scale).sub_(rep, alpha=8.0 / float(vsum))
    mine = slice(shard.start, shard.stop)
    grad[mine] += h_loss_gradient(z[mine], sqnorms_in[mine], lambda1, z.shape[0])
    return grad


def _warn_unreachable(sqnorms_in: torch.Tensor, dtype: torch.dtype) -> None:
    """Log a warning when some h-loss targets lie farther from the origin than a point of
    ``dtype`` can be kept inside the ball (:func:`~torchdr_sc.objective.poincare.max_norm`):
    those points end pressed against the edge (typical of Euclidean input)."""
    edge = torch.tensor([[max_norm(dtype), 0.0]], dtype=torch.float64)
    reach = float(distance_to_origin(edge)[0]) ** 2
    beyond = int((sqnorms_in > reach).sum())
    if beyond:
        logger.warning(
            "COSNE: %d of %d h-loss targets (squared input norms, up to %.3g) lie beyond %.3g, "
            "the squared distance from the origin the ball holds in %s: those points are "
            "pressed against its edge. Scale the data so that its squared norms are a few "
            "units, or set lambda1=0.",
            beyond,
            sqnorms_in.numel(),
            float(sqnorms_in.max()),
            reach,
            str(dtype).removeprefix("torch."),
        )


class COSNEObjective:
    """CO-SNE (Guo, Guo & Yu, CVPR 2022): the hyperbolic Cauchy kernel's KL divergence over
    all pairs (exact, in row blocks) and the h-loss; the Euclidean gradient, which
    :class:`~torchdr_sc.optimize.RiemannianAdam` turns into a Riemannian step.

    Parameters
    ----------
    P
        The input affinity (any total: it is scaled to 1).
    data
        ``(n, p)`` input data: its rows' squared norms are the h-loss's targets.
    gamma
        Scale of the kernel ``gamma / (D + gamma^2)``.
    lambda1
        Weight of the h-loss.
    shard, reduce_scalar
        Rows this process owns and the normaliser's all-reduce (``torchrun``).
    """

    path = "repulsion exact"

    def __init__(
        self,
        P: SparseAffinity,
        *,
        data: torch.Tensor | None = None,
        gamma: float = 2.0,
        lambda1: float = 1.0,
        shard: RowShard | None = None,
        reduce_scalar: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if data is None or data.shape[0] != P.n:
            got = "None" if data is None else f"{data.shape[0]} rows"
            msg = f"COSNE's objective needs the data of P's {P.n} samples; got {got}."
            raise ValueError(msg)
        self.P, self.gamma, self.lambda1 = P, float(gamma), float(lambda1)
        self.shard, self._reduce = shard, reduce_scalar
        self.sqnorms_in = (data * data).sum(1)
        self._p_scale = 1.0 / float(fixed_order_sum(P.weights, torch.float64))
        if self.lambda1 > 0:
            _warn_unreachable(self.sqnorms_in, data.dtype)

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The Euclidean gradient at ``z``."""
        return cosne_gradient(
            z,
            self.P,
            gamma=self.gamma,
            lambda1=self.lambda1,
            sqnorms_in=self.sqnorms_in.to(z.dtype),
            exaggeration=phase.exaggeration,
            shard=self.shard,
            p_scale=self._p_scale,
            reduce_scalar=self._reduce,
        )
