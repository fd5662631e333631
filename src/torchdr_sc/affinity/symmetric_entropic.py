"""Symmetric entropic affinity (SNEkhorn / TSNEkhorn input similarities)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .._logging import get_logger
from .._validation import check_number, check_option
from ..knn import KNNGraph
from ._base import PerplexityAffinity, check_solver_options
from ._distances import distances_in
from ._snekhorn import DualProblem, DualState, newton_dual_ascent
from ._snekhorn_first_order import DEFAULT_LR, first_order_dual_ascent
from ._snekhorn_sparse import (
    SparseDualProblem,
    segment_logsumexp,
    sparse_newton_dual_ascent,
    symmetric_pattern,
)
from .entropic import entropic_rows
from .sparse import SparseAffinity

__all__ = ["SymmetricEntropicAffinity"]

logger = get_logger(__name__)

_OPTIMIZERS = ("Adam", "SGD", "newton")
#: Lower bound on the entropy multipliers (distances are scaled to mean 1), which keeps
#: gamma_i + gamma_j away from 0 for rows whose entropy constraint is inactive.
_GAMMA_FLOOR = 1e-8
#: On a kNN pattern, the floor of the entropy multipliers relative to their median at the
#: warm start. A few rows (hubs, whose many reverse edges give them more than the target
#: entropy) have inactive constraints: at 1e-8 their rows of P become nearly hard
#: assignments and the Newton steps stall (100,000 points); at this floor their entropy
#: stays above the target (the constraint holds) and the dual converges in tens of steps.
_SPARSE_GAMMA_FLOOR = 1e-1


class SymmetricEntropicAffinity(PerplexityAffinity):
    r"""Symmetric entropic affinity of SNEkhorn.

    The symmetric, doubly stochastic matrix of minimal cost whose rows all have entropy at
    least :math:`\log(\mathrm{perplexity})`:
    :math:`P_{ij} = \exp((\lambda_i + \lambda_j - 2 D_{ij}) / (\gamma_i + \gamma_j))`
    (Van Assel, Vayer, Flamary & Courty, *SNEkhorn: Dimension Reduction with Symmetric
    Entropic Affinities*, NeurIPS 2023). The entropy constraint is saturated (equality) for
    most rows; rows sum to 1; P is symmetric to round-off. It replaces t-SNE's
    :math:`(P + P^\top)/2` symmetrisation of :class:`EntropicAffinity`, which breaks the
    entropy calibration.

    The dual variables are initialised from the entropic affinity
    (:math:`\gamma_i = 1/\beta_i`, :math:`\lambda_i = -\gamma_i \log Z_i`, exact when
    all :math:`\beta_i` are equal), then refined by dual ascent.

    Parameters
    ----------
    perplexity
        Effective number of neighbours, a float in (0, inf), smaller than the number of
        samples.
    lr
        Step size. ``'Adam'``: a relative change of the dual variables, which are measured
        in units of their warm start (default 0.1); ``'SGD'``: the fraction of the
        majorised Newton step taken (default 1, stable on any data; see
        ``affinity/_snekhorn_first_order.py``); ``'newton'``: the first step
        length tried by its line search, at most 1 (default 1, the full Newton step).
    eps_square
        First-order optimisers only: keep the entropy multipliers above their floor by
        writing them as squares (TorchDR's default) instead of projecting them onto it
        (the default here: with squares, Adam leaves the multipliers of rows whose
        entropy constraint is inactive oscillating around the floor instead of reaching
        it, and stops short of ``tol`` on some data).
    tol
        Tolerance on the row sums and on the row entropies.
    max_iter
        Maximum number of dual-ascent iterations.
    optimizer
        ``'newton'`` (projected Newton with conjugate gradient, converges in tens of
        iterations), ``'Adam'`` or ``'SGD'`` (the paper's first-order dual ascent, on
        variables in units of the warm start, SGD along the majorised Newton direction,
        with a step safeguard: the default ``lr`` works whatever the scale of the data;
        SGD takes tens to hundreds of iterations, Adam hundreds, to the affinity of
        ``'newton'`` within ``tol``; see
        ``affinity/_snekhorn_first_order.py``).
    metric, device, verbose
        See :class:`~torchdr_sc.affinity.Affinity`.

    Notes
    -----
    :meth:`from_distances` (which calling the affinity on data runs) is dense: ``(n, n)``
    memory and ``O(n^2)`` work per iteration, for n up to a few thousand.
    :meth:`from_knn` solves the same dual with P restricted to the symmetrised kNN graph
    (``3 * perplexity`` neighbours): ``O(n k)`` memory and work per iteration, which is how
    :class:`~torchdr_sc.TSNEkhorn` scales past the dense limit. The distances are divided
    by their mean before solving (P is invariant), and
    the dual is solved in float64 whatever the input dtype (the result has the input's).
    """

    def __init__(
        self,
        perplexity: float = 30.0,
        *,
        lr: float | None = None,
        eps_square: bool = False,
        tol: float = 1e-5,
        max_iter: int = 500,
        optimizer: str = "newton",
        metric: str = "sqeuclidean",
        backend: str | None = "auto",
        device: Any = "auto",
        verbose: bool = False,
    ) -> None:
        super().__init__(perplexity, metric=metric, backend=backend, device=device, verbose=verbose)
        self.lr = None if lr is None else check_number("lr", lr, low=0.0)
        self.eps_square = bool(eps_square)
        self.tol, self.max_iter = check_solver_options(tol, max_iter, min_iter=0)
        self.optimizer = check_option("optimizer", optimizer, _OPTIMIZERS)

    def _initial_duals(self, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dual variables matching the entropic affinity calibrated on the nearest pairs.

        The precisions are calibrated on the ``min(ceil(3 perplexity), n - 1)`` nearest
        neighbours (the mass beyond them is negligible), the log-partition functions on
        all pairs.
        """
        n = C.shape[0]
        k = min(math.ceil(3 * self.perplexity), n - 1)
        masked = C.clone().fill_diagonal_(float("inf"))
        near, _ = torch.topk(masked, k, dim=1, largest=False, sorted=False)
        _, beta, _ = entropic_rows(near, self.perplexity, tol=1e-3, max_iter=1000)
        gamma = 1.0 / beta
        lam = -gamma * torch.logsumexp(-beta[:, None] * masked, dim=1)
        return gamma, lam

    def from_knn(self, knn: KNNGraph) -> SparseAffinity:
        """Sparse symmetric entropic affinity on the symmetrised kNN graph.

        P is restricted to the union of the edges ``i -> j`` of the graph's
        ``required_k(n)`` nearest neighbours and of their reverses ``j -> i``, with the
        symmetric cost of the pair; rows sum to 1, P is symmetric and the row entropies are
        ``log(perplexity) + 1`` (at least) as in :meth:`from_distances`, which it equals
        when the graph holds all ``n - 1`` neighbours. The dual is solved in float64 by
        projected Newton steps whose Hessian-vector products run over the edges.

        Parameters
        ----------
        knn
            The kNN graph (its stored distances are used, converted between
            ``'euclidean'`` and ``'sqeuclidean'`` when needed).

        Returns
        -------
        SparseAffinity
            Symmetric P with about ``2 n k`` entries (both orientations of every pair), in
            the dtype of the graph's distances.

        Raises
        ------
        ValueError
            A graph with no more neighbours than the perplexity.
        """
        n = knn.n_samples
        k = self.usable_k(knn)
        d = distances_in(knn, self.metric)[:, :k]
        out_dtype = d.dtype if d.is_floating_point() else torch.float32
        d = d.to(torch.float64)
        rows, cols, cost = symmetric_pattern(knn.indices[:, :k], d)
        scale = cost.mean()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        cost, d = cost / scale, d / scale
        # warm start: the entropic affinity's precisions on the kNN rows, its log-partition
        # functions on the symmetrised pattern
        _, beta, _ = entropic_rows(d, self.perplexity, tol=1e-3, max_iter=1000)
        floor = max(_GAMMA_FLOOR, _SPARSE_GAMMA_FLOOR * float((1.0 / beta).median()))
        gamma = (1.0 / beta).clamp_min(floor)
        lam = -(1.0 / beta) * segment_logsumexp(-beta[rows] * cost, rows, n)
        target = math.log(self.perplexity) + 1.0
        problem = SparseDualProblem.of(
            rows, cols, cost, n, target, floor=floor, tol=self.tol, max_iter=self.max_iter
        )
        state, n_iter = self._solve(problem, gamma, lam)
        self._log_convergence(state, problem, n_iter)
        return SparseAffinity(rows, cols, state.p.to(out_dtype), n)

    def _solve(self, problem, gamma: torch.Tensor, lam: torch.Tensor) -> tuple[DualState, int]:
        """Run the chosen optimiser on a dense or sparse dual; sets ``n_iter_``."""
        if self.optimizer == "newton":
            lr = 1.0 if self.lr is None else min(self.lr, 1.0)
            ascent = (
                sparse_newton_dual_ascent
                if isinstance(problem, SparseDualProblem)
                else newton_dual_ascent
            )
            state, n_iter = ascent(problem, gamma, lam, lr=lr)
        else:
            state, n_iter = first_order_dual_ascent(
                problem,
                gamma,
                lam,
                optimizer=self.optimizer,
                lr=DEFAULT_LR[self.optimizer] if self.lr is None else self.lr,
                eps_square=self.eps_square,
            )
        self.n_iter_ = n_iter
        return state, n_iter

    def from_distances(self, D: torch.Tensor) -> torch.Tensor:
        """Dense symmetric entropic affinity from an ``(n, n)`` distance matrix."""
        D = self._check_distances(D)
        out_dtype = D.dtype
        # The dual is solved in float64: its line search compares values of sums of n^2
        # terms, which float32 cannot resolve near the optimum.
        D = D.to(torch.float64)
        C = 0.5 * (D + D.T)
        C = C - torch.diag_embed(torch.diagonal(C))
        n = C.shape[0]
        scale = C.sum() / (n * (n - 1))
        C = C / torch.where(scale > 0, scale, torch.ones_like(scale))
        gamma, lam = self._initial_duals(C)
        floor = _GAMMA_FLOOR
        gamma = gamma.clamp_min(floor)
        target = math.log(self.perplexity) + 1.0
        problem = DualProblem.of(C, target, floor=floor, tol=self.tol, max_iter=self.max_iter)
        state, n_iter = self._solve(problem, gamma, lam)
        self._log_convergence(state, problem, n_iter)
        return state.p.to(out_dtype)

    def _log_convergence(
        self, state: DualState, problem: DualProblem | SparseDualProblem, n_iter: int
    ) -> None:
        """Warn when the dual ascent stopped short of the tolerance, else log its count."""
        marginal, entropy = state.errors(problem.target, problem.floor)
        if max(marginal, entropy) >= self.tol:
            hint = (
                ""
                if self.optimizer == "newton"
                else " optimizer='newton' converges on duals where first-order ascent stalls."
            )
            logger.warning(
                "SymmetricEntropicAffinity: row sums within %.2g and entropies within %.2g "
                "after %d iterations (tol=%.2g).%s",
                marginal,
                entropy,
                n_iter,
                self.tol,
                hint,
            )
        else:
            logger.info("SymmetricEntropicAffinity: converged in %d iterations", n_iter)
