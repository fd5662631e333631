"""Doubly stochastic affinity by symmetric Sinkhorn scaling in the log domain."""

from __future__ import annotations

import math

import torch

from .._logging import get_logger
from ._linalg import conjugate_gradient
from ._ot import BASE_KERNELS, DoublyStochasticAffinity

__all__ = ["BASE_KERNELS", "SinkhornAffinity", "base_log_kernel", "log_sinkhorn_potentials"]

logger = get_logger(__name__)

#: Base kernels of the doubly stochastic affinities.
#: Sinkhorn iterations after which SinkhornAffinity switches to Newton's method.
_SINKHORN_BEFORE_NEWTON = 100


def base_log_kernel(D: torch.Tensor, eps: float, base_kernel: str) -> torch.Tensor:
    r"""Log of the base kernel, with ``-inf`` on the diagonal.

    ``'gaussian'``: :math:`-D / \varepsilon`; ``'student'``:
    :math:`-\log(1 + D) / \varepsilon` (the t-SNE kernel :math:`(1 + D)^{-1}` when
    :math:`\varepsilon = 1`), with ``D`` in the metric's units (squared distances for
    ``'sqeuclidean'``).
    """
    cost = torch.log1p(D) if base_kernel == "student" else D
    log_k = -cost / eps
    return log_k.fill_diagonal_(float("-inf"))


@torch.no_grad()
def log_sinkhorn_potentials(
    log_K: torch.Tensor,
    f0: torch.Tensor | None = None,
    n_iter: int = 1000,
    tol: float = 1e-5,
) -> torch.Tensor:
    r"""Symmetric Sinkhorn scaling of a kernel, in the log domain.

    Finds the potential :math:`f` such that
    :math:`Q_{ij} = \exp(f_i + f_j + \log K_{ij})` is doubly stochastic (every row and
    column sums to 1), for a symmetric ``log_K`` (Sinkhorn, 1964; Cuturi, *Sinkhorn
    Distances*, NeurIPS 2013). The symmetric fixed point
    :math:`f_i = -\log \sum_j \exp(f_j + \log K_{ij})` is reached with the averaged
    update :math:`f \leftarrow (f + T(f)) / 2` of Feydy et al. (*Interpolating between
    Optimal Transport and MMD using Sinkhorn Divergences*, AISTATS 2019), which converges
    without the oscillations of the plain iteration.

    Parameters
    ----------
    log_K
        ``(n, n)`` symmetric log kernel; entries set to ``-inf`` (e.g. the diagonal) are
        excluded from Q.
    f0
        Warm start, e.g. the potential of the previous step of an optimiser (TSNEkhorn);
        by default ``f_i = -logsumexp_j(log_K_ij) / 2``.
    n_iter
        Maximum number of iterations.
    tol
        Stop when every row sum of Q is within ``tol`` of 1 (measured as
        ``|log(row sum)|``); ``0`` runs exactly ``n_iter`` iterations.

    Returns
    -------
    torch.Tensor
        ``(n,)`` potential, detached from autograd: by the envelope theorem a loss may
        treat it as a constant (Feydy et al. 2019).
    """
    log_K = log_K.detach()
    if f0 is None:
        f = -0.5 * torch.logsumexp(log_K, dim=1)
    else:
        f = f0.detach().to(device=log_K.device, dtype=log_K.dtype).clone()
    for _ in range(int(n_iter)):
        update = -torch.logsumexp(log_K + f[None, :], dim=1)
        if tol > 0 and float((f - update).abs().max()) < tol:
            break
        f = 0.5 * (f + update)
    return f


def sinkhorn_marginal_error(log_K: torch.Tensor, f: torch.Tensor) -> float:
    """``max_i |sum_j Q_ij - 1|`` for the potential ``f`` (a number: no autograd graph)."""
    rows = torch.logsumexp(log_K.detach() + f[None, :] + f[:, None], dim=1).exp()
    return float((rows - 1).abs().max())


