"""TSNEkhorn's gradient: t-SNE with a doubly stochastic output similarity.

TSNEkhorn (Van Assel, Vayer, Flamary & Courty, *SNEkhorn: Dimension Reduction with Symmetric
Entropic Affinities*, NeurIPS 2023) matches a doubly stochastic input affinity ``P`` with the
doubly stochastic output ``Q = diag(e^f) K diag(e^f) / n``, ``K_ij = 1 / (1 + |z_i - z_j|^2)``,
whose symmetric Sinkhorn potentials ``f`` are found afresh at every step (warm-started from
the step before). The gradient of ``KL(P | Q)`` is then ``4 sum_j (e P_ij - Q_ij) K_ij (z_i -
z_j)`` with ``e`` the exaggeration: the t-SNE form with Sinkhorn weights in the repulsion.

Two ways to compute it, chosen by the estimator:

- :func:`dense_gradient`: all pairs in ``n x n`` matrices (small data; any dimension);
- :func:`fft_gradient`: P's edges for the attraction and the kernel sums of the FFT grid
  (:mod:`~torchdr_sc.objective.interpolated_weighted`) for the potentials and the repulsion,
  linear in n (1-D and 2-D embeddings).

Both return a ``grad(z, it, phase)`` function for :func:`~torchdr_sc.optimize.optimize`
that keeps the potentials between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..affinity import SparseAffinity
from .attraction import StudentAttraction
from .exact import matvec_columns

Gradient = Callable[[torch.Tensor, int, Any], torch.Tensor]


def dense_gradient(P: SparseAffinity, z0: torch.Tensor, sinkhorn_iter: int) -> Gradient:
    """TSNEkhorn's gradient on all pairs, ``n x n`` matrices.

    Parameters
    ----------
    P
        The doubly stochastic input affinity (rows summing to 1).
    z0
        The initial embedding (device and dtype of the computation).
    sinkhorn_iter
        Sinkhorn iterations per step, warm-started from the step before.

    Returns
    -------
    The gradient function ``grad(z, it, phase)``.
    """
    from ..affinity import log_sinkhorn_potentials

    n = z0.shape[0]
    p_dense = P.to(dtype=z0.dtype).to_dense() / n
    state: dict[str, torch.Tensor | None] = {"f": None}
    eye = torch.eye(n, dtype=torch.bool, device=z0.device)

    def grad(z: torch.Tensor, it: int, phase: Any) -> torch.Tensor:
        sq = (z * z).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min_(0.0)
        log_k = -torch.log1p(d2).masked_fill_(eye, 0.0)
        log_k.masked_fill_(eye, float("-inf"))
        f = log_sinkhorn_potentials(log_k, state["f"], sinkhorn_iter, 0.0)
        state["f"] = f
        q = torch.exp(f[:, None] + f[None, :] + log_k) / n
        m = (phase.exaggeration * p_dense - q).mul_(torch.exp(log_k))
        return 4.0 * (z * m.sum(1, keepdim=True) - matvec_columns(m, z.T.contiguous()))

    return grad


def fft_gradient(
    P: SparseAffinity,
    n: int,
    sinkhorn_iter: int,
    grid_options: dict[str, Any],
    compile: bool | str = "auto",
) -> Gradient:
    """TSNEkhorn's gradient in O(n): P's edges and the FFT grid's kernel sums.

    ``4/n sum_j (e P_ij - Q_ij) K_ij (z_i - z_j)``: the attraction runs over P's edges
    (:class:`~torchdr_sc.objective.attraction.StudentAttraction`); the potentials and the
    repulsion ``sum_j e^{f_j} K_ij^2 (z_i - z_j)`` come from one spreading of the charges
    ``[e^f, e^f z]`` on the grid, which also gives the last Sinkhorn update (kept as the
    next step's warm start).

    Parameters
    ----------
    P
        The doubly stochastic input affinity, in the embedding's dtype.
    n
        Number of points.
    sinkhorn_iter
        Sinkhorn iterations per step (the last one shares the gradient's spreading).
    grid_options
        Keyword arguments of :class:`~torchdr_sc.objective.interpolated_weighted.CauchyGrid`.
    compile
        As the estimators' ``compile``, for the attraction.

    Returns
    -------
    The gradient function ``grad(z, it, phase)``.
    """
    from ..distributed import RowShard
    from .interpolated_weighted import CauchyGrid, sinkhorn_potentials_fft

    attraction = StudentAttraction(P.scaled(1.0 / n), RowShard.full(n), compile=compile)
    state: dict[str, torch.Tensor | None] = {"f": None}

    def grad(z: torch.Tensor, it: int, phase: Any) -> torch.Tensor:
        grid = CauchyGrid(z, **grid_options)
        f = sinkhorn_potentials_fft(grid, state["f"], sinkhorn_iter - 1)
        shift = f.max()
        charge = torch.exp(f - shift)[:, None]
        k_sum, sums = grid.both_sums(torch.cat([charge, charge * z], 1))
        s = (k_sum - charge[:, 0]).clamp_min(torch.finfo(z.dtype).tiny)
        state["f"] = 0.5 * (f - shift - torch.log(s))
        # sum_j e^{f_j} K_ij^2 (z_i - z_j); the j = i terms cancel
        rep = z * sums[:, :1] - sums[:, 1:]
        rep.mul_(torch.exp(f + shift)[:, None] * (4.0 / n))
        return phase.exaggeration * attraction(z) - rep

    return grad
