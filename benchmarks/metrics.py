"""Embedding quality, with the definitions of DESIGN.md section 5.

The two figures come from :mod:`torchdr_sc.quality` (the package's, the tests' and the
demo's definitions); this module adds the large-n parts: the seeded evaluation sample and
the exact input-space neighbours of that sample (blockwise torch, on any device).

- *10-NN label accuracy*: mean 5-fold cross-validated accuracy of a 10-nearest-neighbour
  classifier trained on the 2-D embedding (on a sample of ``sample_size`` points for large n).
- *neighbourhood preservation*: mean fraction of each point's 15 exact nearest input-space
  neighbours that are among its 15 exact nearest embedding neighbours. Neighbours are searched
  among all n points; the mean is taken over a sample of ``sample_size`` points for large n.
"""

from __future__ import annotations

import numpy as np

from torchdr_sc.quality import knn_label_accuracy, neighbourhood_preservation

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
        "knn_acc": knn_label_accuracy(
            embedding[queries], np.asarray(labels)[queries], k=ACC_NEIGHBORS, seed=0
        ),
        "np15": neighbourhood_preservation(input_neighbors, embedding, queries),
        "eval_n": len(queries),
    }
