"""Embedding quality: local and global figures, on samples for large n.

The generic figures come from :mod:`torchdr_sc.quality` (the package's, the tests' and the
demo's definitions); this module adds the seeded evaluation samples, the exact input-space
neighbours of a sample (blockwise torch, on any device) and the trajectory figure of the
simulated atlas.

- ``knn_acc``, *10-NN label accuracy*: mean 5-fold cross-validated accuracy of a
  10-nearest-neighbour classifier trained on the 2-D embedding (on a sample of ``sample_size``
  points for large n).
- ``np15``, *neighbourhood preservation*: mean fraction of each point's 15 exact nearest
  input-space neighbours that are among its 15 exact nearest embedding neighbours. Neighbours
  are searched among all n points; the mean is over a sample of ``sample_size`` points.
- ``trust15``, *trustworthiness* at 15 neighbours (Venna & Kaski 2001), over a sample of
  :data:`TRUST_SAMPLE` points (each needs its distances to all n input points).
- ``centroid_rho``, *global structure*: Spearman correlation between the pairwise distances of
  the label centroids in the input and in the embedding (all points; doublets left out).
- ``pseudotime_rho``, *trajectories* (simulated atlas only): along each root-to-leaf lineage,
  the Spearman correlation between the true pseudotime of its cells and their geodesic distance
  from the root population in a 10-NN graph of the embedding (so a curved path scores as well
  as a straight one, and a path broken into pieces scores low); the mean over lineages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchdr_sc.quality import (
    centroid_distance_correlation,
    knn_label_accuracy,
    neighbourhood_preservation,
    radius_correlation,
    trustworthiness,
)

ACC_NEIGHBORS = 10
NP_NEIGHBORS = 15
SAMPLE_SIZE = 10_000
TRUST_SAMPLE = 1000
#: Cells of a lineage used for its geodesic distances (a seeded sample above that).
LINEAGE_SAMPLE = 20_000
FIGURES = ("knn_acc", "np15", "trust15", "centroid_rho", "pseudotime_rho", "radius_r")


def sample_indices(n: int, size: int = SAMPLE_SIZE, seed: int = 0) -> np.ndarray:
    """Return a sorted, seeded sample of ``min(n, size)`` row indices (all rows if ``n <= size``).

    Parameters
    ----------
    n : int
        Number of rows.
    size : int, default=10000
        Sample size.
    seed : int, default=0
        Seed.

    Returns
    -------
    numpy.ndarray of int64
    """
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def exact_knn(
    data: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    device: str = "cpu",
    block: int = 2048,
) -> np.ndarray:
    """Exact Euclidean k nearest neighbours of each query point in ``data``, excluding itself.

    Computed blockwise with torch, so memory stays bounded for millions of rows.

    Parameters
    ----------
    data : numpy.ndarray of shape (n, d)
        Points searched.
    queries : numpy.ndarray of int of shape (m,)
        Row indices of ``data`` used as queries; each query's own row is excluded.
    k : int
        Number of neighbours.
    device : str, default='cpu'
        Torch device for the search.
    block : int, default=2048
        Query rows per block.

    Returns
    -------
    numpy.ndarray of int64 of shape (m, k)
    """
    import torch

    X = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32), device=device)
    sq = (X * X).sum(1)
    q_idx = torch.as_tensor(queries, device=device, dtype=torch.long)
    chunk = max(1, int(2**27 // max(1, block)))  # data rows per distance tile (512 MiB)
    out = []
    for start in range(0, len(q_idx), block):
        rows = q_idx[start : start + block]
        Q, best_d, best_i = X[rows], None, None
        for c0 in range(0, X.shape[0], chunk):
            D = sq[rows, None] - 2.0 * Q @ X[c0 : c0 + chunk].T + sq[None, c0 : c0 + chunk]
            cols = torch.arange(c0, c0 + D.shape[1], device=device)
            D[rows[:, None] == cols[None, :]] = float("inf")  # exclude the query itself
            kk = min(k, D.shape[1])
            d_blk, i_blk = torch.topk(D, kk, dim=1, largest=False)
            i_blk = i_blk + c0
            if best_d is not None:
                d_blk, pos = torch.topk(torch.cat([best_d, d_blk], 1), k, dim=1, largest=False)
                i_blk = torch.gather(torch.cat([best_i, i_blk], 1), 1, pos)
            best_d, best_i = d_blk, i_blk
        out.append(best_i.cpu())
    return torch.cat(out).numpy().astype(np.int64)


def pseudotime_correlation(
    embedding: np.ndarray,
    pseudotime: np.ndarray,
    population: np.ndarray,
    lineages: np.ndarray,
    *,
    k: int = 10,
    max_cells: int = LINEAGE_SAMPLE,
    seed: int = 0,
) -> float:
    """Mean over lineages of Spearman(pseudotime, geodesic distance from the root) in the embedding.

    Parameters
    ----------
    embedding : numpy.ndarray of shape (n, 2)
        The embedding.
    pseudotime : numpy.ndarray of shape (n,)
        True pseudotime (NaN off the tree); the root population has pseudotime 0.
    population : numpy.ndarray of shape (n,)
        Population index of each cell.
    lineages : numpy.ndarray of shape (n_lineages, length)
        Population indices of each root-to-leaf path, padded with -1.
    k : int, default=10
        Neighbours of the embedding graph.
    max_cells : int, default=LINEAGE_SAMPLE
        Cells per lineage (a seeded sample above that).
    seed : int, default=0
        Seed of the sample.

    Returns
    -------
    float
        In ``[-1, 1]``; unreachable cells rank last, and the root cells (the sources of the
        distances) are left out of the correlation.
    """
    from scipy.sparse.csgraph import dijkstra
    from scipy.stats import spearmanr
    from sklearn.neighbors import kneighbors_graph

    rng = np.random.default_rng(seed)
    rhos = []
    for path in lineages:
        cells = np.flatnonzero(np.isin(population, path[path >= 0]))
        if len(cells) > max_cells:
            cells = np.sort(rng.choice(cells, size=max_cells, replace=False))
        t = pseudotime[cells]
        roots = np.flatnonzero(t == 0)
        if len(roots) == 0 or len(cells) <= k:
            continue
        graph = kneighbors_graph(np.asarray(embedding[cells], dtype=np.float64), k, mode="distance")
        dist = dijkstra(graph.maximum(graph.T), directed=False, indices=roots, min_only=True)
        finite = np.isfinite(dist)
        dist[~finite] = (dist[finite].max() if finite.any() else 0.0) + 1.0
        others = t > 0  # the root cells are the sources: their distance 0 says nothing
        rhos.append(spearmanr(t[others], dist[others])[0])
    return float(np.mean(rhos)) if rhos else float("nan")


@dataclass
class EvalContext:
    """What the figures of a dataset need besides the embedding (computed once per dataset).

    Attributes
    ----------
    data : numpy.ndarray of shape (n, d)
        Input coordinates.
    labels : numpy.ndarray of shape (n,)
        Label codes.
    queries : numpy.ndarray of shape (m,)
        Sample for the accuracy and NP@15.
    neighbors : numpy.ndarray of shape (m, 15)
        Exact input neighbours of ``queries``.
    trust_queries : numpy.ndarray
        Sample for trustworthiness.
    exclude : tuple of int
        Label codes left out of the centroid figure (doublets).
    annotations : dict or None
        The atlas's ``pseudotime``, ``population``, ``lineages`` (None elsewhere).
    """

    data: np.ndarray
    labels: np.ndarray
    queries: np.ndarray
    neighbors: np.ndarray
    trust_queries: np.ndarray
    exclude: tuple = ()
    annotations: dict | None = None


def evaluate(embedding: np.ndarray, ctx: EvalContext) -> dict:
    """Every quality figure of an embedding.

    Parameters
    ----------
    embedding : numpy.ndarray of shape (n, n_components)
        The embedding of all n points.
    ctx : EvalContext
        The dataset's evaluation context.

    Returns
    -------
    dict
        One float per name of :data:`FIGURES` (NaN where it does not apply or the embedding is
        not finite), and ``eval_n``.
    """
    embedding = np.asarray(embedding, dtype=np.float32)
    out = dict.fromkeys(FIGURES, float("nan")) | {"eval_n": len(ctx.queries)}
    if not np.isfinite(embedding).all():
        return out
    labels = np.asarray(ctx.labels)
    out["knn_acc"] = knn_label_accuracy(
        embedding[ctx.queries], labels[ctx.queries], k=ACC_NEIGHBORS, seed=0
    )
    out["np15"] = neighbourhood_preservation(ctx.neighbors, embedding, ctx.queries)
    out["trust15"] = trustworthiness(ctx.data, embedding, ctx.trust_queries, k=NP_NEIGHBORS)
    sample = ctx.data[ctx.queries]
    out["radius_r"] = radius_correlation(sample, embedding[ctx.queries], n_neighbors=NP_NEIGHBORS)
    keep = ~np.isin(labels, ctx.exclude)
    out["centroid_rho"] = centroid_distance_correlation(
        ctx.data[keep], embedding[keep], labels[keep]
    )
    if ctx.annotations is not None:
        a = ctx.annotations
        out["pseudotime_rho"] = pseudotime_correlation(
            embedding, a["pseudotime"], a["population"], a["lineages"]
        )
    return out