@torch.no_grad()
def newton_sinkhorn(
    log_K: torch.Tensor, f: torch.Tensor, *, tol: float, max_iter: int
) -> tuple[torch.Tensor, int]:
    r"""Newton's method on the symmetric Sinkhorn dual, from the potential ``f``.

    Maximises the concave :math:`2 \sum_i f_i - \sum_{ij} \exp(f_i + f_j + \log K_{ij})`,
    whose stationary points are the symmetric scalings; each step solves
    :math:`(\mathrm{diag}(Q 1) + Q)\, \delta = 1 - Q 1` by conjugate gradient and
    backtracks on the dual. It converges in a few steps where Sinkhorn's linear rate is
    slow (small ``eps``).

    Returns
    -------
    torch.Tensor, int
        The potential and the number of Newton steps.
    """
    n_iter = 0
    while n_iter < max_iter:
        q = torch.exp(f[:, None] + f[None, :] + log_K)
        rows = q.sum(dim=1)
        err = float((rows - 1.0).abs().max())
        if err < tol:
            break
        n_iter += 1
        rhs = 1.0 - rows
        step = conjugate_gradient(
            lambda v, q=q, r=rows: r * v + q @ v, rhs, lambda v, r=rows: v / r, rtol=1e-3
        )
        value = float(2.0 * f.sum() - rows.sum())
        slope = float(2.0 * torch.dot(rhs, step))
        alpha, accepted = 1.0, False
        for _ in range(40):
            trial = f + alpha * step
            q_trial = torch.exp(trial[:, None] + trial[None, :] + log_K)
            trial_value = float(2.0 * trial.sum() - q_trial.sum())
            # Armijo, or the row-sum error halves (round-off hides tiny dual increases).
            trial_err = float((q_trial.sum(dim=1) - 1.0).abs().max())
            if math.isfinite(trial_value) and (
                trial_value >= value + 1e-4 * alpha * slope or trial_err <= 0.5 * err
            ):
                accepted = True
                break
            alpha *= 0.5
        if not accepted:  # no ascent left at this precision
            break
        f = trial
    return f, n_iter


class SinkhornAffinity(DoublyStochasticAffinity):
    r"""Doubly stochastic affinity by entropic optimal transport (symmetric Sinkhorn).

    :math:`P = \mathrm{diag}(e^f) K \mathrm{diag}(e^f)` is the symmetric, doubly stochastic
    (rows and columns sum to 1) scaling of a base kernel K with zero diagonal: the entropic
    projection of K onto doubly stochastic matrices (Cuturi 2013; used as an affinity by
    Van Assel et al., *SNEkhorn*, NeurIPS 2023, and TorchDR). The potential is found by
    :func:`log_sinkhorn_potentials`.

    Parameters
    ----------
    eps
        Entropic regularisation (temperature of the base kernel), a float in (0, inf).
    base_kernel
        ``'gaussian'`` (:math:`K = e^{-D/\varepsilon}`) or ``'student'``
        (:math:`K = (1 + D)^{-1/\varepsilon}`).
    tol
        Tolerance on the marginals.
    max_iter
        Maximum number of iterations: symmetric Sinkhorn iterations, followed (when the
        marginals are still off after 100 of them, the slow regime of small ``eps``) by
        Newton steps on the same dual (``newton_sinkhorn``).
    metric, device, verbose
        See :class:`~torchdr_sc.affinity.Affinity`.

    Notes
    -----
    Dense (all pairs, ``(n, n)`` memory), solved in float64 whatever the input dtype (the
    result has the input's). TorchDR additionally divides P by n (so that it sums to 1);
    here rows sum to 1, like the other affinities of this package.
    """

    def from_distances(self, D: torch.Tensor) -> torch.Tensor:
        """Doubly stochastic P from a dense distance matrix (diagonal excluded)."""
        D = self._check_distances(D)
        # Solved in float64: with a small eps, f_i + f_j + log K_ij cancels large terms.
        sym = 0.5 * (D + D.T).to(torch.float64)
        log_k = base_log_kernel(sym, self.eps, self.base_kernel)
        n_sinkhorn = min(self.max_iter, _SINKHORN_BEFORE_NEWTON)
        f = log_sinkhorn_potentials(log_k, None, n_sinkhorn, self.tol)
        n_newton = 0
        if sinkhorn_marginal_error(log_k, f) >= self.tol and self.max_iter > n_sinkhorn:
            f, n_newton = newton_sinkhorn(
                log_k, f, tol=self.tol, max_iter=self.max_iter - n_sinkhorn
            )
        err = sinkhorn_marginal_error(log_k, f)
        if err >= max(self.tol, 10 * torch.finfo(D.dtype).eps):
            logger.warning(
                "SinkhornAffinity: marginals within %.2g of 1 after %d Sinkhorn and %d "
                "Newton iterations (tol=%.2g); raise max_iter or eps.",
                err,
                n_sinkhorn,
                n_newton,
                self.tol,
            )
        return torch.exp(f[:, None] + f[None, :] + log_k).to(D.dtype)
