"""A stored kNN graph that no longer fits its object, and what a ``tl`` call does about it.

Subsetting an AnnData (``adata[adata.obs.cell_type != 'B']``, ``pbmc[:100].copy()``) keeps
the rows and columns of ``obsp['distances']`` of the cells that remain: a cell whose
neighbours were cut away keeps fewer than the ``n_neighbors - 1`` the graph records, possibly
none. scanpy's ``tl.umap`` embeds such a graph as it is; a method that needs ``k``
neighbours for every cell cannot. So, by default, the ``tl`` functions search the neighbours
afresh with the graph's own recorded parameters (``n_neighbors``, ``metric``, ``use_rep`` /
``n_pcs``), exactly as ``pp.neighbors`` would on this object, warn once saying why, and record
it in ``uns[key]['params']['neighbors_recomputed']``; the stored graph is left as it is.
``tl.umap(recompute_neighbors=False)`` uses the stored graph anyway, as scanpy does: the stored
connectivities are the input affinity, and a cell without neighbours is only repelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .._device import as_float_tensor
from ..knn import KNNGraph
from .representation import Representation, fingerprint
from .stored_graph import StoredGraph, graph_keys, graph_n_neighbors

if TYPE_CHECKING:
    from anndata import AnnData

    from ..affinity import SparseAffinity


def _entry_keys(adata: AnnData, key: str) -> tuple[str, str]:
    entry = adata.uns[key]
    _, dist_default, conn_default = graph_keys(key)
    if key == "neighbors":
        return dist_default, conn_default
    return (
        str(entry.get("distances_key", dist_default)),
        str(entry.get("connectivities_key", conn_default)),
    )


def stale_reason(adata: AnnData, key: str) -> str | None:
    """Why the graph ``uns[key]`` does not fit ``adata`` (cells lost neighbours), or None.

    A graph fits when every cell keeps the ``n_neighbors - 1`` neighbours it records (or all
    other cells, on fewer cells). Missing or malformed graphs are left to
    :func:`~torchdr_sc.adata.stored_graph.read_graph`, whose messages say what is wrong.
    """
    entry = adata.uns.get(key)
    if not hasattr(entry, "get"):
        return None
    dist_key, _ = _entry_keys(adata, key)
    if dist_key not in adata.obsp:
        return None
    matrix = sp.csr_matrix(adata.obsp[dist_key])
    n = adata.n_obs
    if matrix.shape != (n, n) or n < 2:
        return None
    rows = np.repeat(np.arange(n), np.diff(matrix.indptr))
    off_diagonal = rows != matrix.indices
    counts = np.bincount(rows[off_diagonal], minlength=n)
    params = dict(entry.get("params", {}))
    expected = min(graph_n_neighbors(params, int(counts.max())) - 1, n - 1)
    short = counts < expected
    if not short.any():
        return None
    empty = int((counts == 0).sum())
    none = f", {empty} with none" if empty else ""
    return (
        f"{int(short.sum())} of its {n} cells keep fewer than the {expected} neighbours it "
        f"records (down to {int(counts.min())}{none}): the object was probably subset after "
        "the graph was computed"
    )


def params_only(adata: AnnData, key: str) -> StoredGraph:
    """The graph's record without its matrices (for choosing its representation)."""
    dist_key, _ = _entry_keys(adata, key)
    return StoredGraph(None, key, dist_key, dict(adata.uns[key].get("params", {})), "")  # type: ignore[arg-type]


def search_like(stale: StoredGraph, rep: Representation, device: Any) -> StoredGraph:
    """The graph ``pp.neighbors`` would compute on ``rep`` with ``stale``'s recorded
    parameters, as it would be read back from ``obsp`` (so that the embedding equals the one
    of a fresh ``pp.neighbors`` followed by the same call).

    Raises
    ------
    ValueError
        A recorded metric the search does not offer, or too few cells.
    """
    from .._device import resolve_device
    from ..affinity import UMAPAffinity
    from ..knn import knn as knn_search

    params = stale.params
    metric = str(params.get("metric", "euclidean"))
    backend = params.get("backend")
    backend = "auto" if backend is None else str(backend)
    n_neighbors = graph_n_neighbors(params, 14)
    affinity = UMAPAffinity(n_neighbors, metric=metric, backend=backend)
    n = rep.data.shape[0]
    affinity.check_n_neighbors_fit(n, "cells")
    x = as_float_tensor(rep.data, device=resolve_device(device))
    matrix = knn_search(x, affinity.required_k(n), backend=backend, metric=metric).to_scipy()
    knn = KNNGraph.from_scipy(matrix, metric=metric)
    return StoredGraph(knn, stale.key, "(searched afresh)", params, fingerprint(matrix))


def stored_connectivities(adata: AnnData, key: str) -> SparseAffinity:
    """The graph's connectivities as an input affinity (scanpy's ``tl.umap`` reads these)."""
    from ..affinity import SparseAffinity

    _, conn_key = _entry_keys(adata, key)
    if conn_key not in adata.obsp:
        msg = (
            f"adata.uns[{key!r}] names the connectivities adata.obsp[{conn_key!r}], which is "
            "missing: pass recompute_neighbors=None (the default) to search afresh."
        )
        raise ValueError(msg)
    matrix = sp.csr_matrix(adata.obsp[conn_key], dtype=np.float32)
    matrix.setdiag(0)
    matrix.eliminate_zeros()
    return SparseAffinity.from_scipy(matrix)
