"""Embedding quality figures, used by the demo, the tests and the benchmarks alike.

Local structure:

- :func:`knn_label_accuracy`: mean cross-validated accuracy of a 10-nearest-neighbour
  classifier on the embedding (how well cell labels can be read off the picture);
- :func:`neighbourhood_preservation`: mean fraction of each point's input-space nearest
  neighbours that are among its embedding-space nearest neighbours (Lee & Verleysen,
  *Quality assessment of dimensionality reduction: rank-based criteria*, Neurocomputing
  2009; Kobak & Berens, *The art of using t-SNE for single-cell transcriptomics*, Nature
  Communications 2019);
- :func:`trustworthiness`: how far, in input-space rank, the embedding's neighbours of a point
  are from its true neighbours (Venna & Kaski, *Neighborhood preservation in nonlinear
  projection methods*, ICANN 2001), on a sample of query points for large data.

Global structure:

- :func:`centroid_distance_correlation`: Spearman correlation between the distances of the
  label centroids in the input and in the embedding (whether clusters that are far apart in
  the data stay far apart in the picture; as in Kobak & Berens 2019 and Wang et al., PaCMAP,
  JMLR 2021).

Density:

- :func:`local_log_radius` and :func:`radius_correlation`: each point's log local radius
  (the membership-weighted mean squared distance to its neighbours in the UMAP graph) in
  the data and in the embedding, and their Pearson correlation: how well the picture keeps
  which populations are tight and which diffuse (Narayan, Berger & Cho, densMAP, Nat.
  Biotechnol. 2021).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def knn_label_accuracy(
    embedding: Any, labels: Any, *, k: int = 10, folds: int = 5, seed: int | None = None
) -> float:
    """Mean ``folds``-fold cross-validated accuracy of a ``k``-NN classifier on ``embedding``.

    Parameters
    ----------
    embedding
        ``(n_cells, n_components)`` coordinates.
    labels
        ``(n_cells,)`` labels (e.g. ``adata.obs['bulk_labels']``).
    k
        Neighbours of the classifier.
    folds
        Stratified folds; fewer when the rarest label has fewer members (at least 2).
    seed
        ``None``: folds in data order, no shuffling (deterministic for a given order).
        An int: folds drawn at random with this seed (for samples of large data sets).

    Returns
    -------
    The accuracy, in ``[0, 1]``.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(embedding, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    n_splits = max(2, min(folds, smallest)) if smallest >= 2 else folds
    shuffle = seed is not None
    cv = StratifiedKFold(n_splits=n_splits, shuffle=shuffle, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=k), x, y, cv=cv, n_jobs=1)
    return float(np.mean(scores))


def embedding_neighbors(embedding: Any, queries: Any, k: int) -> np.ndarray:
    """Exact ``k`` nearest neighbours of the rows ``queries`` among all rows of ``embedding``.

    The query itself is excluded. Computed in float64 with a KD-tree for up to 3
    dimensions and by brute force above, so that no ``|x|^2 - 2 x.y`` round-off reorders
    close neighbours.

    Returns
    -------
    ``(len(queries), k)`` int64 row indices.
    """
    from sklearn.neighbors import NearestNeighbors

    data = np.asarray(embedding, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.int64)
    algorithm = "kd_tree" if data.shape[1] <= 3 else "brute"
    index = NearestNeighbors(n_neighbors=k + 1, algorithm=algorithm).fit(data)
    found = index.kneighbors(data[queries], return_distance=False)
    out = np.empty((len(queries), k), dtype=np.int64)
    for row, (query, neighbors) in enumerate(zip(queries, found, strict=True)):
        out[row] = neighbors[neighbors != query][:k]
    return out


def neighbourhood_preservation(input_neighbors: Any, embedding: Any, queries: Any) -> float:
    """Mean overlap of the input-space and embedding-space neighbourhoods of ``queries``.

    Parameters
    ----------
    input_neighbors
        ``(m, k)`` exact input-space neighbours of the ``queries`` (self excluded).
    embedding
        ``(n, n_components)`` embedding of all points.
    queries
        ``(m,)`` the query rows.

    Returns
    -------
    The mean fraction of shared neighbours, in ``[0, 1]``.
    """
    input_neighbors = np.asarray(input_neighbors)
    k = input_neighbors.shape[1]
    found = embedding_neighbors(embedding, queries, k)
    pairs = zip(input_neighbors, found, strict=True)
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in pairs]
    return float(np.mean(hits) / k)


def trustworthiness(
    data: Any, embedding: Any, queries: Any = None, *, k: int = 15, block: int = 64
) -> float:
    """Trustworthiness of ``embedding`` at ``k`` neighbours, over ``queries`` (default: all).

    For each query ``i`` and each of its ``k`` nearest embedding neighbours ``j`` that is not
    among its ``k`` nearest input neighbours, the penalty is ``r(i, j) - k``, where ``r(i, j)``
    is the rank of ``j`` among ``i``'s input-space neighbours (1 = nearest; points at the same
    distance share the lowest rank). The score is
    ``1 - 2 / (m k (2n - 3k - 1)) * sum of penalties`` over the ``m`` queries; with every point
    a query and no tied distances it equals scikit-learn's ``sklearn.manifold.trustworthiness``.

    Input distances are computed exactly, in float64, against all ``n`` points (blockwise), so a
    query costs ``O(n d)``: use a sample of queries for large data.

    Parameters
    ----------
    data
        ``(n, d)`` input coordinates.
    embedding
        ``(n, n_components)`` embedding.
    queries
        Row indices of the query points; all rows when None.
    k
        Neighbours.
    block
        Queries per block of input distances.

    Returns
    -------
    The trustworthiness, in ``[0, 1]`` (1: every embedding neighbour is a true neighbour).
    """
    import torch

    x = torch.as_tensor(np.asarray(data), dtype=torch.float64)
    n = x.shape[0]
    queries = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    found = torch.as_tensor(embedding_neighbors(embedding, queries, k))
    sq = (x * x).sum(1)
    penalty = 0.0
    for start in range(0, len(queries), block):
        rows = torch.as_tensor(queries[start : start + block])
        dist = (sq[rows, None] - 2.0 * x[rows] @ x.T + sq[None, :]).clamp_min_(0.0)
        dist[torch.arange(len(rows)), rows] = -1.0  # the query itself: closer than everything
        rank = _points_closer(dist, dist.gather(1, found[start : start + block]))
        penalty += float((rank - k).clamp_min(0).sum())
    m = len(queries)
    return float(1.0 - 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)) * penalty)


