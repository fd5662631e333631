"""Exact kNN with KeOps symbolic (lazy) tensors: linear memory, CPU or CUDA.

The ``(m, n)`` distance matrix is never materialised: an ``argKmin`` reduction streams it.
The first call of each formula (metric, dtype, dimension, k) compiles a kernel (seconds
to tens of seconds), which KeOps caches on disk for later calls.
"""

from __future__ import annotations

from typing import Any

import torch

from .common import CandidateSearch, SearchTask, import_backend_module


def require_keops() -> Any:
    """Import and return ``pykeops.torch.LazyTensor``, or raise the project's ImportError."""
    return import_backend_module("pykeops.torch", "keops", "pykeops").LazyTensor


def _keops_candidates(task: SearchTask) -> torch.Tensor:
    """Exact candidates of ``backend='keops'``: an ``argKmin`` over a lazy score matrix.

    A self search asks for ``k + 1`` (the query row is dropped afterwards); ``index``,
    ``nprobe`` and ``generator`` are unused (no index).
    """
    LazyTensor = require_keops()
    Xc, Qc = (t.contiguous() for t in task.coordinates())
    q_i = LazyTensor(Qc[:, None, :])
    x_j = LazyTensor(Xc[None, :, :])
    if task.metric == "manhattan":
        scores = (q_i - x_j).abs().sum(-1)
    elif task.metric == "cosine":
        scores = -(q_i | x_j)
    else:
        scores = ((q_i - x_j) ** 2).sum(-1)
    return scores.argKmin(task.n_search, dim=1).to(torch.int64)


#: Exact k nearest neighbours with KeOps (``backend='keops'``), a
#: :data:`~torchdr_sc.knn.common.SearchFn`.
keops_knn = CandidateSearch(_keops_candidates)
