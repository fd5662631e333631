r"""The dual of the symmetric entropic affinity on a sparse (kNN) pattern.

Sparse counterpart of :mod:`._snekhorn`: the same concave dual (Van Assel, Vayer, Flamary &
Courty, *SNEkhorn: Dimension Reduction with Symmetric Entropic Affinities*, NeurIPS 2023)

.. math::
    g(\gamma, \lambda) = -\tfrac12 \sum_{(i, j) \in \mathcal{E}} (\gamma_i + \gamma_j) P_{ij}
    + (\log \xi + 1) \sum_i \gamma_i + \sum_i \lambda_i,
    \qquad P_{ij} = \exp\Big(\frac{\lambda_i + \lambda_j - 2 C_{ij}}{\gamma_i + \gamma_j}\Big),

with P restricted to a symmetric edge set :math:`\mathcal{E}` (the union of a kNN graph and
its transpose) instead of all pairs. Every quantity is a vector over the ``E`` directed
entries of the pattern (both ``(i, j)`` and ``(j, i)`` are stored); row sums and the
Hessian-vector products of the projected Newton solver are CSR products, so memory and work
per iteration are ``O(E)``. The line search and the stopping rule are those of the dense
solver (:func:`._snekhorn._line_search`, :class:`._snekhorn.DualState`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ._snekhorn import DualState, _line_search, newton_step

__all__ = ["SparseDualProblem", "sparse_newton_dual_ascent", "symmetric_pattern"]


def symmetric_pattern(
    indices: torch.Tensor, distances: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The union of a kNN graph and its transpose, with a symmetric cost on it.

    Parameters
    ----------
    indices, distances
        ``(n, k)`` neighbours and distances (self excluded).

    Returns
    -------
    rows, cols, cost
        ``(E,)`` directed entries sorted by row then column, both orientations of every
        pair stored; the cost of a pair found in both directions is the mean of its two
        distances.
    """
    n, k = indices.shape
    src = torch.arange(n, device=indices.device).repeat_interleave(k)
    dst = indices.reshape(-1)
    d = distances.reshape(-1)
    keys = torch.cat([src * n + dst, dst * n + src])
    keys, slot = torch.unique(keys, return_inverse=True)
    total = torch.zeros(keys.numel(), dtype=d.dtype, device=d.device)
    total.index_add_(0, slot, torch.cat([d, d]))
    count = torch.bincount(slot, minlength=keys.numel()).to(d.dtype)
    rows = keys // n
    return rows, keys - rows * n, total / count


@dataclass(frozen=True)
class SparseDualProblem:
    """The dual on a symmetric sparse pattern; the interface of :class:`._snekhorn.DualProblem`.

    Attributes
    ----------
    rows, cols
        ``(E,)`` int64 directed entries, sorted by row, symmetric as a set.
    C2
        ``(E,)`` twice the cost of every entry (symmetric).
    crow
        ``(n + 1,)`` CSR row pointer of the entries.
    n
        Number of samples.
    target, floor, tol, max_iter
        As in :class:`._snekhorn.DualProblem`.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    C2: torch.Tensor
    crow: torch.Tensor
    n: int
    target: float
    floor: float
    tol: float
    max_iter: int

    @classmethod
    def of(
        cls,
        rows: torch.Tensor,
        cols: torch.Tensor,
        cost: torch.Tensor,
        n: int,
        target: float,
        *,
        floor: float,
        tol: float,
        max_iter: int,
    ) -> SparseDualProblem:
        """The dual of ``cost`` on the entries ``(rows, cols)`` (sorted by row)."""
        counts = torch.bincount(rows, minlength=n)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(rows, cols, 2.0 * cost, crow, n, target, floor, tol, max_iter)

    def row_sum(self, w: torch.Tensor) -> torch.Tensor:
        """``sum_j w_ij`` for an ``(E,)`` vector of entry values."""
        out = torch.zeros(self.n, dtype=w.dtype, device=w.device)
        return out.index_add_(0, self.rows, w)

    def matrix(self, w: torch.Tensor) -> torch.Tensor:
        """The ``(n, n)`` sparse CSR matrix holding ``w`` on the pattern."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.cols, w, (self.n, self.n))

    def state(self, gamma: torch.Tensor, lam: torch.Tensor) -> DualState:
        """P, its row sums, row entropies and the dual value at ``(gamma, lam)``."""
        t = gamma[self.rows] + gamma[self.cols]
        log_p = (lam[self.rows] + lam[self.cols]).sub_(self.C2).div_(t)
        p = torch.exp(log_p)
        rows = self.row_sum(p)
        entropy = rows - self.row_sum(p * log_p)
        value = float(-0.5 * torch.dot(t, p) + self.target * gamma.sum() + lam.sum())
        return DualState(gamma, lam, log_p, p, t, rows, entropy, value)

    def residual(self, st: DualState) -> float:
        """Largest marginal error or entropy-constraint violation of a state."""
        return max(st.errors(self.target, self.floor))


