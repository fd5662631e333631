"""Affinity rows of new points against a fixed reference (the input side of ``transform``).

A new point ``i`` is never one of the reference points, so its row of P is computed from its
``k`` nearest reference points alone, with the calibration the fit applied to the reference's
own rows, and it is not symmetrised (the reference's rows do not change):

- the t-SNE family: an entropic row ``p_{j|i}`` calibrated to the fit's perplexity on the
  ``k = 3 * perplexity`` nearest reference points (openTSNE's ``prepare_partial``; Poličar,
  Stražar & Zupan, *Embedding to reference t-SNE space addresses batch effects in
  single-cell classification*, Machine Learning 2023);
- UMAP: the fuzzy-set memberships ``exp(-max(d_ij - rho_i, 0) / sigma_i)`` on the
  ``n_neighbors`` nearest reference points, as umap-learn's ``UMAP.transform`` computes them
  (McInnes, Healy & Melville, arXiv:1802.03426, 2018): ``local_connectivity`` lowered by one
  (so ``rho_i = 0`` with the default 1) and ``sigma_i`` calibrated so that the memberships of
  all neighbours but the nearest sum to ``log2(n_neighbors)``, the same number of terms as a
  fitted row (whose first column is the point itself).
"""

from __future__ import annotations

import torch

from ..knn import KNNGraph
from ._base import log_unconverged
from ._distances import distances_in
from .entropic import EntropicAffinity
from .umap import umap_rho_sigma

__all__ = ["entropic_query_rows", "umap_query_rows"]


def entropic_query_rows(
    knn: KNNGraph,
    perplexity: float,
    *,
    metric: str = "sqeuclidean",
    tol: float = 1e-5,
    max_iter: int = 200,
) -> torch.Tensor:
    """Entropic rows ``p_{j|i}`` of new points over their reference neighbours.

    Parameters
    ----------
    knn
        ``(m, k)`` neighbours of the new points among the reference points (no self to drop).
    perplexity
        The fit's perplexity; the row entropy is ``log(perplexity)`` (a row with fewer than
        ``perplexity`` distinct neighbours ends uniform over its closest ties).
    metric
        The fit's ``metric_in``: the units of the Gaussian's exponent.
    tol, max_iter
        Precision and iterations of the calibration.

    Returns
    -------
    torch.Tensor
        ``(m, k)`` weights on ``knn.indices``; every row sums to 1.
    """
    # the fit's calibration, in blocks of rows (rows are calibrated independently)
    affinity = EntropicAffinity(perplexity=perplexity, tol=tol, max_iter=max_iter, metric=metric)
    return affinity._calibrate_blocks(knn.distances, knn.metric)


def umap_query_rows(
    knn: KNNGraph,
    n_neighbors: int,
    *,
    local_connectivity: float = 1.0,
    tol: float = 1e-5,
    max_iter: int = 200,
) -> torch.Tensor:
    """UMAP memberships of new points over their ``n_neighbors`` reference neighbours.

    Parameters
    ----------
    knn
        ``(m, k)`` neighbours of the new points among the reference points, ``k`` at most
        ``n_neighbors``; euclidean units are used for (squared) euclidean graphs.
    n_neighbors
        The fit's ``n_neighbors``: the row target is ``log2(n_neighbors)``.
    local_connectivity
        The fit's; umap-learn's transform uses ``max(local_connectivity - 1, 0)``.
    tol, max_iter
        Precision and iterations of the ``sigma`` search.

    Returns
    -------
    torch.Tensor
        ``(m, k)`` memberships in ``(0, 1]`` on ``knn.indices``.
    """
    metric = "euclidean" if knn.metric == "sqeuclidean" else knn.metric
    d = distances_in(knn, metric)
    # the fit calibrates n_neighbors - 1 terms (its first column is the point itself):
    # umap-learn's transform keeps that count by leaving the nearest neighbour out
    calibrated = d[:, 1:] if d.shape[1] > 1 else d
    rho, sigma, n_iter, n_bad = umap_rho_sigma(
        calibrated,
        n_neighbors,
        local_connectivity=max(float(local_connectivity) - 1.0, 0.0),
        tol=tol,
        max_iter=max_iter,
    )
    log_unconverged("UMAPAffinity (new points)", n_bad, d.shape[0], n_iter)
    gap = d - rho[:, None]
    ones = torch.ones_like(gap)
    return torch.where(gap > 0, torch.exp(-gap.clamp_min(0) / sigma[:, None]), ones)
