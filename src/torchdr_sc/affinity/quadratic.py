"""Doubly stochastic affinity by quadratically regularised optimal transport (sparse)."""

from __future__ import annotations

import math

import torch

from .._logging import get_logger
from ._linalg import conjugate_gradient
from ._ot import DoublyStochasticAffinity

__all__ = ["DoublyStochasticQuadraticAffinity", "quadratic_potential"]

logger = get_logger(__name__)


def _initial_potential(C: torch.Tensor, eps: float) -> torch.Tensor:
    """Potential whose rows would sum to 1 if every ``f_j`` equalled ``f_i``.

    Solves ``sum_j max(2 f_i - C_ij, 0) = eps`` per row, like a projection onto the
    simplex (Held et al. 1974; Duchi et al. 2008): sort the row, take the largest prefix
    whose threshold exceeds its last cost.
    """
    c, _ = torch.sort(C, dim=1)
    m = torch.arange(1, c.shape[1] + 1, device=C.device, dtype=C.dtype)
    tau = (eps + torch.cumsum(c, dim=1)) / m
    count = (tau > c).sum(dim=1).clamp_min(1)
    return 0.5 * tau.gather(1, (count - 1)[:, None]).squeeze(1)


def _dual_value(f: torch.Tensor, C: torch.Tensor, eps: float) -> torch.Tensor:
    s = (f[:, None] + f[None, :] - C).clamp_min(0.0)
    return 2.0 * f.sum() - 0.5 / eps * s.square().sum()


def _row_error(f: torch.Tensor, C: torch.Tensor, eps: float) -> float:
    rows = (f[:, None] + f[None, :] - C).clamp_min(0.0).sum(dim=1) / eps
    return float((rows - 1.0).abs().max())


def _backtrack(
    f: torch.Tensor, step: torch.Tensor, C: torch.Tensor, eps: float, *, slope: float, err: float
) -> torch.Tensor | None:
    """Backtrack along ``step`` until the dual increases enough (Armijo) or the row-sum
    error halves (the dual's round-off hides tiny increases); None if no step qualifies."""
    value = float(_dual_value(f, C, eps))
    alpha = 1.0
    for _ in range(40):
        trial = f + alpha * step
        trial_value = float(_dual_value(trial, C, eps))
        if math.isfinite(trial_value) and (
            trial_value >= value + 1e-4 * alpha * slope or _row_error(trial, C, eps) <= 0.5 * err
        ):
            return trial
        alpha *= 0.5
    return None


def quadratic_potential(
    C: torch.Tensor, eps: float, *, tol: float = 1e-5, max_iter: int = 1000
) -> tuple[torch.Tensor, int, float]:
    r"""Dual potential of the symmetric quadratically regularised transport problem.

    :math:`\min_{P \geq 0,\ P = P^\top,\ P 1 = 1} \langle P, C\rangle +
    \tfrac{\varepsilon}{2} \|P\|^2` has the solution
    :math:`P_{ij} = \max(f_i + f_j - C_{ij}, 0) / \varepsilon` where ``f`` maximises the
    concave, piecewise-quadratic dual
    :math:`2 \sum_i f_i - \tfrac{1}{2\varepsilon} \sum_{ij} \max(f_i + f_j - C_{ij}, 0)^2`.
    It is solved by a semismooth Newton method with Armijo backtracking (Lorenz, Manns &
    Meyer, *Quadratically regularized optimal transport*, Appl. Math. Optim. 2021), each
    Newton system by preconditioned conjugate gradient.

    Parameters
    ----------
    C
        ``(n, n)`` symmetric cost, ``+inf`` on excluded entries (the diagonal).
    eps
        Regularisation strength.
    tol
        Tolerance on the row sums of P.
    max_iter
        Maximum number of Newton iterations.

    Returns
    -------
    f : torch.Tensor
        ``(n,)`` potential.
    n_iter : int
        Newton iterations run.
    error : float
        ``max_i |sum_j P_ij - 1|`` at ``f``.
    """
    f = _initial_potential(C, eps)
    n_iter = 0
    while True:
        s = f[:, None] + f[None, :] - C
        active = (s > 0).to(C.dtype)
        rows = s.clamp_min(0.0).sum(dim=1) / eps
        err = float((rows - 1.0).abs().max())
        if err < tol or n_iter >= max_iter:
            break
        n_iter += 1
        deg = active.sum(dim=1)
        mu = 1e-10 * float(deg.mean()) + torch.finfo(C.dtype).tiny
        rhs = eps * (1.0 - rows)
        step = conjugate_gradient(
            lambda v, a=active, g=deg, m=mu: g * v + a @ v + m * v,
            rhs,
            lambda r, g=deg, m=mu: r / (g + m),
            rtol=min(0.1, err),
        )
        slope = float((2.0 * (1.0 - rows) * step).sum())
        trial = _backtrack(f, step, C, eps, slope=slope, err=err)
        if trial is None:  # no ascent left at this precision
            break
        f = trial
    return f, n_iter, err


class DoublyStochasticQuadraticAffinity(DoublyStochasticAffinity):
    r"""Symmetric doubly stochastic affinity with a sparse, quadratically regularised plan.

    The Euclidean (rather than entropic) projection of the base cost onto symmetric doubly
    stochastic matrices, :math:`P_{ij} = \max(f_i + f_j - C_{ij}, 0) / \varepsilon`:
    every row and column sums to 1, and far pairs get exactly 0, so P is sparse
    (Zhang, Mordant, Matsumoto & Schiebinger, *Manifold learning with sparse regularised
    optimal transport*, arXiv:2307.09816, 2023). Solved by semismooth Newton on the dual
    (``quadratic_potential``).

    Parameters
    ----------
    eps
        Regularisation, a float in (0, inf): larger values spread each row over more
        neighbours.
    base_kernel
        Cost ``C = D`` (``'gaussian'``) or ``C = log(1 + D)`` (``'student'``).
    tol
        Tolerance on the row sums.
    max_iter
        Maximum number of Newton iterations.
    metric, device, verbose
        See :class:`~torchdr_sc.affinity.Affinity`.

    Notes
    -----
    Dense ``(n, n)`` computation, for small n, in float64 whatever the input dtype (the
    result has the input's).
    """

    def from_distances(self, D: torch.Tensor) -> torch.Tensor:
        """Sparse-pattern doubly stochastic P (dense tensor) from a distance matrix."""
        D = self._check_distances(D)
        # Solved in float64: the line search compares sums of n^2 squares.
        C = 0.5 * (D + D.T).to(torch.float64)
        if self.base_kernel == "student":
            C = torch.log1p(C)
        C = C.clone().fill_diagonal_(float("inf"))
        f, n_iter, err = quadratic_potential(C, self.eps, tol=self.tol, max_iter=self.max_iter)
        self.n_iter_ = n_iter
        if err >= self.tol:
            logger.warning(
                "DoublyStochasticQuadraticAffinity: row sums within %.2g of 1 after %d "
                "iterations (tol=%.2g).",
                err,
                n_iter,
                self.tol,
            )
        else:
            logger.info("DoublyStochasticQuadraticAffinity: converged in %d iterations", n_iter)
        P = (f[:, None] + f[None, :] - C).clamp_min(0.0) / self.eps
        return P.to(D.dtype)