def _points_closer(dist, thresholds):
    """``out[i, j]`` = number of entries of ``dist[i]`` strictly below ``thresholds[i, j]``.

    One sorted search over all rows at once: each row is shifted by its own offset so that the
    rows' values and thresholds occupy disjoint ranges, and a sentinel above each row's values
    closes its last bucket.
    """
    import torch

    m, k = thresholds.shape
    top = float(dist.max()) + 1.0
    shift = torch.arange(m, dtype=dist.dtype)[:, None] * (2.0 * top)
    bounds, order = torch.sort(thresholds, dim=1)
    edges = torch.cat([bounds, torch.full((m, 1), top, dtype=dist.dtype)], 1) + shift
    bucket = torch.bucketize((dist + shift).flatten(), edges.flatten(), right=True)
    counts = torch.bincount(bucket, minlength=m * (k + 1) + 1)[: m * (k + 1)]
    below = counts.view(m, k + 1)[:, :k].cumsum(1)
    return torch.empty_like(below).scatter_(1, order, below)


def centroid_distance_correlation(
    data: Any, embedding: Any, labels: Any, *, exclude: tuple[str, ...] = ()
) -> float:
    """Spearman correlation of the pairwise distances between label centroids, input vs embedding.

    Parameters
    ----------
    data
        ``(n, d)`` input coordinates.
    embedding
        ``(n, n_components)`` embedding.
    labels
        ``(n,)`` labels; one centroid per label.
    exclude
        Labels left out (e.g. ``'doublet'``, which has no place of its own).

    Returns
    -------
    The correlation, in ``[-1, 1]``; NaN with fewer than three labels.
    """
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    y = np.asarray(labels).astype(str)
    kept = [c for c in np.unique(y) if c not in set(exclude)]
    if len(kept) < 3:
        return float("nan")
    x, z = np.asarray(data, dtype=np.float64), np.asarray(embedding, dtype=np.float64)
    cx = np.stack([x[y == c].mean(0) for c in kept])
    cz = np.stack([z[y == c].mean(0) for c in kept])
    return float(spearmanr(pdist(cx), pdist(cz))[0])


def local_log_radius(points: Any, n_neighbors: int = 15, metric: str = "euclidean") -> np.ndarray:
    """Every point's log local radius (densMAP's, Narayan et al. 2021).

    The UMAP graph of ``n_neighbors`` (the point counted) is built on ``points``; a point's
    radius is the mean of the squared ``metric`` distances to its graph neighbours, weighted
    by the memberships: ``log(sum_k w_jk d_jk^2 / sum_k w_jk)``.

    Parameters
    ----------
    points
        ``(n, d)`` coordinates (data or embedding).
    n_neighbors
        Size of the neighbourhood, counting the point itself.
    metric
        One of ``'euclidean'``, ``'sqeuclidean'`` (the same graph), ``'cosine'``,
        ``'manhattan'``.

    Returns
    -------
    ``(n,)`` float32 log radii.
    """
    import torch

    from .affinity import UMAPAffinity
    from .knn import knn

    x = torch.as_tensor(np.ascontiguousarray(points, dtype=np.float32))
    n = x.shape[0]
    affinity = UMAPAffinity(n_neighbors=min(int(n_neighbors), n), metric=metric)
    P = affinity.from_knn(knn(x, affinity.required_k(n), backend="torch", metric=metric))
    return graph_log_radius(P, x, metric)


def graph_log_radius(graph: Any, points: Any, metric: str = "euclidean") -> np.ndarray:
    """Every point's log local radius on a given graph (see :func:`local_log_radius`).

    Parameters
    ----------
    graph
        A :class:`~torchdr_sc.affinity.SparseAffinity` on the points (e.g. a fit's UMAP
        graph), its weights the memberships.
    points
        ``(n, d)`` coordinates the distances are measured in.
    metric
        As for :func:`local_log_radius`.

    Returns
    -------
    ``(n,)`` float32 log radii.
    """
    import torch

    from .objective.density import edge_sq_distances, log_radius

    x = torch.as_tensor(points).to(device=graph.device, dtype=torch.float32)
    sq = edge_sq_distances(x, graph.rows, graph.cols, metric)
    counts = torch.bincount(graph.rows, minlength=graph.n)
    return log_radius(graph.weights.to(x.dtype), sq, counts).cpu().numpy()


def radius_correlation(data: Any, embedding: Any, n_neighbors: int = 15) -> float:
    """Pearson correlation between the log local radii in ``data`` and in ``embedding``
    (:func:`local_log_radius`, Euclidean in both), densMAP's measure of density
    preservation."""
    r_in = local_log_radius(data, n_neighbors).astype(np.float64)
    r_out = local_log_radius(embedding, n_neighbors).astype(np.float64)
    return float(np.corrcoef(r_in, r_out)[0, 1])
