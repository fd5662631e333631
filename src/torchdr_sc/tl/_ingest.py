"""``tl.ingest``: new cells onto a reference's embeddings, with its labels (``sc.tl.ingest``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._random import resolve_seed
from .._validation import check_finite_rows, check_option, format_options
from ..adata import Changes, commit, in_memory_copy, log
from ..adata.reference import query_representation, read_reference

if TYPE_CHECKING:
    from anndata import AnnData

#: Embeddings ``ingest`` can place cells on: ``tl`` function -> estimator class name.
EMBEDDINGS = {"umap": "UMAP", "tsne": "TSNE", "infotsne": "InfoTSNE", "largevis": "LargeVis"}
#: Neighbours of the label vote when the reference has no kNN graph to take ``k`` from.
DEFAULT_VOTE_NEIGHBORS = 15


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_request(adata_ref: AnnData, obs: list[str], methods: list[str], labeling: str) -> None:
    check_option("labeling_method", labeling, ["knn"])
    for method in methods:
        if method == "tsnekhorn":
            msg = (
                "`embedding_method='tsnekhorn'` cannot take new cells: its doubly stochastic "
                "affinities couple every pair of cells. Embed the reference with tl.tsne."
            )
            raise ValueError(msg)
        check_option("embedding_method", method, ["pca", *EMBEDDINGS])
    missing = [col for col in obs if col not in adata_ref.obs]
    if missing:
        msg = (
            f"`obs={missing[0]!r}` is not a column of adata_ref.obs (columns: "
            f"{format_options(adata_ref.obs.columns)})."
        )
        raise ValueError(msg)


def _vote_neighbors(adata_ref: AnnData, neighbors_key: str | None) -> int:
    graph = adata_ref.uns.get(neighbors_key or "neighbors")
    value = graph.get("params", {}).get("n_neighbors") if hasattr(graph, "get") else None
    return DEFAULT_VOTE_NEIGHBORS if value is None else int(np.asarray(value).ravel()[0])


def _labels(ref_rep, query_rep, adata_ref: AnnData, cols: list[str], k: int, backend) -> dict:
    """Majority vote of the ``k`` nearest reference cells for every column of ``cols``."""
    import pandas as pd
    import torch

    from ..knn import knn as knn_search

    x = torch.as_tensor(ref_rep)
    k = min(k, x.shape[0])
    graph = knn_search(x, k, backend=backend, query=torch.as_tensor(query_rep))
    neighbours = graph.indices.cpu().numpy()
    out = {}
    for col in cols:
        values = adata_ref.obs[col].astype("category")
        codes = values.cat.codes.to_numpy()[neighbours]  # (m, k)
        n_cat = len(values.cat.categories)
        counts = np.zeros((codes.shape[0], n_cat + 1), dtype=np.int64)
        np.add.at(counts, (np.arange(codes.shape[0])[:, None], codes + 1), 1)  # -1 = NaN
        counts[:, 0] = 0
        winner = counts.argmax(axis=1) - 1
        out[col] = pd.Categorical.from_codes(winner, categories=values.cat.categories)
    return out


def _embed(
    adata: AnnData,
    adata_ref: AnnData,
    method: str,
    settings: dict[str, Any],
    reps: dict,
) -> tuple[str, np.ndarray]:
    """The query's coordinates on the reference's ``method`` embedding."""
    from .. import estimators, tl
    from ..estimators.transform import attach_reference

    cls = getattr(estimators, EMBEDDINGS[method])
    info = read_reference(adata_ref, method, getattr(tl, method), cls, settings["neighbors_key"])
    use_rep = settings["use_rep"] or info.use_rep
    n_pcs = settings["n_pcs"] if settings["use_rep"] else info.n_pcs
    if (use_rep, n_pcs) not in reps:
        reps[(use_rep, n_pcs)] = query_representation(adata, adata_ref, use_rep, n_pcs)
    ref_rep, query_rep, _ = reps[(use_rep, n_pcs)]
    params = {**info.estimator_params, **settings["estimator"]}
    est = cls(**params)
    attach_reference(est, ref_rep, np.asarray(adata_ref.obsm[info.obsm_key]))
    log.info(f"    placing {adata.n_obs} cells on adata_ref.obsm[{info.obsm_key!r}]")
    coords = est.transform(query_rep)
    return info.obsm_key, np.ascontiguousarray(coords, dtype=np.float32)


def ingest(
    adata: AnnData,
    adata_ref: AnnData,
    *,
    obs: str | Iterable[str] | None = None,
    embedding_method: str | Iterable[str] = ("umap", "pca"),
    labeling_method: str = "knn",
    neighbors_key: str | None = None,
    inplace: bool = True,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    random_state: Any = 0,
    device: str = "auto",
    backend: str | None = "auto",
) -> AnnData | None:
    """Place the cells of ``adata`` on the embeddings of ``adata_ref`` and transfer labels.

    A drop-in for ``sc.tl.ingest``: for each embedding of the reference, the new cells are
    placed by the method's own ``transform`` (the reference held fixed; see
    :meth:`torchdr_sc.estimators.Embedder.transform`), rebuilt from what the reference
    records: ``uns[key]['params']`` of ``tdr.tl`` (n_neighbors / perplexity, a, b, metric,
    representation), or, for ``sc.tl.umap`` results, ``a`` and ``b`` plus the kNN graph's
    ``n_neighbors``, metric and representation. Labels are transferred by a majority vote of
    the ``k`` nearest reference cells in the representation (``k`` = the reference graph's
    ``n_neighbors``, else 15).

    Parameters
    ----------
    adata
        The new cells (the query).
    adata_ref
        The reference, with its embeddings and the representation they came from.
    obs
        Column(s) of ``adata_ref.obs`` to transfer.
    embedding_method
        Embeddings to place the cells on: ``'umap'``, ``'tsne'``, ``'infotsne'``,
        ``'largevis'`` (their ``obsm['X_<method>']``), and ``'pca'`` (the query projected on
        ``adata_ref.varm['PCs']`` after centring by the reference's mean).
    labeling_method
        ``'knn'``.
    neighbors_key
        The reference's kNN graph (for ``sc.tl.umap`` results and the vote's ``k``).
    inplace
        Write into ``adata``; ``False`` returns a new AnnData.
    use_rep, n_pcs
        The representation to search neighbours in; ``None``: the one each embedding was
        made from (recorded), else scanpy's rule. ``'X'`` needs the reference's variables in
        the query; ``'X_pca'`` is projected from ``X``; another ``obsm`` key must exist in
        both objects in one space.
    random_state
        Seed of the transforms.
    device, backend
        Where the transforms and searches run, and the kNN backend.

    Returns
    -------
    ``None`` if ``inplace``, else a new AnnData, with ``obsm[<embedding key>]`` (float32,
    the reference's key), ``obsm['X_pca']`` for ``'pca'``, ``obs[col]`` (categorical, the
    reference's categories) and ``uns[col + '_colors']`` copied from the reference.

    Raises
    ------
    ValueError
        Before any computation, ``adata`` untouched: an embedding or ``obs`` column missing in
        the reference (the ones there are listed), a reference record that does not say how
        an embedding was made, variables that differ, NaN / inf in the query's
        representation, TSNEkhorn.
    """
    obs_cols, methods = _as_list(obs), _as_list(embedding_method)
    _check_request(adata_ref, obs_cols, methods, labeling_method)
    start = log.info(f"running ingest on {adata.n_obs} cells")
    settings = {
        "use_rep": use_rep,
        "n_pcs": n_pcs,
        "neighbors_key": neighbors_key,
        "estimator": {
            "random_state": resolve_seed(random_state),
            "device": device,
            "backend": backend,
        },
    }
    reps: dict = {}
    base = query_representation(adata, adata_ref, use_rep, n_pcs)
    reps[(use_rep, n_pcs)] = base
    check_finite_rows(base[1], f"the query's {base[2]!r}")
    changes = Changes()
    for method in methods:
        if method == "pca":
            pca = reps.get(("X_pca", None)) or query_representation(adata, adata_ref, "X_pca", None)
            changes.add("obsm", "X_pca", pca[1], "PCA of the query on the reference's axes")
            continue
        key, coords = _embed(adata, adata_ref, method, settings, reps)
        changes.add("obsm", key, coords, f"{method} coordinates on the reference")
    if obs_cols:
        k = _vote_neighbors(adata_ref, neighbors_key)
        labels = _labels(base[0], base[1], adata_ref, obs_cols, k, backend)
        for col, values in labels.items():
            changes.add("obs", col, values, f"labels from {k} reference neighbours")
            if f"{col}_colors" in adata_ref.uns:
                changes.add("uns", f"{col}_colors", np.array(adata_ref.uns[f"{col}_colors"]))
    target = adata if inplace else in_memory_copy(adata)
    commit(target, changes)
    log.info("    finished", time=start, deep=changes.summary())
    return None if inplace else target
