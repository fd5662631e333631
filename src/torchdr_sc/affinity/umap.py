"""UMAP's fuzzy simplicial set (McInnes, Healy & Melville 2018)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .._logging import verbosity
from .._validation import check_number
from ..knn import KNNGraph
from ..knn import knn as knn_search
from ._base import Affinity, check_solver_options, log_unconverged, warn_short_graph
from ._distances import distances_in
from .knn_union import in_csr_order, sorted_neighbour_lists, symmetrize_sorted_knn
from .root_search import root_search
from .sparse import SparseAffinity

__all__ = ["UMAPAffinity", "umap_rho_sigma"]

#: umap-learn's floor on sigma, as a fraction of the mean neighbour distance.
MIN_K_DIST_SCALE = 1e-3
#: umap-learn's threshold below which the fractional part of local_connectivity is ignored.
_INTERPOLATION_TOL = 1e-5


def _rho(d: torch.Tensor, local_connectivity: float) -> torch.Tensor:
    """Distance to the ``local_connectivity``-th nearest non-zero-distance neighbour.

    ``d`` is sorted by row. A fractional ``local_connectivity`` interpolates between two
    consecutive non-zero distances; rows with fewer non-zero distances than required take
    their largest one, rows without any take 0 (umap-learn's rules).
    """
    k = d.shape[1]
    n_zero = (d <= 0).sum(dim=1)
    n_pos = k - n_zero
    index = math.floor(local_connectivity)
    frac = local_connectivity - index

    def nonzero_at(m: int) -> torch.Tensor:
        col = (n_zero + m).clamp(0, k - 1)
        return d.gather(1, col[:, None]).squeeze(1)

    if index > 0:
        rho = nonzero_at(index - 1)
        if frac > _INTERPOLATION_TOL:
            rho = rho + frac * (nonzero_at(index) - rho)
    else:
        rho = frac * nonzero_at(0)
    enough = n_pos >= local_connectivity
    largest = torch.where(n_pos > 0, d[:, -1], torch.zeros_like(rho))
    return torch.where(enough, rho, largest)


def umap_rho_sigma(
    d: torch.Tensor,
    n_neighbors: int,
    *,
    local_connectivity: float = 1.0,
    tol: float = 1e-5,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    r"""Per-row ``rho`` and ``sigma`` of UMAP's smooth kNN distances.

    ``sigma_i`` solves :math:`\sum_j \exp(-\max(d_{ij} - \rho_i, 0) / \sigma_i) =
    \log_2(\text{n\_neighbors})` over the row's ``k = n_neighbors - 1`` non-self
    neighbours, then is raised to ``MIN_K_DIST_SCALE`` times the mean neighbour distance
    (umap-learn's floor; the mean counts the point itself at distance 0, as umap-learn's
    kNN arrays do; rows with ``rho = 0`` use the mean over all rows).

    Parameters
    ----------
    d
        ``(n, k)`` euclidean (or other metric) distances, rows sorted increasingly.
    n_neighbors
        UMAP's neighbourhood size, counting the point itself.
    local_connectivity, tol, max_iter
        See :class:`UMAPAffinity`.

    Returns
    -------
    rho, sigma : torch.Tensor
        ``(n,)`` each.
    n_iter, n_unconverged : int
        Root-search diagnostics.
    """
    n, k = d.shape
    rho = _rho(d, local_connectivity)
    gap = (d - rho[:, None]).clamp_min(0.0)
    scale = gap.mean(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    gap_n = gap / scale

    def membership_sum(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = gap_n[rows] * torch.exp(-x)[:, None]
        w = torch.exp(-v)
        return w.sum(dim=1), (v * w).sum(dim=1)

    bound = 0.45 * math.log(torch.finfo(d.dtype).max)
    result = root_search(
        membership_sum,
        math.log2(n_neighbors),
        -bound,
        bound,
        n=n,
        like=d,
        increasing=True,
        x0=0.0,
        tol=tol,
        max_iter=max_iter,
    )
    sigma = result.x.exp() * scale.squeeze(1)
    mean_row = d.sum(dim=1) / (k + 1)
    mean_all = d.sum() / (n * (k + 1))
    floor = MIN_K_DIST_SCALE * torch.where(rho > 0, mean_row, mean_all)
    return rho, torch.maximum(sigma, floor), result.n_iter, result.n_unconverged


class UMAPAffinity(Affinity):
    r"""UMAP's input affinity: the fuzzy simplicial set of the kNN graph.

    For the ``n_neighbors - 1`` nearest neighbours ``j`` of ``i`` (umap-learn's
    ``n_neighbors`` counts the point itself),
    :math:`P_{ij} = \exp(-\max(d_{ij} - \rho_i, 0) / \sigma_i)`, where :math:`\rho_i` is the
    distance to the nearest neighbour at non-zero distance and :math:`\sigma_i` makes the
    row sum :math:`\log_2(\text{n\_neighbors})`; then the fuzzy union
    :math:`P + P^\top - P \circ P^\top` (McInnes, Healy & Melville, *UMAP: Uniform Manifold
    Approximation and Projection for Dimension Reduction*, arXiv:1802.03426, 2018). This
    reproduces ``umap.umap_.fuzzy_simplicial_set`` and scanpy's ``connectivities``.

    Parameters
    ----------
    n_neighbors
        Neighbourhood size including the point itself, an int in [2, inf).
    metric
        Input metric. Distances are used in the metric's plain units: ``'sqeuclidean'``
        is treated as ``'euclidean'`` (same neighbours, square-rooted distances), as in
        umap-learn.
    symmetrize
        Apply the fuzzy set union (``True``) or return the directed memberships.
    set_op_mix_ratio
        Weight in [0, 1] of the fuzzy union against the fuzzy intersection
        :math:`P \circ P^\top`.
    local_connectivity
        Number of nearest neighbours assumed connected with weight 1 (may be fractional).
    tol, max_iter
        Tolerance on each row's membership sum and maximum iterations of the sigma search.
    sparsity
        Return a :class:`SparseAffinity` (default) or its dense ``(n, n)`` tensor.
    backend, device, verbose
        See :class:`~torchdr_sc.affinity.Affinity`.
    """

    def __init__(
        self,
        n_neighbors: int = 15,
        *,
        metric: str = "euclidean",
        symmetrize: bool = True,
        set_op_mix_ratio: float = 1.0,
        local_connectivity: float = 1.0,
        tol: float = 1e-5,
        max_iter: int = 200,
        sparsity: bool = True,
        backend: str | None = "auto",
        device: Any = "auto",
        verbose: bool = False,
    ) -> None:
        super().__init__(
            metric=metric, backend=backend, device=device, verbose=verbose, sparsity=sparsity
        )
        self.n_neighbors = check_number("n_neighbors", n_neighbors, kind=int, low=2, closed="left")
        self.symmetrize = bool(symmetrize)
        self.set_op_mix_ratio = check_number(
            "set_op_mix_ratio", set_op_mix_ratio, low=0.0, high=1.0, closed="both"
        )
        self.local_connectivity = check_number(
            "local_connectivity", local_connectivity, low=0.0, closed="left"
        )
        self.tol, self.max_iter = check_solver_options(tol, max_iter)

    @property
    def _metric(self) -> str:
        return "euclidean" if self.metric == "sqeuclidean" else self.metric

    def required_k(self, n: int) -> int:
        """``min(n_neighbors - 1, n - 1)`` non-self neighbours."""
        return max(min(self.n_neighbors - 1, n - 1), 1)

    def check_n_neighbors_fit(self, n: int, what: str = "samples") -> None:
        """Check that ``n_neighbors`` (the point itself included) does not exceed ``n``.

        The one such check of the package (the UMAP estimator and ``pp.neighbors`` call it;
        ``what`` names the points in the message, e.g. ``'cells'``).

        Raises
        ------
        ValueError
            ``n_neighbors > n`` (for ``n >= 2``; smaller inputs fail the sample count check).
        """
        if n >= 2 and self.n_neighbors > n:
            msg = f"n_neighbors ({self.n_neighbors}) must not exceed the number of {what} ({n})."
            raise ValueError(msg)

    def __call__(self, X: Any) -> SparseAffinity | torch.Tensor:
        """Fuzzy simplicial set of ``X``'s kNN graph (dense tensor if ``sparsity=False``)."""
        with verbosity(self.verbose):
            x = self._input(X)
            k = self.required_k(x.shape[0])
            P = self.from_knn(knn_search(x, k, backend=self.backend, metric=self.metric))
        return P if self.sparsity else P.to_dense()

    def from_knn(self, knn: KNNGraph) -> SparseAffinity:
        """Fuzzy simplicial set from the first ``required_k(n)`` neighbours of a kNN graph.

        A graph with fewer neighbours ``k`` is used whole (logged), with the row target
        ``log2(k + 1)``, i.e. as if ``n_neighbors = k + 1``.
        """
        n = knn.n_samples
        self._check_n_samples(n)
        k = min(knn.k, self.required_k(n))
        warn_short_graph("UMAPAffinity", k, self.required_k(n))
        d = distances_in(knn, self._metric)[:, :k]
        rho, sigma, n_iter, n_bad = umap_rho_sigma(
            d,
            k + 1,
            local_connectivity=self.local_connectivity,
            tol=self.tol,
            max_iter=self.max_iter,
        )
        self.n_iter_ = n_iter
        log_unconverged("UMAPAffinity", n_bad, n, n_iter)
        gap = d - rho[:, None]
        w = torch.where(gap > 0, torch.exp(-gap.clamp_min(0) / sigma[:, None]), 1.0)
        w = w.to(d.dtype)
        if self.symmetrize and self.set_op_mix_ratio == 1.0:  # the default: lean in memory
            # the compact union (no temporary larger than the kNN lists), then each row's
            # columns sorted: symmetrize_knn's entries, bits and order in less memory
            lists = list(sorted_neighbour_lists(knn.indices[:, :k], w))
            return in_csr_order(symmetrize_sorted_knn(lists, "fuzzy_union"))
        directed = SparseAffinity.from_knn(knn.indices[:, :k], w)
        return self._set_operations(directed) if self.symmetrize else directed

    def _set_operations(self, P: SparseAffinity) -> SparseAffinity:
        union = P.symmetrize("fuzzy_union")
        mix = self.set_op_mix_ratio
        if mix == 1.0:
            return union
        # mix * (a + b - ab) + (1 - mix) * ab = mix * (a + b) + (1 - 2 mix) * ab
        total = P.symmetrize("sum")
        n = P.n
        rows = torch.cat([total.rows, union.rows])
        cols = torch.cat([total.cols, union.cols])
        vals = torch.cat([(1.0 - mix) * total.weights, (2.0 * mix - 1.0) * union.weights])
        coo = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), vals, (n, n), check_invariants=False
        ).coalesce()
        (r, c), w = coo.indices(), coo.values()
        keep = w > 0
        return SparseAffinity(r[keep], c[keep], w[keep], n)

    def from_distances(self, D: torch.Tensor) -> torch.Tensor:
        """Dense version: the same fuzzy set, built from the kNN graph read off ``D``."""
        D = self._check_distances(D)
        n = D.shape[0]
        d = D.clone().fill_diagonal_(float("inf"))
        vals, idx = torch.topk(d, self.required_k(n), dim=1, largest=False, sorted=True)
        return self.from_knn(KNNGraph(idx, vals, self.metric)).to_dense()
