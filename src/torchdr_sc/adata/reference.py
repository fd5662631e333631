"""What a reference AnnData says about how its embeddings were made (for ``tl.ingest``).

An embedding written by ``tdr.tl.<method>`` records its parameters in
``uns[key]['params']`` (the ``tl`` function's scanpy names, the estimator's others, the
representation, the stored graph it read). One written by ``sc.tl.umap`` records only
``a`` and ``b``; the rest comes from the kNN graph it read (``uns['neighbors']``). This module
turns either record into the estimator that made the embedding, and the query cells into
the representation the reference was embedded from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .._validation import format_options
from .keys import output_keys
from .options import ScanpyNames
from .pca_projection import project_on_reference_pca
from .representation import choose_representation

if TYPE_CHECKING:
    from anndata import AnnData


@dataclass(frozen=True)
class ReferenceEmbedding:
    """An embedding of the reference and how it was made.

    Attributes
    ----------
    method
        ``'umap'``, ``'tsne'``, ``'infotsne'``, ...
    obsm_key
        Where the coordinates are, in the reference and in the query.
    estimator_params
        The estimator's parameters (TorchDR's names) of the run that made it.
    use_rep, n_pcs
        The representation it was computed on.
    made_by
        ``'torchdr-sc'`` or ``'scanpy'``.
    """

    method: str
    obsm_key: str
    estimator_params: dict[str, Any]
    use_rep: str | None
    n_pcs: int | None
    made_by: str


def _scalar(value: Any) -> Any:
    array = np.asarray(value)
    return array.ravel()[0].item() if array.size == 1 and array.ndim <= 1 else value


def _ours(params: dict[str, Any], names: ScanpyNames, valid: set[str]) -> dict[str, Any]:
    """Estimator parameters from a ``tdr.tl`` record (scanpy names converted back)."""
    plain = {k: _scalar(v) for k, v in params.items()}
    scanpy = {k: plain.pop(k) for k in list(plain) if k in names.to_estimator}
    out = {k: v for k, v in plain.items() if k in valid}
    out.update({k: v for k, v in names.estimator_params(scanpy).items() if k in valid})
    if isinstance(out.get("init"), str):
        out["init"] = "pca"  # the start of the reference run does not matter for new cells
    return out


def _scanpy_umap(adata_ref: AnnData, params: dict[str, Any], neighbors_key: str | None):
    """Estimator parameters and representation of an ``sc.tl.umap`` result."""
    key = neighbors_key or "neighbors"
    graph = adata_ref.uns.get(key)
    if not hasattr(graph, "get"):
        msg = (
            f"adata_ref.uns['umap'] was written by scanpy and names no kNN graph, and "
            f"adata_ref.uns[{key!r}] is missing: pass neighbors_key= the graph it was "
            "computed from."
        )
        raise ValueError(msg)
    g = {k: _scalar(v) for k, v in dict(graph.get("params", {})).items()}
    est = {
        "n_neighbors": int(g.get("n_neighbors", 15)),
        "a": float(_scalar(params["a"])),
        "b": float(_scalar(params["b"])),
        "init": "pca",
    }
    metric = str(g.get("metric", "euclidean"))
    if metric != "euclidean":
        est["metric_in"] = metric
    n_pcs = g.get("n_pcs")
    return est, g.get("use_rep"), None if n_pcs is None else int(n_pcs)


def read_reference(
    adata_ref: AnnData,
    method: str,
    tl_function: Callable[..., Any],
    estimator_cls: type,
    neighbors_key: str | None,
) -> ReferenceEmbedding:
    """How ``adata_ref``'s ``method`` embedding was made.

    Raises
    ------
    ValueError
        No such embedding in ``adata_ref`` (the ones there are listed), or a record that
        does not say how it was made.
    """
    obsm_key, uns_key = output_keys(method, None)
    if obsm_key not in adata_ref.obsm:
        found = format_options(adata_ref.obsm.keys()) or "none"
        msg = (
            f"adata_ref has no {method} embedding: adata_ref.obsm[{obsm_key!r}] is missing "
            f"(obsm holds {found}); run tdr.tl.{method}(adata_ref) first."
        )
        raise ValueError(msg)
    params = dict(adata_ref.uns.get(uns_key, {}).get("params", {}))
    names = getattr(tl_function, "scanpy_names", None) or ScanpyNames()
    valid = set(estimator_cls().get_params())
    if "torchdr_sc_version" in params:
        use_rep, n_pcs = params.get("use_rep"), params.get("n_pcs")
        est = _ours(params, names, valid)
        return ReferenceEmbedding(
            method,
            obsm_key,
            est,
            None if use_rep is None else str(use_rep),
            None if n_pcs is None else int(_scalar(n_pcs)),
            "torchdr-sc",
        )
    if method == "umap" and {"a", "b"} <= set(params):
        est, use_rep, n_pcs = _scanpy_umap(adata_ref, params, neighbors_key)
        return ReferenceEmbedding(method, obsm_key, est, use_rep, n_pcs, "scanpy")
    msg = (
        f"adata_ref.uns[{uns_key!r}]['params'] does not say how adata_ref.obsm[{obsm_key!r}] "
        f"was made (parameters found: {format_options(params) or 'none'}): recompute it "
        f"with tdr.tl.{method}(adata_ref), or with sc.tl.umap for 'umap'."
    )
    raise ValueError(msg)


def _dense(x: Any) -> np.ndarray:
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_variables(adata: AnnData, adata_ref: AnnData) -> None:
    missing = adata_ref.var_names.difference(adata.var_names)
    if len(missing):
        msg = (
            f"{len(missing)} of the reference's {adata_ref.n_vars} variables are not in the "
            f"query's var_names (e.g. {list(missing[:3])}): the representation is built "
            "from X, so query and reference need the same variables."
        )
        raise ValueError(msg)


def _aligned_x(adata: AnnData, adata_ref: AnnData) -> np.ndarray:
    """The query's ``X`` with the reference's variables, in the reference's order."""
    _check_variables(adata, adata_ref)
    if adata.var_names.equals(adata_ref.var_names):
        return _dense(adata.X)
    return _dense(adata[:, adata_ref.var_names].X)


