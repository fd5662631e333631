"""``tl.umap``: UMAP on the cells of an AnnData, written where ``sc.pl.umap`` reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._random import resolve_seed
from ..adata import Method, estimator_options, run_embedding
from ._docs import RAISES, common, doc_params, returns

if TYPE_CHECKING:
    import numpy as np
    from anndata import AnnData


@doc_params(common=common(), returns=returns("X_umap", "umap", "UMAP"), raises=RAISES)
def umap(
    adata: AnnData,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.5,
    spread: float = 1.0,
    n_components: int = 2,
    a: float | None = None,
    b: float | None = None,
    init: str | np.ndarray = "spectral",
    n_negatives: int = 5,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    neighbors_key: str | None = None,
    key_added: str | None = None,
    random_state: Any = 0,
    device: str = "auto",
    backend: str | None = "auto",
    cache: bool = True,
    copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """Embed the cells with UMAP (McInnes, Healy & Melville 2018).

    A drop-in for ``sc.pp.neighbors`` + ``sc.tl.umap``: the kNN graph, UMAP's fuzzy
    simplicial set and the optimisation run in PyTorch (on the GPU when available). The
    defaults are scanpy's (``min_dist=0.5``, ``n_neighbors=15``, spectral initialisation).
    ``sc.pl.umap(adata, color=...)`` plots the result.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    n_neighbors
        Size of the neighbourhood, counting the cell itself (as in scanpy).
    min_dist
        Minimum distance between embedded points (scanpy's default 0.5; umap-learn's 0.1).
    spread
        Scale of the embedded points; with ``min_dist`` it fixes ``a`` and ``b``.
    n_components
        Dimension of the embedding.
    a, b
        Parameters of the embedding kernel ``1 / (1 + a d^(2b))``, fitted from
        ``min_dist`` and ``spread`` unless given.
    init
        ``'spectral'``, ``'pca'``, ``'normal'``, a key of ``adata.obsm`` or an array
        ``(n_obs, n_components)``.
    n_negatives
        Negative samples per edge (umap-learn's ``negative_sample_rate``).
    {common}

    {returns}

    {raises}

    Examples
    --------
    >>> import scanpy as sc
    >>> import torchdr_sc as tdr
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> tdr.tl.umap(adata)
    >>> sc.pl.umap(adata, color="bulk_labels")  # doctest: +SKIP
    """
    from ..estimators import UMAP

    estimator = UMAP(
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        spread=spread,
        n_components=n_components,
        a=a,
        b=b,
        init=init,
        n_negatives=n_negatives,
        random_state=resolve_seed(random_state),
        device=device,
        backend=backend,
        **estimator_options(umap, UMAP, kwargs),
    )
    return run_embedding(
        adata,
        estimator,
        Method("umap", "UMAP"),
        key_added=key_added,
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=neighbors_key,
        copy=copy,
        cache=cache,
    )
