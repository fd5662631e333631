"""``pp.neighbors``: a kNN graph on the engine's backends, stored in scanpy's format."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._device import as_float_tensor, resolve_device
from .._random import resolve_seed, seed_argument
from ..adata import (
    Changes,
    Representation,
    check_str,
    choose_representation,
    commit,
    graph_keys,
    log,
    package_version,
    to_uns,
)
from ._graph_source import fallback_pca, graph_from_distances, graph_from_transformer

if TYPE_CHECKING:
    from anndata import AnnData

#: ``transformer`` names scanpy knows, and the search each one means here.
TRANSFORMER_BACKENDS = {"sklearn": "torch", "pynndescent": "auto"}


def _check_scanpy_options(knn: bool, method: str, metric_kwds: Mapping[str, Any]) -> None:
    if knn is not True:
        msg = (
            "`knn=False` (a dense graph over all pairs of cells, for scanpy's 'gauss' kernel) "
            "is not supported by tdr.pp.neighbors: use sc.pp.neighbors(adata, knn=False, "
            "method='gauss')."
        )
        raise ValueError(msg)
    if method != "umap":
        hint = (
            "pass device='cuda' for a GPU search" if method == "rapids" else "use sc.pp.neighbors"
        )
        msg = f"`method` must be 'umap' (UMAP's fuzzy simplicial set); got {method!r}: {hint}."
        raise ValueError(msg)
    if metric_kwds:
        msg = (
            "`metric_kwds` must be empty: the metrics here ('euclidean', 'sqeuclidean', "
            f"'cosine', 'manhattan') take no parameters; got {dict(metric_kwds)!r}."
        )
        raise ValueError(msg)


def neighbors(
    adata: AnnData,
    n_neighbors: int = 15,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    knn: bool = True,
    method: Literal["umap"] = "umap",
    transformer: Any = None,
    metric: Literal["euclidean", "sqeuclidean", "cosine", "manhattan"] = "euclidean",
    metric_kwds: Mapping[str, Any] = MappingProxyType({}),
    random_state: Any = 0,
    rng: Any = None,
    key_added: str | None = None,
    copy: bool = False,
    distances: Any = None,
    device: str = "auto",
    backend: str | None = "auto",
) -> AnnData | None:
    """Compute the k-nearest-neighbour graph of the cells, as ``sc.pp.neighbors`` does.

    The search runs on the engine's backends (torch, faiss, keops; on the GPU when one is
    available). The result is written in scanpy's format, so ``sc.tl.leiden``,
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
        ``'X'``, a key of ``adata.obsm``, or ``None``: ``X`` if it has at most 50 variables,
        else ``obsm['X_pca']``. Without ``X_pca`` the PCA is computed first with
        ``sc.pp.pca``'s defaults and written (``obsm['X_pca']``, ``varm['PCs']``,
        ``uns['pca']``), with a warning, as scanpy does.
    knn
        ``True`` only (scanpy's ``False`` builds a dense graph for its 'gauss' kernel).
    method
        ``'umap'`` only (scanpy's 'gauss' kernel is not offered).
    transformer
        ``None`` (the engine's search, ``backend``), ``'sklearn'`` (exact), ``'pynndescent'``
        (the engine's approximate search, as ``backend='auto'``), or an object with
        scikit-learn's ``KNeighborsTransformer`` contract, whose ``fit_transform`` output is
        used as scanpy uses it (its ``n_neighbors`` then replaces this call's, as in scanpy).
    metric
        Distance between cells.
    metric_kwds
        Must be empty (the metrics take no parameters).
    random_state, rng
        Seed (int, numpy ``Generator`` / ``RandomState``, ``None`` for a fresh one), recorded
        in the parameters; ``rng`` is scanpy 1.13's name (pass one of the two).
    key_added
        ``None`` writes ``uns['neighbors']``, ``obsp['distances']`` and
        ``obsp['connectivities']``; a str ``k`` writes ``uns[k]``, ``obsp[k + '_distances']``
        and ``obsp[k + '_connectivities']``.
    copy
        Return a new AnnData instead of writing into ``adata``.
    distances
        A precomputed ``(n_obs, n_obs)`` distance matrix (dense, or sparse with the
        neighbours of each cell stored), scanpy 1.12's argument: the ``n_neighbors - 1``
        nearest cells of each row are kept and no representation is read.
    device
        ``'auto'`` (CUDA when available), ``'cpu'`` or ``'cuda'``.
    backend
        kNN backend: ``'auto'``, ``'torch'``, ``'faiss'`` or ``'keops'``.

    Returns
    -------
    ``None`` if ``copy=False``, else a new AnnData. Sets ``adata.obsp['distances']``
    (CSR float32), ``adata.obsp['connectivities']`` (CSR float32) and
    ``adata.uns['neighbors']`` (``connectivities_key``, ``distances_key``, ``params``),
    with keys prefixed by ``key_added`` when given.
    """
    from ..affinity import UMAPAffinity
    from ..knn import knn as knn_search

    _check_scanpy_options(knn, method, metric_kwds)
    if transformer is not None and not isinstance(transformer, str):
        n_neighbors = int(transformer.get_params()["n_neighbors"])
    elif isinstance(transformer, str):
        if transformer not in TRANSFORMER_BACKENDS:
            msg = (
                f"`transformer` must be None, 'pynndescent', 'sklearn' or an object with "
                f"scikit-learn's KNeighborsTransformer contract; got {transformer!r}."
            )
            raise ValueError(msg)
        backend = TRANSFORMER_BACKENDS[transformer]
    # validates n_neighbors, metric and backend (the affinity owns those rules)
    affinity = UMAPAffinity(n_neighbors, metric=metric, backend=backend)
    check_str("key_added", key_added, optional=True)
    seed = resolve_seed(seed_argument(random_state, rng))
    dev = resolve_device(device)
    start = log.info("computing neighbors")
    changes = Changes()
    if distances is not None:
        graph = graph_from_distances(distances, adata.n_obs, n_neighbors, metric)
        rep_name, rep_pcs = None, None
    else:
        rep = _representation(adata, use_rep, n_pcs, changes)
        n = rep.data.shape[0]
        affinity.check_n_neighbors_fit(n, "cells")
        if transformer is not None and not isinstance(transformer, str):
            graph = graph_from_transformer(transformer, rep.data, n_neighbors, metric)
        else:
            x = as_float_tensor(rep.data, device=dev)
            graph = knn_search(x, affinity.required_k(n), backend=backend, metric=metric)
        rep_name, rep_pcs = rep.use_rep, rep.n_pcs
    connectivities = affinity.from_knn(graph).to_scipy()
    uns_key, dist_key, conn_key = graph_keys(key_added)
    params = {
        "n_neighbors": int(n_neighbors),
        "method": "umap",
        "random_state": seed,
        "metric": metric,
        "use_rep": rep_name,
        "n_pcs": rep_pcs,
        "backend": backend,
        "torchdr_sc_version": package_version(),
    }
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


def _representation(adata: AnnData, use_rep: str | None, n_pcs: int | None, changes: Changes):
    """scanpy's rule; without ``X_pca`` on many variables, the PCA scanpy would compute
    (added to ``changes``, so that it is written with the graph or not at all)."""
    needs_pca = (
        use_rep is None
        and n_pcs != 0
        and adata.n_vars > 50
        and "X_pca" not in adata.obsm
        and adata.X is not None
    )
    if not needs_pca:
        return choose_representation(adata, use_rep=use_rep, n_pcs=n_pcs)
    warnings.warn(
        f"adata.X has {adata.n_vars} variables and adata.obsm holds no 'X_pca': falling back "
        "to preprocessing with `sc.pp.pca` and default params, written to adata (pass "
        "use_rep='X' to search on X itself).",
        UserWarning,
        stacklevel=3,
    )
    x_pca = fallback_pca(adata, changes)
    if n_pcs is not None and n_pcs > x_pca.shape[1]:
        msg = f"`n_pcs={n_pcs}` is larger than the {x_pca.shape[1]} columns of the PCA."
        raise ValueError(msg)
    kept = x_pca[:, :n_pcs] if n_pcs else x_pca
    return Representation(np.ascontiguousarray(kept, dtype=np.float32), "X_pca", n_pcs or None)
