"""The kNN backend registry, the ``'auto'`` choice and :func:`knn`, the one search call.

Every backend is a :class:`~torchdr_sc.knn.common.KNNBackend` in :data:`BACKENDS`; the
package reads the valid ``backend`` values from here (:func:`check_backend`), so a backend
added with :func:`register_backend` is accepted by the estimators, ``tl`` and ``pp`` too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._logging import get_logger
from .._validation import (
    check_enough_samples,
    check_number,
    check_option,
    format_options,
)
from .common import KNNBackend, SearchFn
from .faiss_search import faiss_has_gpu, faiss_knn, require_faiss
from .graph import METRICS, KNNGraph
from .keops_search import keops_knn, require_keops
from .torch_search import torch_knn

__all__ = [
    "AUTO_CUDA_EXACT_MAX_SAMPLES",
    "AUTO_TORCH_MAX_SAMPLES",
    "BACKENDS",
    "INDEXES",
    "KNNBackend",
    "auto_backend",
    "available_backends",
    "check_backend",
    "knn",
    "register_backend",
    "resolve_backend",
]

logger = get_logger(__name__)

#: With ``backend='auto'`` on CPU, exact torch search is used up to this many samples. Above,
#: the probed IVF finds the 15 nearest neighbours of the simulated atlas with recall@14 0.995
#: at 10,000 cells and 0.991 at 20,000 in a third of the exact search's time
#: (``benchmarks/README.md``).
AUTO_TORCH_MAX_SAMPLES = 5_000
#: With ``backend='auto'`` on CUDA without faiss GPU support, exact torch search is used up to
#: this many samples, torch's IVF index above (exact search costs n^2).
AUTO_CUDA_EXACT_MAX_SAMPLES = 100_000
#: Values of the ``index`` option (faiss and torch backends).
INDEXES = ("auto", "flat", "ivf")

#: The registry: backend name -> :class:`KNNBackend`.
BACKENDS: dict[str, KNNBackend] = {}


def register_backend(
    name: str,
    fn: SearchFn,
    *,
    metrics: tuple[str, ...] = METRICS,
    require: Callable[[], None] | None = None,
) -> KNNBackend:
    """Add (or replace) a kNN backend in :data:`BACKENDS`.

    Parameters
    ----------
    name
        Registry name, usable as ``knn(..., backend=name)``.
    fn
        Search function ``fn(X, k, *, metric, query, index, nprobe, generator) -> KNNGraph``
        (the contract: :class:`~torchdr_sc.knn.common.SearchTask`; a backend that only
        selects candidates can pass :class:`~torchdr_sc.knn.common.CandidateSearch`).
    metrics
        Metrics the backend supports.
    require
        Raises :class:`ImportError` when the backend's optional package is missing.

    Returns
    -------
    KNNBackend
        The registered record.
    """
    kwargs = {} if require is None else {"require": require}
    record = KNNBackend(name=name, search=fn, metrics=tuple(metrics), **kwargs)
    BACKENDS[name] = record
    return record


def _require_faiss() -> None:
    require_faiss()


def _require_keops() -> None:
    require_keops()


register_backend("torch", torch_knn)
register_backend("faiss", faiss_knn, require=_require_faiss)
register_backend("keops", keops_knn, require=_require_keops)


def check_backend(backend: str | None) -> str | None:
    """Validate a ``backend`` value against the registry; return it unchanged.

    Valid values are ``'auto'``, ``None`` (plain torch, TorchDR's meaning) and every name in
    :data:`BACKENDS`, including those added with :func:`register_backend`.

    Raises
    ------
    ValueError
        ``backend`` is none of them.
    """
    return check_option("backend", backend, ["auto", *BACKENDS, None])


def available_backends() -> list[str]:
    """Names of the registered backends whose packages are installed, sorted."""
    return sorted(name for name, b in BACKENDS.items() if b.is_available())


def auto_backend(n: int, device: torch.device, metric: str) -> tuple[str, str, str]:
    """Backend and index chosen by ``backend='auto'``, and the reason (logged).

    Parameters
    ----------
    n
        Number of samples searched.
    device
        Device of the data.
    metric
        The metric.

    Returns
    -------
    ``(backend name, index, reason)``.
    """

    def usable(name: str) -> bool:
        b = BACKENDS.get(name)
        return b is not None and metric in b.metrics and b.is_available()

    if device.type == "cuda":
        if usable("faiss") and faiss_has_gpu():
            return "faiss", "auto", "CUDA data and faiss has GPU support"
        if n <= AUTO_CUDA_EXACT_MAX_SAMPLES or metric == "manhattan":
            return "torch", "flat", "CUDA data, no faiss GPU support: exact"
        return "torch", "ivf", f"CUDA data, {n} samples, no faiss GPU support: torch IVF"
    if n <= AUTO_TORCH_MAX_SAMPLES:
        return "torch", "flat", f"{n} samples <= {AUTO_TORCH_MAX_SAMPLES} on CPU: exact"
    if metric == "manhattan":
        return "torch", "flat", "metric='manhattan' has no approximate index"
    # torch's IVF probed per query (``knn.probed_ivf``): faster than faiss's IVF and
    # pynndescent at recall >= 0.95, for UMAP's 15 neighbours and the t-SNE family's 90
    # (benchmarks/results/knn-methods-v2-k15.json, -k90.json)
    return "torch", "ivf", f"{n} samples > {AUTO_TORCH_MAX_SAMPLES} on CPU: torch IVF"


def _resolve(
    backend: str | None, n: int, device: torch.device | str, metric: str
) -> tuple[str, str | None]:
    """Backend name and, for ``'auto'``, the faiss index it implies (else None)."""
    check_backend(backend)
    check_option("metric", metric, METRICS)
    device = torch.device(device)
    if backend == "auto":
        name, index, why = auto_backend(n, device, metric)
        logger.info("kNN backend: %r (auto: %s).", name, why)
        return name, index
    name = "torch" if backend is None else backend
    record = BACKENDS[name]
    if metric not in record.metrics:
        able = [f"{b!r}" for b, r in sorted(BACKENDS.items()) if metric in r.metrics]
        msg = (
            f"backend={name!r} does not support metric={metric!r}; "
            f"backends that do: {', '.join(able) or 'none'} "
            f"(its metrics: {format_options(record.metrics)})."
        )
        raise ValueError(msg)
    record.require()
    logger.info("kNN backend: %r.", name)
    return name, None


def resolve_backend(backend: str | None, *, n: int, device: torch.device | str, metric: str) -> str:
    """Validate ``backend`` and return the registry name of the backend to use.

    Parameters
    ----------
    backend
        ``'auto'`` (choice logged at INFO level; see the module doc), ``None`` (plain
        torch) or a name in :data:`BACKENDS`.
    n
        Number of samples searched.
    device
        Device of the data.
    metric
        The metric, checked against what the backend supports.

    Raises
    ------
    ValueError
        Unknown backend or metric, or a metric the named backend does not support.
    ImportError
        The named backend's package is not installed.
    """
    return _resolve(backend, n, device, metric)[0]


def _check_inputs(X: torch.Tensor, query: torch.Tensor | None) -> None:
    for name, t in (("X", X), ("query", query)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim != 2:
            msg = f"`{name}` must be a 2-D floating-point torch.Tensor; got {type(t).__name__}"
            msg += f" of shape {tuple(t.shape)}." if isinstance(t, torch.Tensor) else "."
            raise TypeError(msg)
    if query is None:
        return
    if query.shape[1] != X.shape[1]:
        msg = f"`query` has {query.shape[1]} features but `X` has {X.shape[1]}."
        raise ValueError(msg)
    if query.device != X.device:
        msg = f"`query` is on {query.device} but `X` is on {X.device}; move one of them."
        raise ValueError(msg)


def _check_index_options(name: str, index: str, nprobe: int | None, metric: str) -> None:
    """Reject ``index`` / ``nprobe`` where the named backend cannot use them."""
    if name not in ("faiss", "torch") and (index != "auto" or nprobe is not None):
        msg = (
            f"`index` and `nprobe` are options of the faiss and torch backends; got them "
            f"with backend={name!r}."
        )
        raise ValueError(msg)
    if name == "torch" and nprobe is not None and index != "ivf":
        msg = "`nprobe` applies to index='ivf' only; pass index='ivf' or drop nprobe."
        raise ValueError(msg)
    if name == "torch" and index == "ivf" and metric == "manhattan":
        msg = "index='ivf' does not support metric='manhattan'; use index='flat'."
        raise ValueError(msg)


def knn(
    X: torch.Tensor,
    k: int,
    *,
    backend: str | None = "auto",
    metric: str = "sqeuclidean",
    query: torch.Tensor | None = None,
    index: str = "auto",
    nprobe: int | None = None,
    generator: torch.Generator | None = None,
) -> KNNGraph:
    """k nearest neighbours of every row of ``X`` (or of ``query``) among the rows of ``X``.

    Parameters
    ----------
    X
        ``(n, d)`` float tensor (validated: finite), on the device where the search runs.
    k
        Number of neighbours: an int in ``[1, n - 1]`` (``[1, n]`` with ``query``).
    backend
        ``'auto'`` (see module doc), ``'torch'`` or ``None`` (exact torch), ``'faiss'`` or
        ``'keops'``, or any name added with :func:`register_backend`.
    metric
        ``'sqeuclidean'`` (squared L2), ``'euclidean'`` (L2), ``'cosine'`` (1 - cosine
        similarity) or ``'manhattan'`` (L1): the units of the returned distances.
    query
        ``(m, d)`` rows to search among ``X`` (on X's device, cast to X's dtype); the rows
        of ``X`` are not excluded. ``None``: every row of ``X`` among the others, the row
        itself never returned (exact duplicates of it are).
    index
        faiss and torch: ``'flat'`` (exact), ``'ivf'`` (approximate) or ``'auto'`` (faiss:
        flat up to 50 000 samples, IVF above; torch: flat). With ``backend='auto'``,
        ``'auto'`` takes the index the automatic choice implies (module doc).
    nprobe
        IVF only: inverted lists visited per query (faiss) or per cell (torch); defaults
        in ``torchdr_sc.knn.faiss_search.default_nprobe`` and
        ``torchdr_sc.knn.torch_ivf.default_nprobe``.
    generator
        Seeds the randomness of approximate indexes (IVF training); deterministic without.

    Returns
    -------
    KNNGraph
        ``indices`` (``(m, k)`` int64) and ``distances`` (``(m, k)``, X's dtype, in
        ``metric`` units), on X's device, rows sorted by increasing distance.

    Raises
    ------
    ValueError
        Unknown backend / metric / index, ``k`` out of range, index options given to another
        backend, or a metric the backend does not support.
    ImportError
        The named backend's package is missing.
    """
    _check_inputs(X, query)
    n = X.shape[0]
    k = check_number("k", k, kind=int, low=1, closed="left")
    if query is None:
        check_enough_samples(n, k, f"k ({k})")
    elif k > n:
        msg = f"k ({k}) must be at most the number of samples ({n})."
        raise ValueError(msg)
    check_option("index", index, INDEXES)
    if nprobe is not None:
        nprobe = check_number("nprobe", nprobe, kind=int, low=1, closed="left")
    name, auto_index = _resolve(backend, n, X.device, metric)
    if auto_index is None:
        _check_index_options(name, index, nprobe, metric)
    elif index == "auto":
        index = auto_index
    if query is not None:
        query = query.to(dtype=X.dtype)
    with torch.no_grad():
        return BACKENDS[name](
            X, k, metric=metric, query=query, index=index, nprobe=nprobe, generator=generator
        )
