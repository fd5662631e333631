r"""Dual solvers of the symmetric entropic affinity (SNEkhorn, Van Assel et al. 2023).

The symmetric entropic affinity solves

.. math::
    \min_{P \geq 0,\ P = P^\top} \langle P, C \rangle
    \quad \text{s.t.} \quad P 1 = 1, \quad
    \mathrm{H}(P_{i:}) \geq \log \xi + 1 \ \ \forall i,

with :math:`\mathrm{H}(p) = -\sum_j p_j (\log p_j - 1)` and perplexity :math:`\xi`. Its
solution is :math:`P_{ij} = \exp((\lambda_i + \lambda_j - 2 C_{ij}) / (\gamma_i +
\gamma_j))` for the maximisers :math:`\gamma \geq 0, \lambda` of the concave dual

.. math::
    g(\gamma, \lambda) = -\tfrac12 \sum_{i \neq j} (\gamma_i + \gamma_j) P_{ij}
    + (\log \xi + 1) \sum_i \gamma_i + \sum_i \lambda_i,

whose gradient is :math:`(\log \xi + 1 - \mathrm{H}(P_{i:}),\ 1 - \sum_j P_{ij})_i`
(Van Assel, Vayer, Flamary & Courty, *SNEkhorn: Dimension Reduction with Symmetric
Entropic Affinities*, NeurIPS 2023). :func:`newton_dual_ascent` maximises g by projected
Newton steps (Bertsekas 1982) whose systems are solved by conjugate gradient with exact
Hessian-vector products; the first-order (Adam / SGD) dual ascent of the paper is in
:mod:`._snekhorn_first_order`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._linalg import conjugate_gradient

__all__ = [
    "DualProblem",
    "DualState",
    "dual_state",
    "newton_dual_ascent",
    "newton_step",
]


@dataclass
class DualState:
    """Primal matrix and dual quantities at one point ``(gamma, lam)``."""

    gamma: torch.Tensor
    lam: torch.Tensor
    log_p: torch.Tensor
    p: torch.Tensor
    t: torch.Tensor
    rows: torch.Tensor
    entropy: torch.Tensor
    value: float

    def errors(self, target: float, floor: float) -> tuple[float, float]:
        """Largest marginal error and largest entropy-constraint violation."""
        marginal = float((1.0 - self.rows).abs().max())
        gap = target - self.entropy
        at_floor = self.gamma <= floor
        entropy = float(torch.where(at_floor, gap.clamp_min(0.0), gap.abs()).max())
        return marginal, entropy


def dual_state(
    C2: torch.Tensor, gamma: torch.Tensor, lam: torch.Tensor, target: float, eye: torch.Tensor
) -> DualState:
    """Evaluate P, its row sums, row entropies and the dual value (``C2 = 2 C``, symmetric)."""
    t = gamma[:, None] + gamma[None, :]
    log_p = lam[:, None] + lam[None, :]
    log_p.sub_(C2).div_(t).masked_fill_(eye, 0.0)
    p = torch.exp(log_p).masked_fill_(eye, 0.0)
    rows = p.sum(dim=1)
    entropy = rows - torch.einsum("ij,ij->i", p, log_p)
    value = float(-0.5 * torch.dot(t.view(-1), p.view(-1)) + target * gamma.sum() + lam.sum())
    return DualState(gamma, lam, log_p, p, t, rows, entropy, value)


def _newton_direction(
    st: DualState, target: float, free: torch.Tensor, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``-Hess(g) d = grad(g)`` on the free variables by block-preconditioned CG."""
    w0 = st.p / st.t
    w1 = w0 * st.log_p
    w2 = w1 * st.log_p
    sums = tuple(w.sum(dim=1) for w in (w0, w1, w2))
    return newton_step(st, target, free, sums, (w0, w1, w2), rtol)


