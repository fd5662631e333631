"""The one code path behind every ``tl`` function.

:func:`run_embedding` validates everything, chooses the representation, reuses a cached
affinity or a stored kNN graph when it can, runs the estimator, and only then writes the
results (all or nothing) in scanpy's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._device import resolve_device
from .._validation import format_options
from . import _cache, _log
from ._graph import StoredGraph, knn_for, read_graph
from ._params import to_uns
from ._rep import Representation, check_str, choose_representation
from ._write import Changes, commit

if TYPE_CHECKING:
    from anndata import AnnData

    from ..graph import KNNGraph, SparseAffinity


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


def build_estimator(cls: type, method: str, params: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """Instantiate ``cls`` with the adapter's ``params`` plus the user's extra ``kwargs``.

    Unknown keyword arguments raise a TypeError listing the valid ones; ``verbose``
    defaults to scanpy's rule (``sc.settings.verbosity > 3``).
    """
    valid = set(cls().get_params())
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        msg = (
            f"tl.{method}() got an unexpected keyword argument {unknown[0]!r}; the "
            f"{cls.__name__} estimator accepts: {format_options(valid - set(params))}."
        )
        raise TypeError(msg)
    merged = {**params, **kwargs}
    merged.setdefault("verbose", _log.verbosity() >= _log.DEBUG)
    return cls(**merged)


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
    if hasattr(est, "_affinity_from_data"):
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
    knn = knn_for(graph, est._neighbours_needed_for(n), est.metric_in, what)
    _log.info(f"    using the kNN graph .obsp[{graph.distances_key!r}] (k={knn.k})")
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
    extra_params: Callable[[Any], dict[str, Any]] | None = None,
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
    extra_params
        Called with the checked estimator; returns further values to record in
        ``uns[key]['params']`` (e.g. UMAP's ``a`` and ``b``).

    Returns
    -------
    The new AnnData if ``copy``, else ``None``.
    """
    check_str("key_added", key_added, optional=True)
    init_key = _init_from_obsm(adata, estimator)
    estimator._check_params()
    resolve_device(estimator.device)  # an unusable device fails before any work
    extra = {**(extra_params(estimator) if extra_params else {}), "init": init_key}
    obsm_key = key_added or f"X_{method.name}"
    uns_key = key_added or method.name
    start = _log.info(f"computing {method.label}")
    graph, knn = None, None
    if neighbors_key is not None:
        _check_graph_use(estimator, method, neighbors_key)
        graph = read_graph(adata, neighbors_key)
    rep = _representation(adata, use_rep, n_pcs, graph.params if graph else None)
    estimator._check_data(rep.data.shape[0])
    if graph is not None:
        knn = _stored_knn(graph, estimator, method, rep.data.shape[0])
    slot = _slot(estimator, rep, graph) if cache else None
    cached = _cache.lookup(adata, slot) if slot is not None else None
    if cached is not None:
        _log.info(f"    using the cached input affinity .obsp[{slot.key!r}]")
    embedding = _fit(estimator, rep, cached, knn)
    store = slot is not None and cached is None and _cache.storable(estimator.affinity_in_)
    if slot is not None and cached is None and not store:
        _log.hint(f"    input affinity not cached: more than {_cache.MAX_CACHED_NNZ} entries")
    params = _record(estimator, method, rep, neighbors_key, extra)
    if cached is not None or store:
        params["affinity_key"] = slot.key
    changes = Changes()
    changes.add("obsm", obsm_key, embedding, f"{method.label} coordinates")
    changes.add("uns", uns_key, _uns_entry(estimator, params), f"{method.label} parameters")
    if store:
        _add_cache_entry(changes, adata, slot, estimator.affinity_in_)
    target = _copy(adata) if copy else adata
    commit(target, changes)
    _log.info("    finished", time=start, deep=changes.summary())
    return target if copy else None


def _slot(est: Any, rep: Representation, graph: StoredGraph | None) -> _cache.CacheSlot:
    """Cache slot of the affinity from ``rep``, or from ``graph`` when one is reused."""
    if graph is not None:
        source, n_pcs, fp = f"neighbors:{graph.key}", None, graph.fingerprint
    else:
        source, n_pcs, fp = rep.use_rep, rep.n_pcs, rep.fingerprint()
    return _cache.make_slot(est.affinity_params(), source, n_pcs, fp, rep.data.shape[0])


def _fit(
    est: Any, rep: Representation, cached: SparseAffinity | None, knn: KNNGraph | None
) -> np.ndarray:
    out = est.fit_transform(rep.data, affinity=cached, knn=None if cached is not None else knn)
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.ascontiguousarray(out, dtype=np.float32)


def _record(
    est: Any,
    method: Method,
    rep: Representation,
    neighbors_key: str | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"method": method.name, **est.get_params(deep=False)}
    params.update({k: v for k, v in (extra or {}).items() if v is not None})
    params.update(
        use_rep=rep.use_rep,
        n_pcs=rep.n_pcs,
        neighbors_key=neighbors_key,
        torchdr_sc_version=package_version(),
    )
    device = getattr(est, "_run_device", None)
    if device is not None:
        params["device_used"] = str(device)
    return to_uns(params)


def _uns_entry(est: Any, params: dict[str, Any]) -> dict[str, Any]:
    """``uns[key]``: the parameters, the seconds per stage and the iterations run."""
    timings = {k: float(v) for k, v in getattr(est, "timings_", {}).items()}
    return {"params": params, "timings": timings, "n_iter": int(getattr(est, "n_iter_", 0))}


def _add_cache_entry(
    changes: Changes, adata: AnnData, slot: _cache.CacheSlot, affinity: SparseAffinity
) -> None:
    """Schedule the affinity and its description (a new dict: the old one stays intact)."""
    changes.add("obsp", slot.key, _cache.to_obsp(affinity), "input affinity P")
    entries = dict(adata.uns.get(_cache.UNS_KEY, {}))
    entries[slot.key] = slot.description(package_version())
    changes.add("uns", _cache.UNS_KEY, entries, "descriptions of the cached affinities")
