"""kNN with faiss: exact flat index or approximate IVF, on CPU or GPU.

faiss works on float32 C-contiguous numpy arrays; the data is converted, searched, and the
neighbour indices are brought back to the input's device, where the distances are
recomputed exactly in the input's dtype (:meth:`~torchdr_sc.knn.common.SearchTask.finish`).

IVF defaults (``index='ivf'``, or ``'auto'`` with more than :data:`FLAT_MAX_SAMPLES` rows):

- ``nlist = sqrt(n)`` inverted lists, at most ``n // 39`` (faiss's minimum of 39 training
  points per centroid) and at most :data:`MAX_NLIST`; the coarse k-means (10 iterations)
  is trained on a seeded random subsample of ``40 * nlist`` rows (deterministic: the seed
  comes from ``generator`` when given, else 0).
- ``nprobe = max(8, round(0.5 * sqrt(nlist)))`` lists visited per query, so the fraction
  of the data scanned falls as ``n^-1/4``, chosen so that the recall stays at least that of
  umap-learn's own NN-descent search (pynndescent) on the same data. Recall of the exact 15
  neighbours on the benchmark's synthetic data (a 50-D Gaussian mixture, the hard case for
  kNN: its clusters have full intrinsic dimension; 2 CPU cores), n = 200k, nlist 447:
  nprobe 8 -> 0.899, 10 -> 0.931, 12 -> 0.953, 15 -> 0.974; pynndescent 0.92. n = 1M,
  nlist 1000: nprobe 16 -> 0.940, 24 -> 0.977 (the search times are in
  ``benchmarks/README.md``). ``tests/test_knn.py`` asserts >= 0.95 on a 20k mixture.
- Rows for which the visited lists hold fewer than k candidates are searched again with
  4x more lists (up to all of them), so no row is ever padded with missing neighbours.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._logging import get_logger
from .common import CandidateSearch, SearchTask, import_backend_module

logger = get_logger(__name__)

#: ``index='auto'`` uses an exact flat index up to this many samples, IVF above.
FLAT_MAX_SAMPLES = 50_000
#: Largest number of IVF lists used by default.
MAX_NLIST = 8192
#: faiss's GPU indexes return at most this many neighbours, and visit at most this many
#: IVF lists, per query.
GPU_MAX_K = 2048

_GPU_RESOURCES: dict[int, Any] = {}


def require_faiss() -> Any:
    """Import and return the ``faiss`` module, or raise the project's ImportError."""
    return import_backend_module("faiss", "faiss", "faiss")


def faiss_has_gpu() -> bool:
    """Whether faiss is installed with GPU support and sees a GPU."""
    try:
        faiss = require_faiss()
    except ImportError:
        return False
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus is not None and get_num_gpus() > 0)


def _gpu_resources(faiss: Any, device: int) -> Any:
    """One cached ``StandardGpuResources`` per GPU, created on first use."""
    if device not in _GPU_RESOURCES:
        _GPU_RESOURCES[device] = faiss.StandardGpuResources()
    return _GPU_RESOURCES[device]


