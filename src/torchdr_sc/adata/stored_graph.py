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


def read_graph(adata: AnnData, neighbors_key: str) -> StoredGraph:
    """Read the kNN graph that ``sc.pp.neighbors`` or ``tdr.pp.neighbors`` stored.

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
        msg = f"adata.obsp[{dist_key!r}] is not a usable kNN graph: {err}"
        raise ValueError(msg) from err
    return StoredGraph(knn, neighbors_key, dist_key, params, fingerprint(matrix))


def graph_n_neighbors(params: dict[str, Any], k: int) -> int:
    """The ``n_neighbors`` (self included) recorded for a graph, else ``k + 1``."""
    value = params.get("n_neighbors", k + 1)
    return int(np.asarray(value).ravel()[0])


def knn_for(graph: StoredGraph, needed: int, metric_in: str, what: str) -> KNNGraph:
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
    """
    knn = graph.knn
    if knn.k < needed:
        msg = (
            f"The kNN graph `neighbors_key={graph.key!r}` has k={knn.k} neighbours per cell "
            f"(n_neighbors={graph_n_neighbors(graph.params, knn.k)}) but {what} needs k >= "
            f"{needed}: recompute it with n_neighbors >= {needed + 1} (e.g. "
            f"sc.pp.neighbors(adata, n_neighbors={needed + 1}, key_added=...)), or ask for "
            "fewer neighbours."
        )
        raise ValueError(msg)
    knn = knn.truncate(needed)
    if knn.metric == metric_in:
        return knn
    if (knn.metric, metric_in) not in _CONVERTIBLE:
        msg = (
            f"The kNN graph `neighbors_key={graph.key!r}` uses metric {knn.metric!r} but the "
            f"method uses metric_in={metric_in!r}: pass metric_in={knn.metric!r} or recompute "
            "the graph."
        )
        raise ValueError(msg)
    if metric_in == "sqeuclidean":
        return KNNGraph(knn.indices, knn.distances.square(), "sqeuclidean")
    return KNNGraph(knn.indices, torch.sqrt(knn.distances.clamp_min(0)), "euclidean")
