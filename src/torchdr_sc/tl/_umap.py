"""``tl.umap``: UMAP on the cells of an AnnData, with ``sc.tl.umap``'s parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .._random import resolve_seed, seed_argument
from .._validation import check_option
from ..adata import Method, choose_graph, estimator_options, run_embedding
from ._docs import RAISES, common, doc_params, returns
from ._names import UMAP_NAMES

if TYPE_CHECKING:
    import numpy as np
    from anndata import AnnData

#: ``n_neighbors`` when no stored graph gives it (scanpy's ``pp.neighbors`` default).
DEFAULT_N_NEIGHBORS = 15


def _check_method(method: str, options: dict[str, Any]) -> None:
    check_option("method", method, ["umap", "densmap", "rapids"])
    if method == "densmap" and options.get("densmap") is False:
        msg = "method='densmap' with densmap=False: pass one of the two (method='umap' for UMAP)."
        raise ValueError(msg)
    if method == "rapids":
        msg = (
            "`method='rapids'` (cuML) is not needed: tdr.tl.umap runs on the GPU itself; "
            "pass method='umap' and device='cuda'."
        )
        raise ValueError(msg)


@doc_params(common=common(), returns=returns("X_umap", "umap", "UMAP"), raises=RAISES)
def umap(
    adata: AnnData,
    *,
    min_dist: float = 0.5,
    spread: float = 1.0,
    n_components: int = 2,
    maxiter: int | None = None,
    alpha: float = 1.0,
    gamma: float = 1.0,
    negative_sample_rate: int = 5,
    init_pos: str | np.ndarray | None = "spectral",
    random_state: Any = 0,
    rng: Any = None,
    a: float | None = None,
    b: float | None = None,
    method: Literal["umap", "densmap", "rapids"] = "umap",
    key_added: str | None = None,
    neighbors_key: str | None = None,
    copy: bool = False,
    n_neighbors: int | None = None,
    recompute_neighbors: bool | None = None,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    n_jobs: int | None = None,
    device: str = "auto",
    backend: str | None = "auto",
    cache: bool = False,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> AnnData | None:
    """Embed the cells with UMAP (McInnes, Healy & Melville 2018).

    A drop-in for ``sc.tl.umap``: the same parameters with the same names, meanings and
    defaults, and the same keys written, so ``sc.pl.umap(adata, color=...)`` plots the
    result. Like scanpy, it uses the kNN graph of ``sc.pp.neighbors`` /
    ``tdr.pp.neighbors`` when ``adata.uns['neighbors']`` holds one (no new search; logged
    and recorded in ``uns['umap']['params']['neighbors_key']``); without a graph it searches
    the ``n_neighbors`` nearest neighbours itself (so ``sc.pp.neighbors`` is optional).
    UMAP's fuzzy simplicial set and the optimisation run in PyTorch (on the GPU when
    available).

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    min_dist
        Minimum distance between embedded points (scanpy's default 0.5; umap-learn's 0.1).
    spread
        Scale of the embedded points; with ``min_dist`` it fixes ``a`` and ``b``.
    n_components
        Dimension of the embedding.
    maxiter
        Number of epochs; ``None``: 500 up to 10,000 cells, else 200 (scanpy's rule).
    alpha
        Initial learning rate of the optimisation (decays linearly to 0).
    gamma
        Weight of the negative samples (the repulsion) in the loss.
    negative_sample_rate
        Negative samples per positive edge sample.
    init_pos
        ``'spectral'`` (``None`` is the same), ``'random'``, ``'pca'``, ``'paga'`` (each cell
        at its group's position in ``uns['paga']['pos']``, written by ``sc.pl.paga``), a key
        of ``adata.obsm``, or an array ``(n_obs, n_components)``.
    random_state, rng
        Seed (int) or a numpy ``RandomState`` / ``Generator`` to draw one from; ``None`` draws
        a fresh seed. The int seed is recorded in ``uns[key]['params']['random_state']``.
        ``rng`` is scanpy 1.13's name for it (pass one of the two).
    a, b
        Parameters of the embedding kernel ``1 / (1 + a d^(2b))``, fitted from
        ``min_dist`` and ``spread`` unless given.
    method
        ``'umap'``, or ``'densmap'``: UMAP with densMAP's density-preservation term
        (Narayan, Berger & Cho 2021; the same as ``densmap=True``; ``dens_lambda``,
        ``dens_frac``, ``dens_var_shift`` as in umap-learn can be passed too, and
        ``output_dens=True`` writes every cell's log local radius in the data and in the
        embedding to ``obs['<key>_rad_orig']`` and ``obs['<key>_rad_emb']``). (scanpy's
        ``'rapids'`` is refused with a hint: pass ``device='cuda'``.)
    key_added
        Name of the result: ``adata.obsm[key_added]`` and ``adata.uns[key_added]``.
    neighbors_key
        The stored kNN graph to use, as in scanpy. ``None`` (default): the graph under
        ``'neighbors'`` when there is one, else a fresh search. A graph that cannot serve
        the call (fewer neighbours than ``n_neighbors``, another representation than
        ``use_rep`` / ``n_pcs``, a metric the method cannot use) is an error that says how
        to fix it, never a silent new search. A graph that no longer fits the object (cells
        that lost neighbours to a subset) is searched afresh, see ``recompute_neighbors``.
    copy
        Return a new AnnData instead of writing into ``adata``.
    n_neighbors
        Size of the neighbourhood, counting the cell itself (as in scanpy). ``None``: the
        stored graph's, else 15. Smaller than the stored graph's: the graph is truncated.
    recompute_neighbors
        ``True``: search the neighbours afresh even when ``adata.uns['neighbors']`` holds a
        graph. ``None`` (default): use the stored graph, unless it no longer fits the object
        (after ``adata[mask]`` or ``adata[:100]``, cells keep fewer neighbours than the graph
        records): then search afresh with the graph's recorded ``n_neighbors``, ``metric``
        and representation, as ``pp.neighbors`` would, with a warning, recorded in
        ``uns['umap']['params']['neighbors_recomputed']``. ``False``: use the stored graph
        even then, as ``sc.tl.umap`` does (its connectivities are the input affinity; a cell
        left without neighbours is only repelled).
    {common}

    {returns}

    {raises}

    Examples
    --------
    >>> import scanpy as sc
    >>> import torchdr_sc as tdr
    >>> adata = sc.datasets.pbmc68k_reduced()  # it holds sc.pp.neighbors' graph
    >>> tdr.tl.umap(adata)
    >>> sc.pl.umap(adata, color="bulk_labels")  # doctest: +SKIP
    """
    from ..estimators import UMAP

    options = estimator_options(umap, UMAP, kwargs, UMAP_NAMES)
    _check_method(method, options)
    if method == "densmap":
        options["densmap"] = True
    graph = choose_graph(
        adata, neighbors_key, default_key="neighbors", recompute=recompute_neighbors is True
    )
    if n_neighbors is None:
        n_neighbors = graph.n_neighbors or DEFAULT_N_NEIGHBORS
    scanpy_params = {
        "maxiter": maxiter,
        "alpha": alpha,
        "gamma": gamma,
        "negative_sample_rate": negative_sample_rate,
        "init_pos": "spectral" if init_pos is None else init_pos,
    }
    if graph.metric is not None and graph.metric != "euclidean":
        options.setdefault("metric_in", graph.metric)
    estimator = UMAP(
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        spread=spread,
        n_components=n_components,
        a=a,
        b=b,
        random_state=resolve_seed(seed_argument(random_state, rng)),
        device=device,
        backend=backend,
        **UMAP_NAMES.estimator_params(scanpy_params),
        **options,
    )
    return run_embedding(
        adata,
        estimator,
        Method("umap", "UMAP", UMAP_NAMES),
        key_added=key_added,
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=graph.key,
        copy=copy,
        cache=cache,
        graph_by_default=graph.by_default,
        call_params={"n_jobs": n_jobs},
        n_jobs=n_jobs,
        progress_bar=progress_bar,
        stale_graph="use" if recompute_neighbors is False else "recompute",
    )


umap.scanpy_names = UMAP_NAMES  # type: ignore[attr-defined]
