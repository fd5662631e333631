"""PaCMAP's near pairs: each point's neighbours ranked by a locally scaled distance.

PaCMAP (Wang, Huang, Rudin & Shaposhnik, *Understanding How Dimension Reduction Tools Work:
An Empirical Approach to Deciphering t-SNE, UMAP, TriMap, and PaCMAP for Data
Visualization*, JMLR 22(201), 2021, section 5) does not attract a point to its plain nearest
neighbours. It searches ``n_neighbors + 50`` of them and keeps the ``n_neighbors`` with the
smallest scaled distance ``d_ij^2 / (sigma_i sigma_j)``, where ``sigma_i`` is the mean
distance of point ``i`` to its 4th, 5th and 6th nearest neighbours: a neighbour in a dense
region counts as farther than one at the same distance in a sparse region. The result is a
directed set of pairs, ``n_neighbors`` per point, with weight 1: the input "affinity" of
:class:`~torchdr_sc.estimators.PACMAP`, cached and reused like any other P.
"""

from __future__ import annotations

import torch

from .._validation import check_enough_samples, check_number, check_option
from ..knn import METRICS, KNNGraph
from ._distances import distances_in
from .sparse import SparseAffinity

__all__ = ["EXTRA_NEIGHBORS", "SIGMA_NEIGHBORS", "PACMAPAffinity", "near_pair_indices"]

#: Neighbours searched beyond ``n_neighbors``, among which the near pairs are chosen.
EXTRA_NEIGHBORS = 50
#: The neighbours (0-based ranks, self excluded) whose mean distance is ``sigma_i``.
SIGMA_NEIGHBORS = (3, 6)
#: Floor of ``sigma_i`` (duplicated points have zero distances).
MIN_SIGMA = 1e-10


def plain_distances(knn: KNNGraph) -> torch.Tensor:
    """The graph's distances as distances (not squared): euclidean for the euclidean metrics,
    the chord ``sqrt(1 - cos)`` (up to a constant, which the scaled distance ignores) for
    ``'cosine'``, the L1 distance for ``'manhattan'``."""
    if knn.metric in ("sqeuclidean", "euclidean"):
        return distances_in(knn, "euclidean")
    if knn.metric == "cosine":
        return knn.distances.clamp_min(0.0).sqrt()
    return knn.distances


def near_pair_indices(knn: KNNGraph, n_neighbors: int) -> torch.Tensor:
    """The ``n_neighbors`` near pairs of every point: ``(n, n_neighbors)`` neighbour ids.

    Among the graph's neighbours of each row (sorted, self excluded), those with the smallest
    ``d_ij^2 / (sigma_i sigma_j)``, ``sigma_i`` the mean distance to the neighbours of ranks
    :data:`SIGMA_NEIGHBORS` (the nearest available ones on a shorter graph), at least
    :data:`MIN_SIGMA`. Ties keep the graph's order (a stable sort), so the result depends on
    the graph alone; each row's ids are returned in increasing order (the order of P cached
    in a scipy matrix and read back, so that the two give the same gradient bits).

    Parameters
    ----------
    knn
        The kNN graph; ``n_neighbors + 50`` neighbours per row give the method's pairs.
    n_neighbors
        Near pairs per point, at most ``knn.k``.
    """
    d = plain_distances(knn)
    k = d.shape[1]
    hi = min(SIGMA_NEIGHBORS[1], k)
    lo = min(SIGMA_NEIGHBORS[0], hi - 1)
    sigma = d[:, lo:hi].mean(1).clamp_min(MIN_SIGMA)
    scaled = (d * d) / (sigma[:, None] * sigma[knn.indices])
    order = torch.sort(scaled, dim=1, stable=True).indices[:, :n_neighbors]
    # each row's pairs in increasing id (CSR order), as P read back from a scipy matrix
    return torch.sort(knn.indices.gather(1, order), dim=1).values


class PACMAPAffinity:
    """PaCMAP's near pairs as a sparse affinity (weight 1 on each chosen pair).

    Parameters
    ----------
    n_neighbors
        Near pairs per point (PaCMAP's ``n_neighbors``, 10 by default; the point itself not
        counted).
    metric
        Input-space metric of the kNN graph, one of :data:`torchdr_sc.knn.METRICS`.
    """

    def __init__(self, n_neighbors: int = 10, *, metric: str = "sqeuclidean") -> None:
        self.n_neighbors = check_number("n_neighbors", n_neighbors, kind=int, low=1, closed="left")
        self.metric = check_option("metric", metric, METRICS)

    def __repr__(self) -> str:
        return f"PACMAPAffinity(n_neighbors={self.n_neighbors}, metric={self.metric!r})"

    def required_k(self, n: int) -> int:
        """Neighbours searched: ``n_neighbors + 50``, at most ``n - 1``."""
        return max(1, min(self.n_neighbors + EXTRA_NEIGHBORS, n - 1))

    def check_n_samples(self, n: int) -> None:
        """Raise unless ``n_neighbors`` is smaller than the number of samples ``n``."""
        check_enough_samples(n, self.n_neighbors, f"n_neighbors ({self.n_neighbors})")

    def from_knn(self, knn: KNNGraph) -> SparseAffinity:
        """The near pairs chosen among the neighbours of ``knn`` (its first
        :meth:`required_k`), as P with rows in order and weight 1.

        Raises
        ------
        ValueError
            A graph with fewer neighbours than ``n_neighbors`` (the message says which
            ``k`` to search).
        """
        self.check_n_samples(knn.n_samples)
        if knn.k < self.n_neighbors:
            msg = (
                f"PaCMAP's n_neighbors ({self.n_neighbors}) needs a kNN graph with at least "
                f"that many neighbours per row; got k={knn.k}. Search k = "
                f"{self.required_k(knn.n_samples)} (n_neighbors + {EXTRA_NEIGHBORS})."
            )
            raise ValueError(msg)
        knn = knn.truncate(min(knn.k, self.required_k(knn.n_samples)))
        near = near_pair_indices(knn, self.n_neighbors)
        weights = torch.ones(near.shape, dtype=knn.distances.dtype, device=near.device)
        if not weights.is_floating_point():
            weights = weights.float()
        return SparseAffinity.from_knn(near, weights)
