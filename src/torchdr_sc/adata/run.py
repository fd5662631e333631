"""The one code path behind every ``tl`` function.

:func:`run_embedding` validates everything, chooses the representation, reuses a cached
affinity or a stored kNN graph when it can, runs the estimator, and only then writes the
results (all or nothing) in scanpy's layout.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._device import resolve_device
from .._validation import format_options
from . import cache as affinity_cache
from . import log
from .changes import Changes, commit
from .representation import Representation, check_str, choose_representation
from .stored_graph import StoredGraph, knn_for, read_graph
from .uns import to_uns

if TYPE_CHECKING:
    from anndata import AnnData

    from ..affinity import SparseAffinity
    from ..knn import KNNGraph


def package_version() -> str:
    """Installed version of torchdr-sc."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchdr-sc")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


@dataclass(frozen=True)
class Method:
    """How a ``tl`` function names its results.

    Attributes
    ----------
    name
        Function name, e.g. ``'umap'``; default keys ``obsm['X_<name>']`` and ``uns[name]``.
    label
        Name used in log messages, e.g. ``'UMAP'``.
    """

    name: str
    label: str


def _named_parameters(tl_function: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(tl_function).parameters) - {"adata", "kwargs"}


def _first_unknown(estimator_cls: type, given: dict[str, Any]) -> tuple[str | None, set[str]]:
    """The first (sorted) key of ``given`` that the estimator does not take, and its params."""
    valid = set(estimator_cls().get_params())
    unknown = sorted(set(given) - valid)
    return (unknown[0] if unknown else None), valid


