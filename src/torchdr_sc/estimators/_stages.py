"""Stages of :meth:`Embedder.fit_embedding <torchdr_sc.estimators.Embedder.fit_embedding>`
that need no estimator state of their own: the kNN search (sharded under ``torchrun``), a
given graph's metric, the finiteness check of the result, and the texts of the progress
lines.
"""

from __future__ import annotations

from typing import Any

import torch

from .._device import as_float_tensor, resolve_device
from .._random import make_generator
from ..affinity import SparseAffinity
from ..distributed import DistContext
from ..initialization import initialize
from ..knn import KNNGraph, auto_backend, drop_self
from ..progress import stage
from ..streaming import is_streamed

#: A kNN graph searched by the fit is kept in ``knn_`` up to this many bytes and freed
#: beyond, once the input affinity no longer needs it (about 1M cells x 15 neighbours).
KEEP_KNN_MAX_BYTES = 256 * 2**20


def prepare_input(
    est: Any, X: Any, affinity: SparseAffinity | None, knn: KNNGraph | None
) -> tuple[torch.Tensor | None, int, torch.device]:
    """``(x, n, device)`` of a fit: the data as a float tensor on the estimator's device (or
    ``None`` when only a precomputed ``affinity`` / ``knn`` is given), checked for size."""
    if X is not None:
        device = resolve_device(est.device, X)
        x = as_float_tensor(X, device=device)
        n = x.shape[0]
    else:
        source = affinity if affinity is not None else knn
        if source is None:
            msg = "fit_transform needs `X`, or a precomputed `affinity` or `knn`."
            raise ValueError(msg)
        device = resolve_device(est.device, None)
        x, n = None, source.n if affinity is not None else knn.n_samples
    est.check_n_samples(n)
    return x, n, device


def require_data_in_memory(est: Any, X: Any) -> None:
    """Raise before any work when ``est`` reads the data during its optimisation
    (:meth:`~torchdr_sc.estimators.Embedder.data_needed`) and ``X`` is missing or streamed.

    Raises
    ------
    ValueError
        Saying why the data is needed, what was passed, and the ways out.
    """
    need = est.data_needed()
    if need is None or (X is not None and not is_streamed(X)):
        return
    why, other_fix = need
    got = "no `X`" if X is None else f"a streamed input ({type(X).__name__})"
    msg = (
        f"{why}; got {got}. Pass `X` in memory (an array or tensor, with `affinity` or "
        f"`knn` if you have them){other_fix}."
    )
    raise ValueError(msg)


def start_kernel_builds(est: Any, device: torch.device) -> None:
    """Start building the C kernels of the estimator's objective beside the kNN search
    (:func:`~torchdr_sc.objective.prepare_objective`), with ``compile='auto'`` only."""
    method = getattr(est, "_objective_method", None)
    if method is not None and est.compile == "auto":
        from ..objective import prepare_objective  # (imports every kernel module)

        prepare_objective(method, device)


def knn_nbytes(knn: KNNGraph) -> int:
    """Bytes held by the graph's indices and distances."""
    return sum(t.numel() * t.element_size() for t in (knn.indices, knn.distances))


def search_knn(est: Any, x: torch.Tensor, ctx: DistContext, *, gather: bool = True) -> KNNGraph:
    """The kNN graph ``est`` needs on ``x``; under ``torchrun`` each process searches its rows.

    The processes' rows are gathered, so every process holds the whole graph; with
    ``gather=False`` each keeps the rows of its own block (global neighbour ids).
    """
    from ..knn import knn as knn_search

    n = x.shape[0]
    k = min(est.neighbours_needed(n), n - 1)
    backend = backend_text(est.backend, n, x.device, est.metric_in)
    with stage("kNN search", f"{n:,} cells, k={k}, backend {backend}"):
        if not ctx.active:
            return knn_search(x, k, backend=est.backend, metric=est.metric_in)
        rows = x[ctx.shard.start : ctx.shard.stop]
        local = knn_search(x, k + 1, backend=est.backend, metric=est.metric_in, query=rows)
    idx, dist = drop_self(local.indices, ctx.shard.start, distances=local.distances)
    if not gather:
        return KNNGraph(idx, dist, local.metric)
    idx = ctx.all_gather_rows(idx, n)
    dist = ctx.all_gather_rows(dist, n)
    return KNNGraph(idx, dist, local.metric)


def initial_embedding(
    est: Any,
    init: Any,
    x: torch.Tensor | None,
    affinity: SparseAffinity,
    ctx: DistContext,
    seed: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The initial embedding ``z0`` of ``est``'s fit, the same on every rank."""
    z0 = initialize(
        init,
        x=x,
        n=affinity.n,
        n_components=est.n_components,
        scaling=est.initial_scaling(),
        generator=make_generator(seed, est.device_used_),
        device=est.device_used_,
        dtype=dtype,
        affinity=affinity,
    )
    if ctx.active:  # rank 0's init everywhere (random_state=None seeds every rank apart)
        z0 = ctx.broadcast(z0)
    return z0


def affinity_text(est: Any, n: int, source: str) -> str:
    """``'UMAPAffinity, n_neighbors=15, 700 cells, from the kNN graph'``, for progress."""
    params = est.affinity_params()
    shown = [str(params.get("affinity", type(est).__name__))]
    shown += [f"{k}={params[k]:g}" for k in ("perplexity", "n_neighbors") if k in params]
    return ", ".join([*shown, f"{n:,} cells, from the {source}"])


def backend_text(backend: str | None, n: int, device: torch.device, metric: str) -> str:
    """The kNN backend a search will use, for progress: ``'torch'``, ``'auto: faiss IVF'``."""
    if backend != "auto":
        return "torch" if backend is None else str(backend)
    name, index, _ = auto_backend(n, torch.device(device), metric)
    kind = {"flat": " exact", "ivf": " IVF"}.get(index, "")
    return f"auto: {name}{kind}"


def init_text(init: Any) -> str:
    """The initialisation, for progress: its name or ``'given array'``."""
    return init if isinstance(init, str) else "given array"


def check_finite_embedding(z: torch.Tensor, lr: Any, n_iter: int) -> None:
    """Raise if the optimisation diverged: a result that is not finite is never returned."""
    bad = int((~torch.isfinite(z)).any(dim=1).sum())
    if bad:
        msg = (
            f"The embedding diverged: {bad} rows hold NaN or inf after {n_iter} iterations. "
            f"Lower the learning rate `lr` (got {lr!r})."
        )
        raise FloatingPointError(msg)


def convert_metric(knn: KNNGraph, metric: str) -> KNNGraph:
    """Express a given kNN graph in ``metric`` (euclidean <-> sqeuclidean only)."""
    if knn.metric == metric:
        return knn
    if (knn.metric, metric) == ("euclidean", "sqeuclidean"):
        return KNNGraph(knn.indices, knn.distances.square(), metric)
    if (knn.metric, metric) == ("sqeuclidean", "euclidean"):
        return KNNGraph(knn.indices, knn.distances.clamp_min(0).sqrt(), metric)
    msg = (
        f"The given kNN graph uses metric {knn.metric!r} but `metric_in` is {metric!r}; "
        "recompute the graph with the same metric."
    )
    raise ValueError(msg)