def default_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` samples: ``sqrt(n)``, bounded (see module doc)."""
    return int(max(1, min(round(math.sqrt(n)), n // 39, MAX_NLIST)))


def default_nprobe(nlist: int) -> int:
    """Number of IVF lists visited per query for ``nlist`` lists (see module doc)."""
    return int(min(nlist, max(8, round(0.5 * math.sqrt(nlist)))))


def resolve_index(index: str, n: int, metric: str) -> str:
    """Turn ``index='auto'`` into ``'flat'`` or ``'ivf'`` and check the metric."""
    if index == "auto":
        return "flat" if n <= FLAT_MAX_SAMPLES or metric == "manhattan" else "ivf"
    if index == "ivf" and metric == "manhattan":
        msg = (
            "faiss's IVF index does not support metric='manhattan'; use index='flat', "
            "or backend='keops' or 'torch'."
        )
        raise ValueError(msg)
    return index


def _as_faiss_array(Y: torch.Tensor) -> np.ndarray:
    """float32 C-contiguous CPU numpy copy."""
    return np.ascontiguousarray(Y.detach().to(dtype=torch.float32).cpu().numpy())


def _seed(generator: torch.Generator | None) -> int:
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))


def faiss_metric(faiss: Any, metric: str) -> int:
    """faiss metric searched for ``metric`` (cosine: inner product of normalised rows)."""
    if metric == "cosine":
        return faiss.METRIC_INNER_PRODUCT
    return faiss.METRIC_L1 if metric == "manhattan" else faiss.METRIC_L2


def _build_index(faiss: Any, xb: np.ndarray, kind: str, metric: str, gpu: int | None, seed: int):
    """Build and fill a flat or IVF index; returns ``(index, nlist)``."""
    n, d = xb.shape
    fmetric = faiss_metric(faiss, metric)
    if kind == "flat":
        index, nlist = faiss.IndexFlat(d, fmetric), 0
    else:
        nlist = default_nlist(n)
        rng = np.random.default_rng(seed)
        n_train = min(n, 40 * nlist)
        train = xb if n_train == n else xb[np.sort(rng.choice(n, n_train, replace=False))]
        cp = faiss.ClusteringParameters()
        cp.niter, cp.seed, cp.max_points_per_centroid = 10, seed, 40
        cp.spherical = metric == "cosine"
        assign = faiss.IndexFlat(d, faiss.METRIC_INNER_PRODUCT if cp.spherical else faiss.METRIC_L2)
        if gpu is not None:
            assign = faiss.index_cpu_to_gpu(_gpu_resources(faiss, gpu), gpu, assign)
        clustering = faiss.Clustering(d, nlist, cp)
        clustering.train(train, assign)
        quantizer = faiss.IndexFlat(d, fmetric)
        quantizer.add(faiss.vector_to_array(clustering.centroids).reshape(nlist, d))
        index = faiss.IndexIVFFlat(quantizer, d, nlist, fmetric)
    if gpu is not None:
        index = faiss.index_cpu_to_gpu(_gpu_resources(faiss, gpu), gpu, index)
    index.add(xb)
    return index, nlist


def _ivf_search(index: Any, xq: np.ndarray, k: int, nprobe: int, max_probe: int) -> np.ndarray:
    """IVF search; rows left short of ``k`` hits are searched again with more lists."""
    index.nprobe = nprobe
    _, ind = index.search(xq, k)
    short = np.flatnonzero((ind < 0).any(axis=1))
    while short.size and nprobe < max_probe:
        nprobe = min(max_probe, 4 * nprobe)
        index.nprobe = nprobe
        _, ind[short] = index.search(np.ascontiguousarray(xq[short]), k)
        short = short[(ind[short] < 0).any(axis=1)]
    return ind


def _gpu_device(task: SearchTask) -> int | None:
    """The GPU on which faiss searches ``task.X``, or ``None`` for a CPU index."""
    X = task.X
    if not X.is_cuda:
        return None
    if not faiss_has_gpu():
        logger.info("faiss has no GPU support here: searching a CPU index.")
        return None
    if task.n_search > GPU_MAX_K:
        msg = (
            f"faiss on GPU returns at most {GPU_MAX_K} neighbours; got k={task.k}. "
            "Use backend='torch' or 'keops'."
        )
        raise ValueError(msg)
    return X.device.index if X.device.index is not None else torch.cuda.current_device()


def _faiss_candidates(task: SearchTask) -> torch.Tensor:
    """Candidates of ``backend='faiss'``, selected in float32 (``k + 1`` in a self search).

    ``metric='cosine'`` searches the inner product of normalised rows; ``'manhattan'``
    needs the flat index. ``index``: ``'flat'`` (exact), ``'ivf'`` (approximate,
    ``IndexIVFFlat``) or ``'auto'`` (flat up to :data:`FLAT_MAX_SAMPLES` samples, IVF
    above); ``nprobe`` defaults to :func:`default_nprobe`; ``generator`` seeds the IVF
    training subsample and k-means (seed 0 when ``None``).
    """
    metric, n_search = task.metric, task.n_search
    kind = resolve_index(task.index, task.X.shape[0], metric)
    faiss = require_faiss()
    gpu = _gpu_device(task)
    Xs, Qs = task.coordinates()
    xb = _as_faiss_array(Xs)
    xq = xb if task.self_search else _as_faiss_array(Qs)
    del Xs, Qs
    faiss_index, nlist = _build_index(faiss, xb, kind, metric, gpu, _seed(task.generator))
    if kind == "flat":
        _, ind = faiss_index.search(xq, n_search)
    else:
        max_probe = nlist if gpu is None else min(nlist, GPU_MAX_K)
        nprobe = task.nprobe if task.nprobe is not None else default_nprobe(nlist)
        probe = min(max_probe, nprobe)
        logger.info("faiss IVF index: nlist=%d, nprobe=%d.", nlist, probe)
        ind = _ivf_search(faiss_index, xq, n_search, probe, max_probe)
        short = np.flatnonzero((ind < 0).any(axis=1))
        if short.size:  # only on GPU, capped at GPU_MAX_K lists: finish them exactly
            flat = faiss.IndexFlat(xb.shape[1], faiss_metric(faiss, metric))
            flat.add(xb)
            _, ind[short] = flat.search(np.ascontiguousarray(xq[short]), n_search)
    del faiss_index
    return torch.from_numpy(ind.astype(np.int64, copy=False)).to(task.X.device)


#: k nearest neighbours with faiss (``backend='faiss'``), a
#: :data:`~torchdr_sc.knn.common.SearchFn`.
faiss_knn = CandidateSearch(_faiss_candidates)
