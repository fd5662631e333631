"""The one code path behind every ``tl`` function.

:func:`run_embedding` validates everything, chooses the representation, reuses a cached
affinity or a stored kNN graph when it can, runs the estimator, and only then writes the
results (all or nothing) in scanpy's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._device import check_n_jobs, cpu_threads, resolve_device
from .._validation import check_number
from .._version import package_version
from ..affinity import SparseAffinity
from ..distributed import resolve_distributed
from ..initialization import check_init_array
from . import cache as affinity_cache
from . import log
from .changes import Changes, commit
from .init_pos import init_from_adata
from .keys import output_keys
from .options import ScanpyNames
from .representation import Representation, check_key, choose_representation
from .stale_graph import params_only, search_like, stored_connectivities
from .stale_graph import stale_reason as stale_graph_reason
from .stored_graph import StoredGraph, knn_for, read_graph
from .uns import to_uns

if TYPE_CHECKING:
    from anndata import AnnData

    from ..knn import KNNGraph


@dataclass(frozen=True)
class Method:
    """How a ``tl`` function names its results.

    Attributes
    ----------
    name
        Function name, e.g. ``'umap'``; default keys ``obsm['X_<name>']`` and ``uns[name]``.
    label
        Name used in log messages, e.g. ``'UMAP'``.
    names
        The ``tl`` function's scanpy names of estimator parameters (recorded in ``uns``
        under the scanpy name only).
    """

    name: str
    label: str
    names: ScanpyNames = field(default_factory=ScanpyNames)


@dataclass(frozen=True)
class GraphUse:
    """How a ``tl`` call uses a stored kNN graph.

    Attributes
    ----------
    key
        The ``neighbors_key`` read, or ``None`` for a fresh search.
    by_default
        Read because it was there (``neighbors_key=None``), not because it was named.
    """

    key: str | None = None
    by_default: bool = False

    def fresh_search_hint(self) -> str:
        """What to pass for a fresh search instead (only for a graph used by default)."""
        if not self.by_default:
            return ""
        return " Or pass recompute_neighbors=True to search the neighbours afresh."


def _resolved_names(rep: Representation) -> tuple[str, int]:
    return rep.use_rep, int(rep.data.shape[1])


def _graph_rep_params(params: dict[str, Any]) -> tuple[str | None, int | None]:
    use_rep = params.get("use_rep")
    n_pcs = params.get("n_pcs")
    use_rep = None if use_rep is None else str(use_rep)
    n_pcs = None if n_pcs is None else int(np.asarray(n_pcs).ravel()[0])
    return use_rep, n_pcs


def _representation(
    adata: AnnData,
    use_rep: str | None,
    n_pcs: int | None,
    graph: StoredGraph | None,
    use: GraphUse,
) -> Representation:
    """The representation to embed; with a graph, the one the graph was computed on.

    Raises
    ------
    ValueError
        ``use_rep`` / ``n_pcs`` that differ from the graph's representation.
    """
    if graph is None:
        return choose_representation(adata, use_rep=use_rep, n_pcs=n_pcs)
    graph_rep, graph_pcs = _graph_rep_params(graph.params)
    if use_rep is None and n_pcs is None:
        return choose_representation(adata, use_rep=graph_rep, n_pcs=graph_pcs)
    rep = choose_representation(adata, use_rep=use_rep, n_pcs=n_pcs)
    try:
        graph_names = _resolved_names(
            choose_representation(adata, use_rep=graph_rep, n_pcs=graph_pcs)
        )
    except ValueError:
        graph_names = (str(graph_rep), graph_pcs or 0)
    if graph_names != _resolved_names(rep):
        msg = (
            f"The kNN graph `neighbors_key={graph.key!r}` was computed on "
            f"{graph_names[0]!r} ({graph_names[1]} columns), not on the requested "
            f"use_rep={rep.use_rep!r} ({rep.data.shape[1]} columns): leave use_rep / n_pcs "
            "unset to embed the graph's representation, or recompute the graph on the one "
            f"you want (sc.pp.neighbors(adata, use_rep={rep.use_rep!r}, ...))."
            f"{use.fresh_search_hint()}"
        )
        raise ValueError(msg)
    return rep


def _check_graph_use(est: Any, method: Method, neighbors_key: str) -> None:
    if not est.uses_knn_graph:
        msg = (
            f"tl.{method.name} computes its affinity from all pairs of cells and cannot use "
            f"a kNN graph: leave `neighbors_key` unset (got {neighbors_key!r})."
        )
        raise ValueError(msg)


def _stored_knn(graph: StoredGraph, est: Any, method: Method, n: int, use: GraphUse) -> KNNGraph:
    what = f"tl.{method.name} with " + ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in est.affinity_params().items()
        if k in ("perplexity", "n_neighbors")
    )
    knn = knn_for(graph, est.neighbours_needed(n), est.metric_in, what, use.fresh_search_hint())
    found = f" found in adata.uns[{graph.key!r}]" if use.by_default else ""
    log.info(f"    using the kNN graph .obsp[{graph.distances_key!r}]{found} (k={knn.k})")
    return knn


def in_memory_copy(adata: AnnData) -> AnnData:
    """A copy of ``adata`` held in memory (a backed object is read in; anndata refuses to
    ``copy()`` one without a file name), for the ``copy=True`` / ``inplace=False`` results."""
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
    graph_by_default: bool = False,
    call_params: dict[str, Any] | None = None,
    n_jobs: int | None = None,
    progress_bar: bool | None = False,
    stale_graph: str = "recompute",
) -> AnnData | None:
    """Embed the cells of ``adata`` with ``estimator`` and write the result scanpy's way.

    Writes ``obsm['X_<method>' | key_added]`` (float32; the active scanpy preset's key when
    it has one), ``uns['<method>' | key_added]`` (``{'params', 'timings', 'n_iter'}``) and,
    when ``cache``, the input affinity in ``obsp`` with its description in
    ``uns['tdr_affinities']``. Nothing is written if any step fails or is interrupted.

    Parameters
    ----------
    adata
        The annotated data.
    estimator
        An unfitted estimator of :mod:`torchdr_sc.estimators` (its ``random_state`` is the
        int seed that gets recorded).
    method
        Names of the method.
    key_added, use_rep, n_pcs, neighbors_key, copy, cache, n_jobs, progress_bar
        As documented in the ``tl`` functions (``progress_bar=None``: the rule of
        :func:`torchdr_sc.progress.default_progress` for the number of cells).
    graph_by_default
        ``neighbors_key`` was picked because the graph was there, not named by the user
        (messages then say how to search afresh).
    call_params
        Further values of the ``tl`` call to record in ``uns[key]['params']`` (e.g.
        ``n_jobs``); the estimator's parameters are recorded under the ``tl`` names of
        ``method.names``.
    stale_graph
        What to do with a stored graph that no longer fits the object (cells subset away,
        :mod:`~torchdr_sc.adata.stale_graph`): ``'recompute'`` searches afresh with its
        recorded parameters (warned, recorded as ``neighbors_recomputed``); ``'use'`` takes
        its stored connectivities as the input affinity, as scanpy's ``tl.umap`` does.

    Returns
    -------
    The new AnnData if ``copy``, else ``None``.
    """
    check_key("key_added", key_added, optional=True)
    check_n_jobs(n_jobs)
    check_number("n_components", estimator.n_components, kind=int, low=1, closed="left")
    init_key = init_from_adata(adata, estimator)
    estimator.validate()
    resolve_device(estimator.device)  # an unusable device fails before any work
    start = log.info(f"computing {method.label}")
    use = GraphUse(neighbors_key, graph_by_default and neighbors_key is not None)
    knn = None
    graph, stale, stored_p = _stored_graph(
        adata, estimator, method, neighbors_key, use, stale_graph
    )
    rep = _representation(adata, use_rep, n_pcs, graph, use)
    if graph is not None and graph.knn is None:  # recorded parameters, searched afresh
        quiet = "pass recompute_neighbors=True" if use.by_default else "leave neighbors_key unset"
        log.warning(
            f"the kNN graph adata.uns[{neighbors_key!r}] does not fit this object: {stale}. "
            f"Searching the neighbours afresh with its parameters ({quiet} to search afresh "
            "without this warning)."
        )
        graph = search_like(graph, rep, estimator.device)
        call_params = {**(call_params or {}), "neighbors_recomputed": stale}
    _check_output_keys(method, key_added, rep, neighbors_key)
    if not isinstance(estimator.init, str):  # named as the tl function names it
        name = method.names.scanpy_name("init") or "init"
        check_init_array(estimator.init, rep.data.shape[0], estimator.n_components, name)
    estimator.check_n_samples(rep.data.shape[0])
    if progress_bar is None:
        from ..progress import default_progress

        progress_bar = default_progress(rep.data.shape[0])
    estimator.set_params(progress_bar=bool(progress_bar))
    if graph is not None:
        knn = _stored_knn(graph, estimator, method, rep.data.shape[0], use)
    slot = _slot(estimator, rep, graph) if cache and stored_p is None else None
    cached = affinity_cache.lookup(adata, slot) if slot is not None else stored_p
    if cached is not None and slot is not None:
        log.info(f"    using the cached input affinity .obsp[{slot.key!r}]")
    with cpu_threads(n_jobs):
        import torch

        # recorded as n_jobs: the torch threads the fit started with (the policy's choice
        # when n_jobs is None), as scanpy records the n_jobs it used
        call_params = {**(call_params or {}), "n_jobs": torch.get_num_threads()}
        embedding = _fit_array(estimator, rep, cached, knn, method)
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
        reused=cached is not None and slot is not None,
        call_params=call_params,
    )
    target = in_memory_copy(adata) if copy else adata
    commit(target, changes)
    log.info("    finished", time=start, deep=changes.summary())
    return target if copy else None


def _stored_graph(
    adata: AnnData,
    estimator: Any,
    method: Method,
    neighbors_key: str | None,
    use: GraphUse,
    stale_graph: str,
) -> tuple[Any, str | None, Any]:
    """The stored graph a fit reads: ``(graph, why it is stale or None, stored P or None)``.

    A graph that still fits the object is read whole; a stale one is either used as it is
    (``stale_graph='use'``: its connectivities become the input affinity, as scanpy does) or
    kept for its recorded parameters only, to search afresh with them.
    """
    if neighbors_key is None:
        return None, None, None
    _check_graph_use(estimator, method, neighbors_key)
    stale = stale_graph_reason(adata, neighbors_key)
    if stale is None:
        return read_graph(adata, neighbors_key, use.fresh_search_hint()), None, None
    if stale_graph == "use":
        stored_p = stored_connectivities(adata, neighbors_key)
        log.warning(f"the kNN graph adata.uns[{neighbors_key!r}]: {stale}; used as it is")
        return None, stale, stored_p
    return params_only(adata, neighbors_key), stale, None


def _check_output_keys(
    method: Method, key_added: str | None, rep: Representation, neighbors_key: str | None
) -> None:
    """Refuse a ``key_added`` that would overwrite what the call reads.

    Raises
    ------
    ValueError
        ``key_added`` names the representation embedded, the kNN graph used, or the
        affinity cache's descriptions.
    """
    if key_added is None:
        return
    obsm_key, uns_key = output_keys(method.name, key_added)
    if rep.use_rep != "X" and obsm_key == rep.use_rep:
        msg = (
            f"`key_added={key_added!r}` would overwrite the representation being embedded "
            f"(adata.obsm[{rep.use_rep!r}]); choose another key."
        )
        raise ValueError(msg)
    if uns_key in {neighbors_key, affinity_cache.UNS_KEY} - {None}:
        msg = (
            f"`key_added={key_added!r}` would overwrite adata.uns[{uns_key!r}], which this "
            "call reads; choose another key."
        )
        raise ValueError(msg)


def _params_record(
    est: Any, method: Method, call_params: dict[str, Any] | None, init_key: str | None
) -> dict[str, Any]:
    """``uns[key]['params']``: the estimator's parameters, under scanpy's names where the
    ``tl`` function has them (one name per meaning), then ``call_params``."""
    est_params = est.get_params(deep=False)
    scanpy = method.names.scanpy_values(est_params)
    renamed = {method.names.to_estimator[name] for name in scanpy}
    params: dict[str, Any] = {"method": method.name}
    params.update({k: v for k, v in est_params.items() if k not in renamed})
    params.update(scanpy)
    params.update(est.derived_params())
    params.update(call_params or {})
    init_name = method.names.scanpy_name("init") or "init"
    if init_key is not None:
        params[init_name] = init_key
    elif isinstance(params.get(init_name), np.ndarray):
        params[init_name] = "array"
    return params


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
    call_params: dict[str, Any] | None = None,
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
        Names of the method (keys from :func:`~torchdr_sc.adata.keys.output_keys`).
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
    call_params
        Further values of the ``tl`` call to record.
    """
    _check_finite(embedding)
    obsm_key, uns_key = output_keys(method.name, key_added)
    affinity = whole_affinity(est.affinity_in_) if slot is not None and not reused else None
    store = affinity is not None and affinity_cache.storable(affinity)
    if slot is not None and not reused and not store:
        limit = affinity_cache.MAX_CACHED_NNZ
        log.hint(f"    input affinity not cached: more than {limit} entries")
    params = _params_record(est, method, call_params, init_key)
    params.update(
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=neighbors_key,
        torchdr_sc_version=package_version(),
        device_used=str(est.device_used_),
    )
    path = getattr(est, "execution_path_", None)
    if path:  # which kernels ran (they give the same numbers on CPU)
        params["execution_path"] = str(path)
    if slot is not None and (reused or store):
        params["affinity_key"] = slot.key
    timings = {k: float(v) for k, v in est.timings_.items()}
    entry = {"params": to_uns(params), "timings": timings, "n_iter": int(est.n_iter_)}
    changes = Changes()
    changes.add("obsm", obsm_key, embedding, f"{method.label} coordinates")
    changes.add("uns", uns_key, entry, f"{method.label} parameters")
    for name, values in getattr(est, "per_cell_outputs", dict)().items():
        _check_finite(np.asarray(values)[:, None])
        changes.add("obs", f"{uns_key}_{name}", np.asarray(values), f"{method.label} {name}")
    if store:
        changes.add("obsp", slot.key, affinity_cache.to_obsp(affinity), "input affinity P")
        entries = dict(adata.uns.get(affinity_cache.UNS_KEY, {}))
        entries[slot.key] = slot.description(package_version())
        changes.add("uns", affinity_cache.UNS_KEY, entries, "descriptions of the cached affinities")
    return changes