def estimator_options(
    tl_function: Callable[..., Any], estimator_cls: type, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The estimator parameters a ``tl`` call passes on through ``**kwargs``, checked.

    Parameters
    ----------
    tl_function
        The ``tl`` function called (its name and its own parameters make the message).
    estimator_cls
        The estimator it builds.
    kwargs
        The extra keyword arguments of the call.

    Returns
    -------
    ``kwargs`` with ``verbose`` defaulting to scanpy's rule (``sc.settings.verbosity > 3``).

    Raises
    ------
    TypeError
        A keyword that is not a parameter of the estimator, with the list of those that are.
    """
    unknown, valid = _first_unknown(estimator_cls, kwargs)
    if unknown is not None:
        msg = (
            f"tl.{tl_function.__name__}() got an unexpected keyword argument {unknown!r}; "
            f"the {estimator_cls.__name__} estimator accepts: "
            f"{format_options(valid - _named_parameters(tl_function))}."
        )
        raise TypeError(msg)
    options = dict(kwargs)
    options.setdefault("verbose", log.verbosity() >= log.DEBUG)
    return options


def build_estimator(
    tl_function: Callable[..., Any], estimator_cls: type, params: dict[str, Any]
) -> Any:
    """The estimator ``tl_function`` builds when given the estimator parameters ``params``.

    For callers that hold estimator parameters rather than a ``tl`` call (the atlas job's
    streamed path): the ``tl`` function's own defaults (e.g. ``tl.umap``'s ``min_dist``
    and ``init``) apply to what ``params`` does not set, and the parameters are validated.

    Raises
    ------
    TypeError
        A key of ``params`` that is not a parameter of the estimator.
    ValueError
        An invalid value (the message names the parameter).
    """
    unknown, valid = _first_unknown(estimator_cls, params)
    if unknown is not None:
        msg = (
            f"{unknown!r} is not a parameter of {estimator_cls.__name__} "
            f"(valid: {format_options(valid)})."
        )
        raise TypeError(msg)
    defaults = {
        name: p.default
        for name, p in inspect.signature(tl_function).parameters.items()
        if name in valid and p.default is not inspect.Parameter.empty
    }
    est = estimator_cls(**{**defaults, **params})
    est.validate()
    return est


def _representation(
    adata: AnnData, use_rep: str | None, n_pcs: int | None, graph_params: dict[str, Any] | None
) -> Representation:
    if graph_params is not None and use_rep is None and n_pcs is None:
        use_rep = graph_params.get("use_rep")
        n_pcs = graph_params.get("n_pcs")
        use_rep = None if use_rep is None else str(use_rep)
        n_pcs = None if n_pcs is None else int(np.asarray(n_pcs).ravel()[0])
    return choose_representation(adata, use_rep=use_rep, n_pcs=n_pcs)


def _check_graph_use(est: Any, method: Method, neighbors_key: str) -> None:
    if not est.uses_knn_graph:
        msg = (
            f"tl.{method.name} computes its affinity from all pairs of cells and cannot use "
            f"a kNN graph: leave `neighbors_key` unset (got {neighbors_key!r})."
        )
        raise ValueError(msg)


def _stored_knn(graph: StoredGraph, est: Any, method: Method, n: int) -> KNNGraph:
    what = f"tl.{method.name} with " + ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in est.affinity_params().items()
        if k in ("perplexity", "n_neighbors")
    )
    knn = knn_for(graph, est.neighbours_needed(n), est.metric_in, what)
    log.info(f"    using the kNN graph .obsp[{graph.distances_key!r}] (k={knn.k})")
    return knn


def _init_from_obsm(adata: AnnData, est: Any) -> str | None:
    """Replace an ``init`` that names an ``obsm`` key by that array (as scanpy's init_pos).

    Returns the key (recorded in the parameters instead of the array), else ``None``.
    """
    init = est.init
    if not isinstance(init, str) or init not in adata.obsm:
        return None
    array = np.asarray(adata.obsm[init], dtype=np.float32)[:, : est.n_components]
    if array.shape[1] < est.n_components:
        msg = (
            f"`init={init!r}` has {array.shape[1]} columns; n_components={est.n_components} "
            "are needed."
        )
        raise ValueError(msg)
    est.set_params(init=np.ascontiguousarray(array))
    return init


def _copy(adata: AnnData) -> AnnData:
    return adata.to_memory() if adata.isbacked else adata.copy()


def run_embedding(
    adata: AnnData,
    estimator: Any,
    method: Method,
    *,
    key_added: str | None,
    use_rep: str | None,
    n_pcs: int | None,
    neighbors_key: str | None,
    copy: bool,
    cache: bool,
) -> AnnData | None:
    """Embed the cells of ``adata`` with ``estimator`` and write the result scanpy's way.

    Writes ``obsm['X_<method>' | key_added]`` (float32), ``uns['<method>' | key_added]``
    (``{'params', 'timings', 'n_iter'}``) and, when ``cache``, the input affinity in
    ``obsp`` with its description in ``uns['tdr_affinities']``. Nothing is written if any
    step fails or is interrupted.

    Parameters
    ----------
    adata
        The annotated data.
    estimator
        An unfitted estimator of :mod:`torchdr_sc.estimators` (its ``random_state`` is the
        int seed that gets recorded).
    method
        Names of the method.
    key_added, use_rep, n_pcs, neighbors_key, copy, cache
        As documented in the ``tl`` functions.

    Returns
    -------
    The new AnnData if ``copy``, else ``None``.
    """
    check_str("key_added", key_added, optional=True)
    init_key = _init_from_obsm(adata, estimator)
    estimator.validate()
    resolve_device(estimator.device)  # an unusable device fails before any work
    start = log.info(f"computing {method.label}")
    graph, knn = None, None
    if neighbors_key is not None:
        _check_graph_use(estimator, method, neighbors_key)
        graph = read_graph(adata, neighbors_key)
    rep = _representation(adata, use_rep, n_pcs, graph.params if graph else None)
    estimator.check_n_samples(rep.data.shape[0])
    if graph is not None:
        knn = _stored_knn(graph, estimator, method, rep.data.shape[0])
    slot = _slot(estimator, rep, graph) if cache else None
    cached = affinity_cache.lookup(adata, slot) if slot is not None else None
    if cached is not None:
        log.info(f"    using the cached input affinity .obsp[{slot.key!r}]")
    embedding = _fit_array(estimator, rep, cached, knn)
    changes = results_changes(
        adata,
        estimator,
        method,
        embedding,
        key_added=key_added,
        use_rep=rep.use_rep,
        n_pcs=rep.n_pcs,
        neighbors_key=neighbors_key,
        init_key=init_key,
        slot=slot,
        reused=cached is not None,
    )
    target = _copy(adata) if copy else adata
    commit(target, changes)
    log.info("    finished", time=start, deep=changes.summary())
    return target if copy else None


def results_changes(
    adata: AnnData,
    est: Any,
    method: Method,
    embedding: np.ndarray,
    *,
    key_added: str | None,
    use_rep: str,
    n_pcs: int | None,
    neighbors_key: str | None,
    init_key: str | None = None,
    slot: affinity_cache.CacheSlot | None = None,
    reused: bool = False,
) -> Changes:
    """What a fitted estimator writes, in scanpy's layout (nothing is written here).

    ``obsm[key]`` (the float32 ``embedding``), ``uns[key] = {'params', 'timings',
    'n_iter'}`` and, when a cache ``slot`` is given and the affinity was computed (not
    ``reused``) and is small enough, the affinity in ``obsp[slot.key]`` with its
    description in ``uns['tdr_affinities']`` (a new dict: the old one stays intact).

    Parameters
    ----------
    adata
        The annotated data (read for the existing cache descriptions only).
    est
        The fitted estimator.
    method
        Names of the method (``key`` defaults to ``method.name``).
    embedding
        The coordinates.
    key_added, use_rep, n_pcs, neighbors_key
        As in the ``tl`` functions; ``use_rep`` and ``n_pcs`` as resolved.
    init_key
        ``obsm`` key the initial embedding came from (recorded instead of the array).
    slot
        Cache slot of the affinity (``None``: no caching).
    reused
        The affinity was read from ``slot`` rather than computed.
    """
    obsm_key = key_added or f"X_{method.name}"
    uns_key = key_added or method.name
    store = slot is not None and not reused and affinity_cache.storable(est.affinity_in_)
    if slot is not None and not reused and not store:
        limit = affinity_cache.MAX_CACHED_NNZ
        log.hint(f"    input affinity not cached: more than {limit} entries")
    params: dict[str, Any] = {"method": method.name, **est.get_params(deep=False)}
    params.update(est.derived_params())
    params.update(
        init=init_key if init_key is not None else params["init"],
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=neighbors_key,
        torchdr_sc_version=package_version(),
        device_used=str(est.device_used_),
    )
    if slot is not None and (reused or store):
        params["affinity_key"] = slot.key
    timings = {k: float(v) for k, v in est.timings_.items()}
    entry = {"params": to_uns(params), "timings": timings, "n_iter": int(est.n_iter_)}
    changes = Changes()
    changes.add("obsm", obsm_key, embedding, f"{method.label} coordinates")
    changes.add("uns", uns_key, entry, f"{method.label} parameters")
    if store:
        changes.add("obsp", slot.key, affinity_cache.to_obsp(est.affinity_in_), "input affinity P")
        entries = dict(adata.uns.get(affinity_cache.UNS_KEY, {}))
        entries[slot.key] = slot.description(package_version())
        changes.add("uns", affinity_cache.UNS_KEY, entries, "descriptions of the cached affinities")
    return changes


def _slot(est: Any, rep: Representation, graph: StoredGraph | None) -> affinity_cache.CacheSlot:
    """Cache slot of the affinity from ``rep``, or from ``graph`` when one is reused."""
    if graph is not None:
        source, n_pcs, fp = f"neighbors:{graph.key}", None, graph.fingerprint
    else:
        source, n_pcs, fp = rep.use_rep, rep.n_pcs, rep.fingerprint()
    return affinity_cache.make_slot(est.affinity_params(), source, n_pcs, fp, rep.data.shape[0])


def _fit_array(
    est: Any, rep: Representation, cached: SparseAffinity | None, knn: KNNGraph | None
) -> np.ndarray:
    out = est.fit_transform(rep.data, affinity=cached, knn=None if cached is not None else knn)
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.ascontiguousarray(out, dtype=np.float32)
