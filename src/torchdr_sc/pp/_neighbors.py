"""``pp.neighbors``: a kNN graph on the engine's backends, stored in scanpy's format."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .._device import as_float_tensor, resolve_device
from .._random import resolve_seed
from ..adata import (
    Changes,
    check_str,
    choose_representation,
    commit,
    graph_keys,
    log,
    package_version,
    to_uns,
)

if TYPE_CHECKING:
    from anndata import AnnData


def neighbors(
    adata: AnnData,
    *,
    n_neighbors: int = 15,
    n_pcs: int | None = None,
    use_rep: str | None = None,
    metric: Literal["euclidean", "sqeuclidean", "cosine", "manhattan"] = "euclidean",
    key_added: str | None = None,
    random_state: Any = 0,
    device: str = "auto",
    backend: str | None = "auto",
    copy: bool = False,
) -> AnnData | None:
    """Compute the k-nearest-neighbour graph of the cells, as ``sc.pp.neighbors`` does.

    The search runs on the engine's exact backends (torch, faiss, keops; on the GPU when
    one is available). The result is written in scanpy's format, so ``sc.tl.leiden``,
    ``sc.tl.umap`` and ``tdr.tl.*(neighbors_key=...)`` use it unchanged. As in scanpy,
    ``n_neighbors`` counts the cell itself: every row of the distances holds
    ``n_neighbors - 1`` entries. The connectivities are UMAP's fuzzy simplicial set
    (``method='umap'`` in scanpy).

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    n_neighbors
        Size of the neighbourhood, counting the cell itself.
    n_pcs
        Use this many leading columns of the representation.
    use_rep
        ``'X'``, a key of ``adata.obsm``, or ``None``: ``X`` if it has at most 50
        variables, else ``obsm['X_pca']`` (PCA is never computed silently).
    metric
        Distance between cells.
    key_added
        ``None`` writes ``uns['neighbors']``, ``obsp['distances']`` and
        ``obsp['connectivities']``; a str ``k`` writes ``uns[k]``, ``obsp[k + '_distances']``
        and ``obsp[k + '_connectivities']``.
    random_state
        Recorded in the parameters (the search is exact and does not use it).
    device
        ``'auto'`` (CUDA when available), ``'cpu'`` or ``'cuda'``.
    backend
        kNN backend: ``'auto'``, ``'torch'``, ``'faiss'`` or ``'keops'``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` if ``copy=False``, else a new AnnData. Sets ``adata.obsp['distances']``
    (CSR float32), ``adata.obsp['connectivities']`` (CSR float32) and
    ``adata.uns['neighbors']`` (``connectivities_key``, ``distances_key``, ``params``),
    with keys prefixed by ``key_added`` when given.
    """
    from ..affinity import UMAPAffinity
    from ..knn import knn as knn_search

    # validates n_neighbors, metric and backend (the affinity owns those rules)
    affinity = UMAPAffinity(n_neighbors, metric=metric, backend=backend)
    check_str("key_added", key_added, optional=True)
    seed = resolve_seed(random_state)
    dev = resolve_device(device)
    start = log.info("computing neighbors")
    rep = choose_representation(adata, use_rep=use_rep, n_pcs=n_pcs)
    n = rep.data.shape[0]
    affinity.check_n_neighbors_fit(n, "cells")
    x = as_float_tensor(rep.data, device=dev)
    graph = knn_search(x, affinity.required_k(n), backend=backend, metric=metric)
    connectivities = affinity.from_knn(graph).to_scipy()
    uns_key, dist_key, conn_key = graph_keys(key_added)
    params = {
        "n_neighbors": int(n_neighbors),
        "method": "umap",
        "random_state": seed,
        "metric": metric,
        "use_rep": rep.use_rep,
        "n_pcs": rep.n_pcs,
        "backend": backend,
        "torchdr_sc_version": package_version(),
    }
    changes = Changes()
    changes.add("obsp", dist_key, graph.to_scipy(), "distances for each pair of neighbors")
    changes.add("obsp", conn_key, connectivities, "weighted adjacency matrix")
    changes.add(
        "uns",
        uns_key,
        {"connectivities_key": conn_key, "distances_key": dist_key, "params": to_uns(params)},
        "kNN graph parameters",
    )
    target = (adata.to_memory() if adata.isbacked else adata.copy()) if copy else adata
    commit(target, changes)
    log.info("    finished", time=start, deep=changes.summary())
    return target if copy else None