def whole_affinity(P: SparseAffinity) -> SparseAffinity | None:
    """``P`` with every row, for the cache: a row block of a ``torchrun`` fit (TSNE) is
    gathered from all processes when the whole P is small enough to be cached (every
    process takes part and gets it); ``None`` when it is not."""
    if P.holds_all_rows:
        return P
    ctx = resolve_distributed("auto", P.n)
    if not ctx.active:
        return None
    total = ctx.reduce_scalar(torch.tensor(float(P.nnz), dtype=torch.float64))
    if float(total) > affinity_cache.MAX_CACHED_NNZ:
        return None
    rows, cols, weights = (ctx.all_gather_concat(t) for t in (P.rows, P.cols, P.weights))
    return SparseAffinity(rows, cols, weights, P.n)


def _check_finite(embedding: np.ndarray) -> None:
    """Raise rather than write an embedding that holds NaN or inf."""
    finite = np.isfinite(embedding)
    if finite.all():
        return
    bad = int((~finite.reshape(len(embedding), -1).all(axis=1)).sum())
    msg = (
        f"The embedding has {bad} of {len(embedding)} rows holding NaN or inf; nothing was "
        "written. Lower the learning rate or check the initial positions."
    )
    raise FloatingPointError(msg)


def _slot(est: Any, rep: Representation, graph: StoredGraph | None) -> affinity_cache.CacheSlot:
    """Cache slot of the affinity from ``rep``, or from ``graph`` when one is reused."""
    if graph is not None:
        source, n_pcs, fp = f"neighbors:{graph.key}", None, graph.fingerprint
    else:
        source, n_pcs, fp = rep.use_rep, rep.n_pcs, rep.fingerprint()
    return affinity_cache.make_slot(est.affinity_params(), source, n_pcs, fp, rep.data.shape[0])


def _fit_array(
    est: Any,
    rep: Representation,
    cached: SparseAffinity | None,
    knn: KNNGraph | None,
    method: Method,
) -> np.ndarray:
    try:
        out = est.fit_transform(rep.data, affinity=cached, knn=None if cached is not None else knn)
    except FloatingPointError as err:  # name the learning rate as the tl function does
        name = method.names.scanpy_name("lr")
        if name is None:
            raise
        raise FloatingPointError(str(err).replace("`lr`", f"`{name}`")) from err
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.ascontiguousarray(out, dtype=np.float32)
