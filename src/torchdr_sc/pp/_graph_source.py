"""Where ``pp.neighbors``'s graph comes from besides the engine's search: a transformer
object, a precomputed distance matrix, and the PCA scanpy computes when there is none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from ..adata import Changes
from ..knn import KNNGraph

if TYPE_CHECKING:
    from anndata import AnnData


def fallback_pca(adata: AnnData, changes: Changes) -> np.ndarray:
    """``sc.pp.pca`` with its defaults on ``adata.X`` (its highly variable genes when
    ``var['highly_variable']`` is there), as scanpy's neighbours do without ``X_pca``.

    The results (``obsm['X_pca']``, ``varm['PCs']``, ``uns['pca']``) are added to
    ``changes`` rather than written, so that they land together with the graph.

    Returns
    -------
    numpy.ndarray
        ``X_pca``.
    """
    import anndata as ad
    import scanpy as sc

    x = adata.X
    if hasattr(x, "to_memory"):  # a backed matrix
        x = x.to_memory()
    var = adata.var[[c for c in ("highly_variable",) if c in adata.var]].copy()
    holder = ad.AnnData(X=x, var=var)
    sc.pp.pca(holder)
    changes.add("obsm", "X_pca", holder.obsm["X_pca"], "PCA of X (scanpy's defaults)")
    changes.add("varm", "PCs", holder.varm["PCs"], "principal axes")
    changes.add("uns", "pca", dict(holder.uns["pca"]), "PCA parameters and variances")
    return np.asarray(holder.obsm["X_pca"])


def _graph_from_sparse(matrix: sp.spmatrix, k: int, metric: str) -> KNNGraph:
    """The ``k`` nearest stored entries of each row (self excluded) of a sparse matrix."""
    graph = KNNGraph.from_scipy(matrix, metric=metric)
    if graph.k < k:
        msg = (
            f"some rows store only {graph.k} neighbours (self excluded) but n_neighbors="
            f"{k + 1} needs {k}: lower n_neighbors, or store more neighbours per row."
        )
        raise ValueError(msg)
    return graph.truncate(k)


def graph_from_distances(distances: Any, n_obs: int, n_neighbors: int, metric: str) -> KNNGraph:
    """The kNN graph of a precomputed ``(n_obs, n_obs)`` distance matrix.

    Dense: the ``n_neighbors - 1`` smallest off-diagonal entries of each row. Sparse: each
    row's stored entries are its candidate neighbours (zeros stored explicitly count as
    distance 0).

    Raises
    ------
    ValueError
        A matrix of another shape, with NaN, inf or negative distances, or too few
        neighbours per row.
    """
    shape = tuple(getattr(distances, "shape", ()))
    if shape != (n_obs, n_obs):
        msg = f"`distances` must have shape (n_obs, n_obs) = {(n_obs, n_obs)}; got {shape}."
        raise ValueError(msg)
    k = min(n_neighbors - 1, n_obs - 1)
    if sp.issparse(distances):
        return _graph_from_sparse(sp.csr_matrix(distances), k, metric)
    d = torch.as_tensor(np.asarray(distances, dtype=np.float32)).clone()
    bad = ~torch.isfinite(d) | (d < 0)
    if bool(bad.any()):
        rows = int(bad.any(1).sum())
        msg = f"`distances` holds NaN, inf or negative values in {rows} rows."
        raise ValueError(msg)
    d.fill_diagonal_(float("inf"))
    values, indices = torch.topk(d, k, dim=1, largest=False, sorted=True)
    return KNNGraph(indices, values, metric)


def graph_from_transformer(
    transformer: Any, data: np.ndarray, n_neighbors: int, metric: str
) -> KNNGraph:
    """The graph of an object with scikit-learn's ``KNeighborsTransformer`` contract, as
    scanpy reads it: ``fit_transform(data)`` gives each row's neighbours (the row itself
    may be among them, at distance 0), of which the ``n_neighbors - 1`` nearest others are
    kept."""
    matrix = transformer.fit_transform(data)
    if not sp.issparse(matrix):
        msg = (
            f"the transformer's fit_transform returned a {type(matrix).__name__}; a sparse "
            "distance matrix (scikit-learn's mode='distance') is needed."
        )
        raise TypeError(msg)
    return _graph_from_sparse(
        sp.csr_matrix(matrix), min(n_neighbors - 1, data.shape[0] - 1), metric
    )
