"""Entropic affinity: perplexity-calibrated Gaussian rows (SNE / t-SNE input similarities)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..knn import KNNGraph
from ._base import PerplexityAffinity, check_solver_options, log_unconverged
from ._distances import convert_distances, off_diagonal, scatter_off_diagonal
from .root_search import RootSearchResult, root_search
from .sparse import SparseAffinity

__all__ = ["EntropicAffinity", "entropic_rows"]

#: Entries per block of rows calibrated at once from a kNN graph (see
#: :meth:`EntropicAffinity._calibrate_blocks`).
CALIBRATION_BLOCK_ENTRIES = 2**20


def _log_bound(dtype: torch.dtype) -> float:
    """Half-width of the search interval of ``log(beta * scale)``, safe from overflow."""
    return 0.45 * math.log(torch.finfo(dtype).max)


def entropic_rows(
    d: torch.Tensor,
    perplexity: float,
    *,
    tol: float = 1e-5,
    max_iter: int = 1000,
    beta0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, RootSearchResult]:
    """Calibrate ``P_{j|i} = exp(-beta_i d_ij) / Z_i`` so that ``H(P_i) = log(perplexity)``.

    The search runs over ``x_i = log(beta_i s_i)`` where ``s_i`` is the mean of the row's
    distances after subtracting its minimum, which makes the bracket independent of the
    data's scale. Entropy and its derivative ``dH/dx = -Var_P(beta d)`` are computed in the
    log domain, so rows of equal distances, duplicated points and extreme scales never
    produce NaN: a row whose target is out of reach (e.g. more than ``perplexity``
    duplicates) ends at the limit of its bracket, uniform over its closest ties.

    Parameters
    ----------
    d
        ``(n, k)`` distances of every row to its candidate neighbours.
    perplexity
        Target perplexity; the target entropy (in nats) is ``log(perplexity)``.
    tol
        Tolerance on each row's entropy.
    max_iter
        Maximum number of root-search iterations.
    beta0
        Optional ``(n,)`` starting precisions (e.g. calibrated on the nearest neighbours
        only), which saves most iterations on all-pairs rows.

    Returns
    -------
    log_p : torch.Tensor
        ``(n, k)`` log conditional probabilities (rows sum to 1).
    beta : torch.Tensor
        ``(n,)`` precisions ``beta_i = 1 / (2 sigma_i^2)`` in the units of ``d``.
    result : RootSearchResult
        Iteration count and number of unconverged rows.
    """
    shifted = d - d.min(dim=1, keepdim=True).values
    scale = shifted.mean(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    dn = shifted / scale

    def entropy(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        block = dn if rows.numel() == dn.shape[0] else dn[rows]
        u = block * x.exp()[:, None]
        # Every row holds a zero of dn, so exp(-u) <= 1 with one term equal to 1: no
        # overflow, and the partition function z >= 1.
        e = torch.exp(-u)
        z = e.sum(dim=1)
        eu = e * u
        m1 = eu.sum(dim=1) / z
        m2 = torch.einsum("ij,ij->i", eu, u) / z
        return z.log() + m1, -(m2 - m1 * m1).clamp_min(0.0)

    bound = _log_bound(d.dtype)
    result = root_search(
        entropy,
        math.log(perplexity),
        -bound,
        bound,
        n=d.shape[0],
        like=d,
        increasing=False,
        x0=0.0 if beta0 is None else torch.log(beta0 * scale.squeeze(1)).clamp(-bound, bound),
        tol=tol,
        max_iter=max_iter,
    )
    scaled_beta = result.x.exp()
    log_p = torch.log_softmax(-dn * scaled_beta[:, None], dim=1)
    return log_p, scaled_beta / scale.squeeze(1), result


class EntropicAffinity(PerplexityAffinity):
    r"""Entropic affinity of SNE / t-SNE.

    Row ``i`` is the Gaussian conditional distribution
    :math:`P_{j|i} = \exp(-\beta_i d_{ij}) / \sum_{l \neq i} \exp(-\beta_i d_{il})` whose
    precision :math:`\beta_i` is set so that the row's Shannon entropy equals
    :math:`\log(\mathrm{perplexity})` (Hinton & Roweis, *Stochastic Neighbor Embedding*,
    NIPS 2002; van der Maaten & Hinton, *Visualizing Data using t-SNE*, JMLR 2008). Rows sum
    to 1; P is not symmetric (t-SNE uses :math:`(P + P^\top) / 2n`).

    Parameters
    ----------
    perplexity
        Effective number of neighbours, a float in (0, inf), smaller than the number of
        samples.
    tol
        Tolerance on each row's entropy (nats).
    max_iter
        Maximum number of root-search iterations.
    metric
        Input metric; ``d`` is in its units (squared distances for ``'sqeuclidean'``).
    sparsity
        Calibrate on the ``required_k(n) = min(ceil(3 * perplexity), n - 1)`` nearest
        neighbours (sparse result, directed, rows in CSR order) instead of all pairs (dense).
    backend, device, verbose
        See :class:`~torchdr_sc.affinity.Affinity`.

    Notes
    -----
    The per-row search is a safeguarded Newton method in ``log(beta)``
    (``torchdr_sc.affinity.root_search.root_search``): typically under 10 iterations,
    in float32 or float64, on CPU or GPU.
    """

    def __init__(
        self,
        perplexity: float = 30.0,
        *,
        tol: float = 1e-5,
        max_iter: int = 1000,
        metric: str = "sqeuclidean",
        sparsity: bool = True,
        backend: str | None = "auto",
        device: Any = "auto",
        verbose: bool = False,
    ) -> None:
        super().__init__(
            perplexity,
            metric=metric,
            backend=backend,
            device=device,
            verbose=verbose,
            sparsity=sparsity,
        )
        self.tol, self.max_iter = check_solver_options(tol, max_iter)

    def _calibrate(self, d: torch.Tensor, beta0: torch.Tensor | None = None) -> torch.Tensor:
        log_p, _, result = entropic_rows(
            d, self.perplexity, tol=self.tol, max_iter=self.max_iter, beta0=beta0
        )
        self.n_iter_ = result.n_iter
        log_unconverged("EntropicAffinity", result.n_unconverged, d.shape[0], result.n_iter)
        return log_p.exp()

    def _calibrate_blocks(self, d: torch.Tensor, source: str) -> torch.Tensor:
        """:meth:`_calibrate` of ``(n, k)`` kNN distances (in the units of ``source``) in
        blocks of rows, with at most :data:`CALIBRATION_BLOCK_ENTRIES` entries per temporary
        (the search holds about six): in one block, the search's temporaries at 1M rows x
        90 neighbours were several times its input.

        Rows are calibrated independently, so the result is the one-block result.
        """
        out = torch.empty(d.shape, dtype=d.dtype, device=d.device)
        step = max(1, CALIBRATION_BLOCK_ENTRIES // max(1, d.shape[1]))
        n_iter, n_unconverged = 0, 0
        for s in range(0, d.shape[0], step):
            block = convert_distances(d[s : s + step], source, self.metric)
            log_p, _, result = entropic_rows(
                block, self.perplexity, tol=self.tol, max_iter=self.max_iter
            )
            out[s : s + step] = log_p.exp_()
            n_iter, n_unconverged = max(n_iter, result.n_iter), n_unconverged + result.n_unconverged
        self.n_iter_ = n_iter
        log_unconverged("EntropicAffinity", n_unconverged, d.shape[0], n_iter)
        return out

    def from_knn(self, knn: KNNGraph) -> SparseAffinity:
        """Directed, row-stochastic sparse P from a kNN graph.

        The graph's stored distances are used (converted between ``'euclidean'`` and
        ``'sqeuclidean'`` when needed); a graph with more than ``required_k(n)`` neighbours
        is truncated to them, so the result does not depend on where the graph came from.
        """
        k = self.usable_k(knn)
        p = self._rows(knn, k, 0, knn.n_samples)
        return SparseAffinity.from_knn(knn.indices[:, :k], p)

    def rows_from_knn(self, knn: KNNGraph, start: int, stop: int) -> torch.Tensor:
        """The calibrated rows ``start:stop`` of P, ``(stop - start, k)``, in the graph's order.

        Rows are calibrated independently, so processes that each compute a block of rows
        and gather them get exactly the P of :meth:`from_knn` (the t-SNE family shards the
        calibration this way under ``torchrun``).
        """
        return self._rows(knn, self.usable_k(knn), start, stop)

    def _rows(self, knn: KNNGraph, k: int, start: int, stop: int) -> torch.Tensor:
        return self._calibrate_blocks(knn.distances[start:stop, :k], knn.metric)

    def from_distances(self, D: torch.Tensor) -> torch.Tensor:
        """Dense row-stochastic P calibrated on all pairs (diagonal excluded)."""
        D = self._check_distances(D)
        off = off_diagonal(D)
        # Start from the precisions calibrated on the nearest neighbours, a close guess:
        # the all-pairs search then needs a few Newton steps instead of a dozen.
        k = self.required_k(D.shape[0])
        near, _ = torch.topk(off, k, dim=1, largest=False, sorted=False)
        _, beta0, _ = entropic_rows(near, self.perplexity, tol=self.tol, max_iter=self.max_iter)
        return scatter_off_diagonal(self._calibrate(off, beta0))
