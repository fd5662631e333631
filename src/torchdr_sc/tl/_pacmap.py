"""``tl.pacmap``: PaCMAP on the cells of an AnnData, written the way ``sc.tl.tsne`` is.

scanpy has no PaCMAP; the function takes ``sc.tl.tsne``'s shape (``n_pcs`` as the second
positional parameter, ``use_rep``, ``metric``, ``random_state`` / ``rng``, ``key_added``,
``copy``) and the pacmap package's names for PaCMAP's own parameters (``n_neighbors``,
``MN_ratio``, ``FP_ratio``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._random import resolve_seed, seed_argument
from ..adata import Method, estimator_options, run_embedding
from ._docs import RAISES, common, doc_params, returns
from ._names import PACMAP_NAMES

if TYPE_CHECKING:
    from anndata import AnnData

_PACMAP_DOC = """\
n_neighbors
    Near pairs per cell (the cell itself not counted), chosen among its ``n_neighbors + 50``
    nearest neighbours by a locally scaled distance (the pacmap package's default, 10).
MN_ratio
    Mid-near pairs per near pair (0.5): they lay out the global structure early on.
FP_ratio
    Further pairs per near pair (2.0): random cells that repel.
metric
    Distance between cells in the input space: ``'euclidean'`` (``'sqeuclidean'`` gives
    the same pairs), ``'cosine'`` or ``'manhattan'``.
n_components
    Dimension of the embedding.
random_state, rng
    Seed (int) or a numpy ``RandomState`` / ``Generator`` to draw one from; ``None`` draws
    a fresh seed. The int seed is recorded in ``uns[key]['params']['random_state']``.
    ``rng`` is scanpy 1.13's name for it (pass one of the two).
key_added
    Name of the result: ``adata.obsm[key_added]`` and ``adata.uns[key_added]``.
copy
    Return a new AnnData instead of writing into ``adata``.
neighbors_key
    Choose the near pairs from the kNN graph stored under this key by ``sc.pp.neighbors``
    or ``tdr.pp.neighbors`` (it needs ``n_neighbors + 50`` neighbours per cell, see Raises)
    instead of searching. ``None`` (default): search afresh (scanpy's default graph of 15
    neighbours is too small)."""


@doc_params(
    pacmap=_PACMAP_DOC,
    common=common(),
    raises=RAISES,
    returns=returns("X_pacmap", "pacmap", "PaCMAP"),
)
def pacmap(
    adata: AnnData,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    n_neighbors: int = 10,
    MN_ratio: float = 0.5,
    FP_ratio: float = 2.0,
    metric: str = "euclidean",
    n_components: int = 2,
    random_state: Any = 0,
    rng: Any = None,
    key_added: str | None = None,
    copy: bool = False,
    neighbors_key: str | None = None,
    n_jobs: int | None = None,
    device: str = "auto",
    backend: str | None = "auto",
    cache: bool = False,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> AnnData | None:
    """Embed the cells with PaCMAP (Wang, Huang, Rudin & Shaposhnik, JMLR 2021).

    Near pairs (a cell's neighbours by a locally scaled distance), mid-near pairs and
    random further pairs, weighted on the paper's three-phase schedule (global layout
    first, then local structure), optimised by Adam from the PCA layout: 450 iterations by
    default (``max_iter``, ``lr`` and other estimator parameters pass through ``**kwargs``,
    see :class:`torchdr_sc.PACMAP`). Plot with ``sc.pl.embedding(adata, basis='pacmap')``.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {pacmap}
    {common}

    {returns}

    {raises}

    Examples
    --------
    >>> import scanpy as sc
    >>> import torchdr_sc as tdr
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> tdr.tl.pacmap(adata)
    >>> sc.pl.embedding(adata, basis="pacmap", color="bulk_labels")  # doctest: +SKIP
    """
    from ..estimators import PACMAP

    options = estimator_options(pacmap, PACMAP, kwargs, PACMAP_NAMES)
    estimator = PACMAP(
        n_neighbors=n_neighbors,
        MN_ratio=MN_ratio,
        FP_ratio=FP_ratio,
        n_components=n_components,
        random_state=resolve_seed(seed_argument(random_state, rng)),
        device=device,
        backend=backend,
        **PACMAP_NAMES.estimator_params({"metric": metric}),
        **options,
    )
    return run_embedding(
        adata,
        estimator,
        Method("pacmap", "PaCMAP", PACMAP_NAMES),
        key_added=key_added,
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=neighbors_key,
        copy=copy,
        cache=cache,
        call_params={"n_jobs": n_jobs},
        n_jobs=n_jobs,
        progress_bar=progress_bar,
    )


pacmap.scanpy_names = PACMAP_NAMES  # type: ignore[attr-defined]
