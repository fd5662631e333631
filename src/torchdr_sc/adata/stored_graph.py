"""Reading and naming kNN graphs stored in scanpy's format.

scanpy's ``NeighborsView``: for ``key in (None, 'neighbors')`` the matrices are
``obsp['distances']`` and ``obsp['connectivities']``; for any other key they are named by
``uns[key]['distances_key']`` and ``uns[key]['connectivities_key']`` (``pp.neighbors``
writes ``f'{key}_distances'`` and ``f'{key}_connectivities'``). Distances are in the units
of ``uns[key]['params']['metric']`` (``'euclidean'`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import format_options
from ..knn import KNNGraph
from .representation import check_str, fingerprint

if TYPE_CHECKING:
    from anndata import AnnData

_CONVERTIBLE = {("euclidean", "sqeuclidean"), ("sqeuclidean", "euclidean")}


def graph_keys(key_added: str | None) -> tuple[str, str, str]:
    """``(uns key, distances key, connectivities key)`` written by ``pp.neighbors``."""
    if key_added is None or key_added == "neighbors":
        return "neighbors", "distances", "connectivities"
    return key_added, f"{key_added}_distances", f"{key_added}_connectivities"


def _available_graphs(adata: AnnData) -> list[str]:
    return [
        key
        for key, value in adata.uns.items()
        if isinstance(value, dict)
        and "params" in value
        and (key == "neighbors" or "distances_key" in value)
    ]


@dataclass(frozen=True)
class StoredGraph:
    """A kNN graph read from ``adata`` (see :func:`read_graph`).

    Attributes
    ----------
    knn
        The graph, self excluded, in the metric it was stored with.
    key
        The ``neighbors_key`` it was read from.
    distances_key
        The ``obsp`` key of its distances.
    params
        ``uns[key]['params']``.
    """

    knn: KNNGraph
    key: str
    distances_key: str
    params: dict[str, Any]
    fingerprint: str


def read_graph(adata: AnnData, neighbors_key: str, hint: str = "") -> StoredGraph:
    """Read the kNN graph that ``sc.pp.neighbors`` or ``tdr.pp.neighbors`` stored.

    ``hint`` is appended to the messages (e.g. how to search afresh instead).

    Raises
    ------
    ValueError
        If ``uns[neighbors_key]`` or its distance matrix is missing or malformed.
    """
    check_str("neighbors_key", neighbors_key)
    if neighbors_key not in adata.uns:
        found = format_options(_available_graphs(adata)) or "none"
        msg = (
            f"`neighbors_key={neighbors_key!r}` is not in adata.uns (kNN graphs available: "
            f"{found}): run sc.pp.neighbors or tdr.pp.neighbors first."
        )
        raise ValueError(msg)
    entry = adata.uns[neighbors_key]
    default = graph_keys(neighbors_key)[1]
    dist_key = default if neighbors_key == "neighbors" else entry.get("distances_key", default)
    if dist_key not in adata.obsp:
        msg = (
            f"adata.uns[{neighbors_key!r}] names the distances adata.obsp[{dist_key!r}], which "
            "is missing: recompute the graph with sc.pp.neighbors or tdr.pp.neighbors."
        )
        raise ValueError(msg)
    params = dict(entry.get("params", {}))
    metric = str(params.get("metric", "euclidean"))
    matrix = sp.csr_matrix(adata.obsp[dist_key])
    if matrix.shape != (adata.n_obs, adata.n_obs):
        expected = (adata.n_obs, adata.n_obs)
        msg = f"adata.obsp[{dist_key!r}] has shape {matrix.shape}; expected {expected}."
        raise ValueError(msg)
    try:
        knn = KNNGraph.from_scipy(matrix, metric=metric)
    except ValueError as err:
        msg = f"adata.obsp[{dist_key!r}] is not a usable kNN graph: {err}{hint}"
        raise ValueError(msg) from err
    return StoredGraph(knn, neighbors_key, dist_key, params, fingerprint(matrix))


def graph_n_neighbors(params: dict[str, Any], k: int) -> int:
    """The ``n_neighbors`` (self included) recorded for a graph, else ``k + 1``."""
    value = params.get("n_neighbors", k + 1)
    return int(np.asarray(value).ravel()[0])


def knn_for(graph: StoredGraph, needed: int, metric_in: str, what: str, hint: str = "") -> KNNGraph:
    """The graph truncated to ``needed`` neighbours and expressed in ``metric_in``.

    Parameters
    ----------
    graph
        The stored graph.
    needed
        Neighbours per cell (self excluded) the method needs.
    metric_in
        The estimator's input metric.
    what
        How to name the method and parameter in messages, e.g. ``'tsne with perplexity=30'``.
    hint
        A sentence appended to the messages (e.g. how to search afresh instead).
    """
    knn = graph.knn
    recorded = graph_n_neighbors(graph.params, knn.k) - 1
    if knn.k < needed and knn.k < recorded:
        msg = (
            f"The kNN graph `neighbors_key={graph.key!r}` records n_neighbors="
            f"{recorded + 1} but some cells keep only {knn.k} neighbours: the object was "
            "probably subset after the graph was computed. Recompute it on this object "
            f"(sc.pp.neighbors or tdr.pp.neighbors).{hint}"
        )
        raise ValueError(msg)
    if knn.k < needed:
        msg = (
            f"The kNN graph `neighbors_key={graph.key!r}` has k={knn.k} neighbours per cell "
            f"(n_neighbors={graph_n_neighbors(graph.params, knn.k)}) but {what} needs k >= "
            f"{needed}: recompute it with n_neighbors >= {needed + 1} (e.g. "
            f"sc.pp.neighbors(adata, n_neighbors={needed + 1}, key_added=...)), or ask for "
            f"fewer neighbours.{hint}"
        )
        raise ValueError(msg)
    knn = knn.truncate(needed)
    if knn.metric == metric_in:
        return knn
    if (knn.metric, metric_in) not in _CONVERTIBLE:
        msg = (
            f"The kNN graph `neighbors_key={graph.key!r}` uses metric {knn.metric!r} but the "
            f"method uses metric_in={metric_in!r}: pass metric_in={knn.metric!r} or recompute "
            f"the graph.{hint}"
        )
        raise ValueError(msg)
    if metric_in == "sqeuclidean":
        return KNNGraph(knn.indices, knn.distances.square(), "sqeuclidean")
    return KNNGraph(knn.indices, torch.sqrt(knn.distances.clamp_min(0)), "euclidean")


@dataclass(frozen=True)
class GraphChoice:
    """Which stored kNN graph a ``tl`` call uses, if any (see :func:`choose_graph`).

    Attributes
    ----------
    key
        The ``neighbors_key`` to read, or ``None`` for a fresh search.
    by_default
        The graph was picked because it was there (``neighbors_key=None``), not asked for.
    n_neighbors
        Its ``n_neighbors`` (self included), when a graph is used.
    metric
        Its metric, when a graph is used.
    """

    key: str | None
    by_default: bool = False
    n_neighbors: int | None = None
    metric: str | None = None


def _is_graph(adata: AnnData, key: str) -> bool:
    entry = adata.uns.get(key)
    if not hasattr(entry, "get"):
        return False
    default = graph_keys(key)[1]
    dist_key = default if key == "neighbors" else entry.get("distances_key", default)
    return dist_key in adata.obsp


def choose_graph(
    adata: AnnData,
    neighbors_key: str | None,
    *,
    default_key: str | None,
    recompute: bool,
) -> GraphChoice:
    """The stored graph a ``tl`` call reads: asked for, found by default, or none.

    scanpy's ``tl.umap`` reads ``uns['neighbors']``; here, with ``neighbors_key=None`` the
    graph under ``default_key`` is used when it is there (the caller then checks that it
    serves the request, and says why when it does not), and ``recompute=True`` asks for a
    fresh search instead.

    Raises
    ------
    ValueError
        Both ``neighbors_key`` and ``recompute=True``.
    """
    check_str("neighbors_key", neighbors_key, optional=True)
    if recompute and neighbors_key is not None:
        msg = (
            f"`neighbors_key={neighbors_key!r}` reads a stored graph and "
            "`recompute_neighbors=True` searches afresh: pass one of them."
        )
        raise ValueError(msg)
    key, by_default = neighbors_key, False
    if key is None and not recompute and default_key is not None:
        if _is_graph(adata, default_key):
            key, by_default = default_key, True
    if key is None or key not in adata.uns:
        return GraphChoice(key)
    params = dict(adata.uns[key].get("params", {}))
    n_neighbors = params.get("n_neighbors")
    metric = params.get("metric")
    return GraphChoice(
        key,
        by_default,
        None if n_neighbors is None else int(np.asarray(n_neighbors).ravel()[0]),
        None if metric is None else str(metric),
    )
