"""New cells on a reference's principal axes, as the reference's ``pp.pca`` computed them.

``sc.pp.pca`` records in ``uns['pca']['params']`` whether it centred the data
(``zero_center``), which genes it used (``mask_var``, or ``use_highly_variable`` in older
versions) and the layer it read (``layer``); genes left out get zero rows in ``varm['PCs']``.
The query is projected the same way: on the same genes only (values of other genes, even NaN,
never enter), from the same layer, centred by the *reference's* mean when the reference was
centred (scanpy's own ``ingest`` centres by the query's mean) and not at all otherwise.

Sparse matrices stay sparse: the reference's mean is a column sum, and the query's projection
is ``X[:, genes] @ axes - mean @ axes``, so neither matrix is densified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData


def _params(adata_ref: AnnData) -> dict[str, Any]:
    pca = adata_ref.uns.get("pca")
    params = pca.get("params") if hasattr(pca, "get") else None
    return dict(params) if hasattr(params, "items") else {}


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    return bool(np.asarray(value).ravel()[0])


def pca_genes(adata_ref: AnnData, axes: np.ndarray) -> np.ndarray:
    """Boolean mask of the genes the reference's PCA used.

    From ``mask_var`` (a ``var`` column name or a boolean array), else
    ``use_highly_variable`` (``var['highly_variable']``), else the genes whose rows of
    ``varm['PCs']`` are finite and not all zero.

    Parameters
    ----------
    adata_ref : AnnData
        The reference.
    axes : numpy.ndarray of shape (n_vars, n_comps)
        Its principal axes.

    Returns
    -------
    numpy.ndarray of bool, shape (n_vars,)
    """
    params = _params(adata_ref)
    mask = params.get("mask_var")
    if isinstance(mask, str | np.str_) and str(mask) in adata_ref.var:
        return adata_ref.var[str(mask)].to_numpy(dtype=bool)
    if mask is not None and np.asarray(mask).dtype == bool and len(mask) == adata_ref.n_vars:
        return np.asarray(mask, dtype=bool)
    if _flag(params.get("use_highly_variable"), False) and "highly_variable" in adata_ref.var:
        return adata_ref.var["highly_variable"].to_numpy(dtype=bool)
    return np.isfinite(axes).all(axis=1) & (axes != 0).any(axis=1)


def _matrix(adata: AnnData, layer: str | None):
    return adata.X if layer is None else adata.layers[layer]


def column_mean(matrix: Any, genes: np.ndarray) -> np.ndarray:
    """Float64 mean of the columns ``genes`` of a dense or sparse matrix (not densified)."""
    if sp.issparse(matrix):
        sums = np.asarray(matrix.sum(axis=0, dtype=np.float64)).ravel()
        return sums[genes] / matrix.shape[0]
    return np.asarray(matrix)[:, genes].mean(axis=0, dtype=np.float64)


def project_on_reference_pca(adata: AnnData, adata_ref: AnnData, n_comps: int) -> np.ndarray:
    """The query's coordinates on the reference's first ``n_comps`` principal axes.

    Parameters
    ----------
    adata : AnnData
        The query, with the reference's variables (any order).
    adata_ref : AnnData
        The reference, with ``varm['PCs']``.
    n_comps : int
        Axes used.

    Returns
    -------
    numpy.ndarray of shape (n_query, n_comps), float32

    Raises
    ------
    ValueError
        When the PCA read a layer the query lacks.
    """
    params = _params(adata_ref)
    axes = np.asarray(adata_ref.varm["PCs"], dtype=np.float64)[:, :n_comps]
    genes = pca_genes(adata_ref, axes)
    layer = params.get("layer")
    layer = None if layer is None else str(layer)
    if layer is not None and layer not in adata.layers:
        msg = (
            f"The reference's PCA was computed on adata_ref.layers[{layer!r}], which the query "
            "lacks: add that layer to the query."
        )
        raise ValueError(msg)
    query = adata if adata.var_names.equals(adata_ref.var_names) else adata[:, adata_ref.var_names]
    x = _matrix(query, layer)
    x = x[:, genes] if sp.issparse(x) else np.asarray(x)[:, genes]
    coords = np.asarray(x @ axes[genes], dtype=np.float64)
    if _flag(params.get("zero_center"), True):
        coords -= column_mean(_matrix(adata_ref, layer), genes) @ axes[genes]
    return np.ascontiguousarray(coords, dtype=np.float32)
