"""kNN in plain torch on any device: exact and blockwise, or approximate with an IVF index.

Exact search (``index='flat'``, the default): query rows are processed in blocks so that
the ``(block, n)`` distance block stays under
:func:`~torchdr_sc.knn.common.block_bytes` (``BLOCK_BYTES`` on CPU, ``CUDA_BLOCK_BYTES`` on
GPU) whatever ``n``;
the block buffer is allocated once and reused. Candidates are selected with ``torch.topk``
on a matmul-based score and their distances are then recomputed exactly from the
coordinates (see :meth:`~torchdr_sc.knn.common.SearchTask.finish`). During a fit with
``progress_bar=True`` the blocks are counted on a progress bar.

Ties between exact duplicates are then spread over their group by every backend
(``knn.ties.spread_duplicate_ties``, in :meth:`SearchTask.finish
<torchdr_sc.knn.common.SearchTask.finish>`).
"""

from __future__ import annotations

import torch

from ..progress import iterations
from .common import CandidateSearch, SearchTask, block_bytes, rows_per_block
from .probed_ivf import probed_ivf_select
from .torch_ivf import ivf_select

#: Query blocks from which the exact search shows a bar on the active progress reporter
#: (:mod:`torchdr_sc.progress`): fewer blocks take well under a second.
PROGRESS_MIN_BLOCKS = 8


def _scores(
    q: torch.Tensor,
    X: torch.Tensor,
    sq_norms: torch.Tensor | None,
    metric: str,
    out: torch.Tensor | None,
) -> torch.Tensor:
    """Block of scores whose ``k`` smallest (largest for cosine) per row are the neighbours.

    Written into ``out`` (reused across blocks: fresh large allocations cost page faults
    that, on CPU, take longer than the matmul itself).
    """
    if metric == "manhattan":
        return torch.cdist(q, X, p=1.0)
    if metric == "cosine":  # rows are normalised: largest q.x = smallest 1 - cos
        return torch.mm(q, X.T, out=out)
    # ||q - x||^2 - ||q||^2 = ||x||^2 - 2 q.x: same ranking, one fused call
    return torch.addmm(sq_norms, q, X.T, beta=1.0, alpha=-2.0, out=out)


def _select(
    Qs: torch.Tensor,
    Xs: torch.Tensor,
    k: int,
    sq_norms: torch.Tensor | None,
    metric: str,
    self_search: bool,
) -> torch.Tensor:
    """Indices of the ``k`` best scores of every query row, block by block."""
    n, m = Xs.shape[0], Qs.shape[0]
    step = max(1, min(m, rows_per_block(n, Xs.element_size(), block_bytes(Xs.device))))
    largest = metric == "cosine"
    fill = float("-inf") if largest else float("inf")
    buffer = None
    if metric != "manhattan":
        buffer = torch.empty((step, n), dtype=Xs.dtype, device=Xs.device)
    indices = torch.empty((m, k), dtype=torch.int64, device=Xs.device)
    n_blocks = -(-m // step)
    tick = iterations(n_blocks, unit="blocks") if n_blocks >= PROGRESS_MIN_BLOCKS else None
    for s in range(0, m, step):
        q = Qs[s : s + step]
        out = None if buffer is None else buffer[: q.shape[0]]
        scores = _scores(q, Xs, sq_norms, metric, out)
        if self_search:  # entries (r, s + r) are the rows themselves
            scores.diagonal(offset=s).fill_(fill)
        indices[s : s + step] = torch.topk(scores, k, dim=1, largest=largest, sorted=False)[1]
        if tick is not None:
            tick(1)
    return indices


def _torch_candidates(task: SearchTask) -> torch.Tensor:
    """Candidates of ``backend='torch'``, the query row skipped by index (``k`` columns).

    ``index='flat'`` or ``'auto'``: exact, blockwise. ``index='ivf'``: approximate; on CPU
    cells probed per query and scanned list by list
    (:func:`~torchdr_sc.knn.probed_ivf.probed_ivf_select`), on GPUs cells probed per cell
    (:func:`~torchdr_sc.knn.torch_ivf.ivf_select`: a few large batched products); ``nprobe``
    defaults to each one's ``default_nprobe``, ``generator`` seeds the k-means.
    """
    Xs, Qs = task.coordinates()
    if task.index == "ivf":
        select = probed_ivf_select if Xs.device.type == "cpu" else ivf_select
        found = select(
            Xs,
            Qs,
            task.k,
            largest=task.metric == "cosine",
            self_search=task.self_search,
            nprobe=task.nprobe,
            generator=task.generator,
        )
    else:
        sq_norms = Xs.square().sum(1) if task.metric in ("sqeuclidean", "euclidean") else None
        found = _select(Qs, Xs, task.k, sq_norms, task.metric, task.self_search)
    return found


#: k nearest neighbours with torch (``backend='torch'`` or ``None``), a
#: :data:`~torchdr_sc.knn.common.SearchFn`.
torch_knn = CandidateSearch(_torch_candidates)