def newton_step(
    st: DualState,
    target: float,
    free: torch.Tensor,
    sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    mats: tuple,
    rtol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The projected Newton step of the dual from its Hessian's pieces.

    With ``w0 = P / (gamma_i + gamma_j)``, ``w1 = w0 log P`` and ``w2 = w1 log P``, the
    Hessian has diagonal blocks built from their row sums ``sums = (d0, d1, d2)`` and
    off-diagonal blocks that are products with the matrices ``mats = (W0, W1, W2)``
    (dense ``(n, n)`` tensors, or sparse CSR ones on a kNN pattern). The system is solved
    by conjugate gradient with the 2 x 2 block-diagonal preconditioner; variables outside
    ``free`` (multipliers held at their floor) do not move.
    """
    d0, d1, d2 = sums
    W0, W1, W2 = mats
    n = d0.shape[0]
    mask = free.to(st.p.dtype)
    mu = 1e-10 * float(d0.mean()) + torch.finfo(st.p.dtype).tiny
    b = torch.cat([(target - st.entropy) * mask, 1.0 - st.rows])

    def matvec(z: torch.Tensor) -> torch.Tensor:
        u, v = z[:n] * mask, z[n:]
        w1uv = W1 @ torch.stack([u, v], dim=1)
        ju = d2 * u + W2 @ u - d1 * v - w1uv[:, 1]
        jv = d0 * v + W0 @ v - d1 * u - w1uv[:, 0]
        return torch.cat([ju * mask + mu * u, jv + mu * v])

    a11 = torch.where(free, d2 + mu, torch.ones_like(d2))
    a12 = torch.where(free, -d1, torch.zeros_like(d1))
    a22 = d0 + mu
    det = (a11 * a22 - a12 * a12).clamp_min(torch.finfo(d0.dtype).tiny)

    def precond(r: torch.Tensor) -> torch.Tensor:
        ru, rv = r[:n], r[n:]
        return torch.cat([(a22 * ru - a12 * rv) / det, (a11 * rv - a12 * ru) / det])

    step = conjugate_gradient(matvec, b, precond, rtol=rtol, max_iter=500)
    return step[:n] * mask, step[n:]


@dataclass(frozen=True)
class DualProblem:
    """One dual to maximise and its stopping rule, shared by both solvers.

    Attributes
    ----------
    C2
        ``2 C``, twice the ``(n, n)`` symmetric cost (its diagonal is ignored).
    eye
        ``(n, n)`` boolean mask of the diagonal.
    target
        ``log(perplexity) + 1``.
    floor
        Lower bound kept on ``gamma`` (0 would make ``gamma_i + gamma_j`` vanish).
    tol
        Stop when marginals and entropies are within ``tol``.
    max_iter
        Maximum number of iterations.
    """

    C2: torch.Tensor
    eye: torch.Tensor
    target: float
    floor: float
    tol: float
    max_iter: int

    @classmethod
    def of(
        cls, C: torch.Tensor, target: float, *, floor: float, tol: float, max_iter: int
    ) -> DualProblem:
        """The dual of the cost ``C`` (``(n, n)``, symmetric)."""
        eye = torch.eye(C.shape[0], dtype=torch.bool, device=C.device)
        return cls(2.0 * C, eye, target, floor, tol, max_iter)

    def state(self, gamma: torch.Tensor, lam: torch.Tensor) -> DualState:
        """The :class:`DualState` at ``(gamma, lam)``."""
        return dual_state(self.C2, gamma, lam, self.target, self.eye)

    def residual(self, st: DualState) -> float:
        """Largest marginal error or entropy-constraint violation of a state."""
        return max(st.errors(self.target, self.floor))

    def row_sum(self, w: torch.Tensor) -> torch.Tensor:
        """``sum_j w_ij`` of an ``(n, n)`` matrix of entry values (as the sparse dual's)."""
        return w.sum(dim=1)


def newton_dual_ascent(
    problem: DualProblem, gamma: torch.Tensor, lam: torch.Tensor, *, lr: float = 1.0
) -> tuple[DualState, int]:
    """Projected Newton ascent on the dual, from ``(gamma, lam)``.

    Parameters
    ----------
    problem
        The dual, its tolerance and iteration cap (on Newton steps).
    gamma, lam
        Starting dual variables (``gamma >= problem.floor``).
    lr
        First step length tried by the backtracking line search.

    Returns
    -------
    DualState, int
        The final state and the number of Newton steps.
    """
    st = problem.state(gamma, lam)
    it = 0
    while it < problem.max_iter:
        resid = problem.residual(st)
        if resid < problem.tol:
            break
        it += 1
        gap = problem.target - st.entropy
        free = ~((st.gamma <= problem.floor) & (gap < 0))
        dg, dl = _newton_direction(st, problem.target, free, rtol=min(0.1, resid))
        trial = _line_search(problem, st, dg, dl, gap, lr=lr)
        if trial is None:
            break
        st = trial
    return st, it


def _line_search(
    problem: DualProblem,
    st: DualState,
    dg: torch.Tensor,
    dl: torch.Tensor,
    gap: torch.Tensor,
    *,
    lr: float,
) -> DualState | None:
    """Backtrack until the dual value increases enough (Armijo) or the residual halves."""
    resid = problem.residual(st)
    alpha = lr
    for _ in range(40):
        g_new = (st.gamma + alpha * dg).clamp_min(problem.floor)
        l_new = st.lam + alpha * dl
        trial = problem.state(g_new, l_new)
        if math.isfinite(trial.value):
            gain = float(
                torch.dot(gap, g_new - st.gamma) + torch.dot(1.0 - st.rows, l_new - st.lam)
            )
            if trial.value >= st.value + 1e-4 * gain:
                return trial
            if problem.residual(trial) <= 0.5 * resid:
                return trial
        alpha *= 0.5
    return None