def _newton_direction(
    problem: SparseDualProblem, st: DualState, free: torch.Tensor, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``-Hess(g) d = grad(g)`` on the free variables by block-preconditioned CG.

    The Hessian of the dual has the blocks of the dense solver
    (:func:`~torchdr_sc.affinity._snekhorn.newton_step`), with the ``(n, n)`` weight
    matrices replaced by CSR matrices on the pattern.
    """
    w0 = st.p / st.t
    w1 = w0 * st.log_p
    w2 = w1 * st.log_p
    sums = tuple(problem.row_sum(w) for w in (w0, w1, w2))
    mats = tuple(problem.matrix(w) for w in (w0, w1, w2))
    return newton_step(st, problem.target, free, sums, mats, rtol)


def sparse_newton_dual_ascent(
    problem: SparseDualProblem,
    gamma: torch.Tensor,
    lam: torch.Tensor,
    *,
    lr: float = 1.0,
    marginal_tol: float = 1e-2,
) -> tuple[DualState, int]:
    """Projected Newton ascent on the sparse dual, from ``(gamma, lam)``.

    The algorithm of :func:`._snekhorn.newton_dual_ascent` (projected Newton steps,
    Bertsekas 1982; conjugate gradient with exact Hessian-vector products; Armijo
    backtracking), each iteration ``O(E)``.

    The entropy multipliers ``gamma`` are first held fixed while ``lam`` alone is
    ascended (a symmetric Sinkhorn problem, well conditioned) until the rows sum to 1
    within ``marginal_tol``: from the entropic warm start, whose precisions differ from row
    to row, the joint Newton steps otherwise crawl with tiny line-search steps.

    Returns
    -------
    DualState, int
        The final state (its ``p``, ``log_p`` and ``t`` are ``(E,)`` vectors) and the
        number of Newton steps (both phases).
    """
    st = problem.state(gamma, lam)
    it = 0
    frozen = torch.zeros_like(gamma, dtype=torch.bool)
    while it < problem.max_iter:
        marginal = float((1.0 - st.rows).abs().max())
        if marginal < marginal_tol:
            break
        it += 1
        gap = problem.target - st.entropy
        dg, dl = _newton_direction(problem, st, frozen, rtol=min(0.1, marginal))
        trial = _line_search(problem, st, dg, dl, gap, lr=lr)
        if trial is None:
            break
        st = trial
    while it < problem.max_iter:
        resid = problem.residual(st)
        if resid < problem.tol:
            break
        it += 1
        gap = problem.target - st.entropy
        free = ~((st.gamma <= problem.floor) & (gap < 0))
        dg, dl = _newton_direction(problem, st, free, rtol=min(0.1, resid))
        trial = _line_search(problem, st, dg, dl, gap, lr=lr)
        if trial is None:
            break
        st = trial
    return st, it


def segment_logsumexp(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """``log sum_j exp(values_ij)`` of every row of an ``(E,)`` vector of entries."""
    peak = torch.full((n,), -math.inf, dtype=values.dtype, device=values.device)
    peak = peak.scatter_reduce(0, rows, values, "amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.zeros(n, dtype=values.dtype, device=values.device)
    total.index_add_(0, rows, torch.exp(values - peak[rows]))
    return total.log() + peak
