"""Embedding of streamed input: kNN graph and PCA init from chunks, then the usual engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._device import resolve_device
from .._logging import get_logger
from .._random import make_generator, resolve_seed
from ..affinity import SparseAffinity
from ..distributed import RowShard, process_group_ready, resolve_distributed
from ..initialization import scaled_init, sign_by_largest_entry
from ..knn import KNNGraph
from ..progress import stage
from ._pca import _PCAHolder
from ._search import StreamResult, _Search, _stream_backend
from ._sources import _LoaderSource, _source

logger = get_logger(__name__)


def streamed_knn(
    X: Any,
    k: int | Callable[[int], int] | None,
    *,
    backend: str | None = "auto",
    metric: str = "sqeuclidean",
    n_components: int | None = None,
    shard: RowShard | Callable[[int], RowShard] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    check_n: Callable[[int], None] | None = None,
) -> StreamResult:
    """k nearest neighbours (and PCA coordinates) of the rows of a streamed input.

    Parameters
    ----------
    X
        A :class:`~torch.utils.data.DataLoader`, a :class:`Chunked` matrix or an on-disk
        array (see :func:`is_streamed`).
    k
        Neighbours per row, self excluded (or a function of the number of rows); ``None``:
        no search (PCA only).
    backend
        ``'auto'`` (faiss when installed, else torch), ``'faiss'``, ``'torch'`` / ``None``.
    metric
        ``'sqeuclidean'``, ``'euclidean'``, ``'cosine'`` or ``'manhattan'``.
    n_components
        Also compute PCA coordinates on this many components (``None``: no PCA).
    shard
        Rows whose neighbours (and coordinates) are returned, or a function of the number
        of rows giving them; every row is searched among. Default: all rows.
    device
        Device of the exact torch search and of the PCA statistics (faiss runs on CPU).
    seed
        Seeds the IVF training of large faiss indexes.
    check_n
        Called with the number of rows as soon as it is known, before any search (to
        validate parameters such as the perplexity against it).

    Returns
    -------
    StreamResult
        The shard's kNN rows and PCA coordinates.

    Raises
    ------
    ValueError
        NaN / inf rows (counted), a DataLoader that shuffles or does not repeat itself, an
        unknown backend.
    """
    from .._validation import check_option
    from ..knn import METRICS

    check_option("metric", metric, METRICS)
    src = _source(X)
    device = torch.device(device)
    name = None if k is None else _stream_backend(backend)
    search = _Search(src, name, k, metric, shard, device, seed, check_n)
    pca = _PCAHolder(n_components, device) if n_components is not None else None
    search.first_pass(pca)
    if name == "faiss":
        idx, dist, proj = search.faiss_pass(pca)
    elif name == "torch":
        idx, dist, proj = search.torch_passes(pca)
    if name is not None:
        idx = search.spread_ties(idx)
    else:
        idx = dist = None
        proj = torch.cat([pca.transform(x) for _, x in search.read_shard()]) if pca else None
    like = src.like if isinstance(src, _LoaderSource) else None
    return StreamResult(idx, dist, proj, search.n, search.shard, search.passes, name, like)


def fit_streamed(
    est: Any,
    X: Any,
    *,
    affinity: SparseAffinity | None = None,
    knn: KNNGraph | None = None,
) -> tuple[torch.Tensor, Any]:
    """Run an :class:`~torchdr_sc.estimators.Embedder` on a streamed input ``X``.

    Reads ``X`` in chunks to build the kNN graph (unless ``affinity`` or ``knn`` is given)
    and the PCA initialisation (when ``init='pca'``), then runs the estimator's affinity
    and optimisation on them. Records ``est.stream_info_`` (rows, passes, backend, seconds)
    and the reading time as ``est.timings_['knn']``.

    Returns
    -------
    embedding : torch.Tensor
        The embedding.
    like
        What the output format follows: the first batch of a DataLoader (tensor output),
        else an empty float32 numpy array (numpy output).

    Raises
    ------
    ValueError
        For a method whose affinity needs all pairs of samples, a shuffling DataLoader,
        NaN / inf rows, or parameters that do not fit the number of rows.
    RuntimeError
        ``distributed=True`` without a process group.
    """
    if not est.uses_knn_graph:
        msg = (
            f"{type(est).__name__} computes its affinity from all pairs of samples, which "
            "needs the data in memory: pass an array or tensor instead of a streamed input."
        )
        raise ValueError(msg)
    if est.distributed is True and not process_group_ready():
        resolve_distributed(True, 0)  # raises, with the torchrun command
    t0 = time.perf_counter()
    need_search = affinity is None and knn is None
    pca = isinstance(est.init, str) and est.init == "pca"
    device = resolve_device(est.device, None)

    def neighbours(n: int) -> int:
        return min(est.neighbours_needed(n), n - 1)

    def shard(n: int) -> RowShard:
        return resolve_distributed(est.distributed, n).shard

    with stage("reading the data in chunks", _reading_text(need_search, pca, est.backend)):
        result = streamed_knn(
            X,
            neighbours if need_search else None,
            backend=est.backend,
            metric=est.metric_in,
            n_components=int(est.n_components) if pca else None,
            shard=shard,
            device=device,
            seed=resolve_seed(est.random_state, shared=False),
            check_n=est.check_n_samples,
        )
    n = result.n
    ctx = resolve_distributed(est.distributed, n)
    gather = (lambda t: ctx.all_gather_rows(t.to(device), n).cpu()) if ctx.active else (lambda t: t)
    graph = knn
    if need_search:
        graph = KNNGraph(gather(result.indices), gather(result.distances), est.metric_in)
    init = None
    if pca:
        # the same jitter on every process: a seed shared by the process group
        generator = make_generator(resolve_seed(est.random_state), torch.device("cpu"))
        layout = sign_by_largest_entry(gather(result.projection))
        init = scaled_init(layout, est.initial_scaling(), generator, "the streamed PCA")
    t_read = time.perf_counter() - t0
    logger.info(
        "streamed input: %d rows read in %d passes, kNN backend %s (%.2fs)",
        n,
        result.passes,
        result.backend,
        t_read,
    )
    z = est.fit_embedding(None, affinity, graph, init=init)
    est.timings_["knn"] = t_read
    est.stream_info_ = {
        "n_samples": n,
        "passes": result.passes,
        "backend": result.backend,
        "read_s": t_read,
    }
    like = result.like if result.like is not None else np.empty((0, 0), np.float32)
    return z, like


def _reading_text(search: bool, pca: bool, backend: str | None) -> str:
    """What the streamed passes compute, for progress: ``'kNN search, backend auto + PCA'``."""
    parts = [f"kNN search, backend {backend or 'torch'}"] if search else []
    parts += ["PCA"] if pca else []
    return " + ".join(parts) or "row count"