def query_representation(
    adata: AnnData, adata_ref: AnnData, use_rep: str | None, n_pcs: int | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """The reference's representation and the query's in the same space.

    ``'X'``: both ``X`` on the reference's variables. ``'X_pca'`` (with ``varm['PCs']``): the
    query projected on the reference's axes as the reference's PCA computed them (its genes,
    layer and centring, by the reference's mean; sparse data stay sparse:
    :func:`~torchdr_sc.adata.pca_projection.project_on_reference_pca`).
    Any other ``obsm`` key: taken from both objects as it is (an integration that placed
    both in one space, e.g. scVI).

    Returns
    -------
    ``(reference, query, use_rep)``.

    Raises
    ------
    ValueError
        A representation missing from either object, or variables that differ.
    """
    ref = choose_representation(adata_ref, use_rep=use_rep, n_pcs=n_pcs)
    columns = ref.data.shape[1]
    if ref.use_rep == "X":
        return ref.data, _aligned_x(adata, adata_ref), "X"
    if ref.use_rep == "X_pca" and "PCs" in adata_ref.varm:
        _check_variables(adata, adata_ref)
        return ref.data, project_on_reference_pca(adata, adata_ref, columns), "X_pca"
    if ref.use_rep not in adata.obsm:
        found = format_options(adata.obsm.keys()) or "none"
        msg = (
            f"The reference was embedded from {ref.use_rep!r}, which the query lacks "
            f"(adata.obsm holds {found}): compute it for the query in the reference's space."
        )
        raise ValueError(msg)
    query = _dense(adata.obsm[ref.use_rep])[:, :columns]
    return ref.data, query, ref.use_rep
