"""Exact kNN with KeOps symbolic (lazy) tensors: linear memory, CPU or CUDA.

The ``(m, n)`` distance matrix is never materialised: an ``argKmin`` reduction streams it.
The first call of each formula (metric, dtype, dimension, k) compiles a kernel (seconds
to tens of seconds), which KeOps caches on disk for later calls.
"""

from __future__ import annotations

from typing import Any

import torch

from .._validation import missing_dependency
from .common import drop_self, finalize, search_coordinates
from .graph import KNNGraph


def require_keops() -> Any:
    """Import and return ``pykeops.torch.LazyTensor``, or raise the project's ImportError."""
    try:
        from pykeops.torch import LazyTensor
    except ImportError as err:
        error = missing_dependency("keops", "pykeops", "keops")
        raise error from err
    return LazyTensor


def keops_knn(
    X: torch.Tensor,
    k: int,
    *,
    metric: str = "sqeuclidean",
    query: torch.Tensor | None = None,
    index: str = "auto",
    nprobe: int | None = None,
    generator: torch.Generator | None = None,
) -> KNNGraph:
    """Exact k nearest neighbours with KeOps (``backend='keops'``).

    Parameters
    ----------
    X
        ``(n, d)`` float data; results are on its device, distances in its dtype.
    k
        Number of neighbours.
    metric
        ``'sqeuclidean'``, ``'euclidean'``, ``'cosine'`` or ``'manhattan'``.
    query
        ``(m, d)`` rows to search among ``X``; ``None`` searches every row of ``X`` among
        the others (``k + 1`` are searched and the row itself is dropped).
    index, nprobe, generator
        Unused (faiss options); accepted for the common backend signature.

    Returns
    -------
    KNNGraph
        ``(m, k)`` indices and distances, rows sorted by increasing distance.
    """
    del index, nprobe, generator
    LazyTensor = require_keops()
    self_search = query is None
    Q = X if self_search else query
    Xc, Qc = (t.contiguous() for t in search_coordinates(X, query, metric))
    q_i = LazyTensor(Qc[:, None, :])
    x_j = LazyTensor(Xc[None, :, :])
    if metric == "manhattan":
        scores = (q_i - x_j).abs().sum(-1)
    elif metric == "cosine":
        scores = -(q_i | x_j)
    else:
        scores = ((q_i - x_j) ** 2).sum(-1)
    n_search = k + 1 if self_search else k
    indices = scores.argKmin(n_search, dim=1).to(torch.int64)
    if self_search:
        indices = drop_self(indices)
    return finalize(Q, X, indices, metric)
