"""Embedding quality, with the definitions of DESIGN.md section 5.

- *10-NN label accuracy*: mean 5-fold cross-validated accuracy of a 10-nearest-neighbour
  classifier trained on the 2-D embedding (on a sample of ``sample_size`` points for large n).
- *neighbourhood preservation*: mean fraction of each point's 15 exact nearest input-space
  neighbours that are among its 15 exact nearest embedding neighbours. Neighbours are searched
  among all n points; the mean is taken over a sample of ``sample_size`` points for large n.
"""

from __future__ import annotations

import numpy as np

ACC_NEIGHBORS = 10
NP_NEIGHBORS = 15
SAMPLE_SIZE = 10_000


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


def _tree_knn(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact kNN of low-dimensional points with a KD-tree (no round-off from |x|^2 - 2xy)."""
    from sklearn.neighbors import NearestNeighbors

    data = np.asarray(data, dtype=np.float64)
    ind = NearestNeighbors(n_neighbors=k + 1, algorithm="kd_tree").fit(data)
    ind = ind.kneighbors(data[queries], return_distance=False)
    out = np.empty((len(queries), k), dtype=np.int64)
    for row, (q, nbrs) in enumerate(zip(queries, ind, strict=True)):
        rest = nbrs[nbrs != q]
        out[row] = rest[:k]
    return out


def neighborhood_preservation(
    input_neighbors: np.ndarray, embedding: np.ndarray, queries: np.ndarray, *, device: str = "cpu"
) -> float:
    """Mean overlap of input-space and embedding-space neighbourhoods.

    Parameters
    ----------
    input_neighbors : numpy.ndarray of shape (m, k)
        Exact input-space neighbours of the ``queries`` (from :func:`exact_knn`).
    embedding : numpy.ndarray of shape (n, n_components)
        Embedding of all n points.
    queries : numpy.ndarray of int of shape (m,)
        The query rows.
    device : str, default='cpu'
        Torch device for the embedding-space search.

    Returns
    -------
    float
        In [0, 1].
    """
    k = input_neighbors.shape[1]
    if embedding.shape[1] <= 3:
        emb_neighbors = _tree_knn(embedding, queries, k)
    else:
        emb_neighbors = exact_knn(embedding, queries, k, device=device)
    pairs = zip(input_neighbors, emb_neighbors, strict=True)
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in pairs]
    return float(np.mean(hits) / k)


def knn_accuracy(embedding: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Mean 5-fold cross-validated accuracy of a 10-NN classifier on the embedding.

    Parameters
    ----------
    embedding : numpy.ndarray of shape (m, n_components)
        Embedding of the (sampled) points.
    labels : numpy.ndarray of shape (m,)
        Their labels.
    seed : int, default=0
        Seed of the fold shuffling.

    Returns
    -------
    float
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    _, counts = np.unique(labels, return_counts=True)
    folds = int(min(5, counts.min())) if counts.min() >= 2 else 5
    cv = StratifiedKFold(n_splits=max(2, folds), shuffle=True, random_state=seed)
    clf = KNeighborsClassifier(n_neighbors=ACC_NEIGHBORS)
    return float(cross_val_score(clf, embedding, labels, cv=cv).mean())


def evaluate(
    embedding: np.ndarray,
    labels: np.ndarray,
    input_neighbors: np.ndarray,
    queries: np.ndarray,
    *,
    device: str = "cpu",
) -> dict:
    """Both quality figures of an embedding.

    Parameters
    ----------
    embedding : numpy.ndarray of shape (n, n_components)
        The embedding of all n points.
    labels : numpy.ndarray of shape (n,)
        Labels of all n points.
    input_neighbors : numpy.ndarray of shape (m, 15)
        Exact input-space neighbours of ``queries``.
    queries : numpy.ndarray of shape (m,)
        The evaluation sample.
    device : str, default='cpu'
        Torch device for the neighbour search.

    Returns
    -------
    dict
        ``{'knn_acc': float, 'np15': float, 'eval_n': int}``; NaN where the embedding is not finite.
    """
    embedding = np.asarray(embedding, dtype=np.float32)
    if not np.isfinite(embedding).all():
        return {"knn_acc": float("nan"), "np15": float("nan"), "eval_n": len(queries)}
    return {
        "knn_acc": knn_accuracy(embedding[queries], np.asarray(labels)[queries]),
        "np15": neighborhood_preservation(input_neighbors, embedding, queries, device=device),
        "eval_n": len(queries),
    }
