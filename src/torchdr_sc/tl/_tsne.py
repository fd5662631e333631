"""``tl.tsne``, ``tl.infotsne``, ``tl.largevis`` and ``tl.tsnekhorn``: the t-SNE family.

All four take ``sc.tl.tsne``'s parameters (``n_pcs`` positional as there, ``perplexity``,
``metric``, ``early_exaggeration``, ``learning_rate``, ``n_jobs``, ...). t-SNE, InfoTSNE and
LargeVis share their input affinity (entropic, symmetrised) for the same perplexity, hence
one cache entry in ``adata.obsp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._random import resolve_seed, seed_argument
from ..adata import Method, estimator_options, log, run_embedding
from ._docs import RAISES, common, doc_params, returns
from ._names import TSNE_NAMES

if TYPE_CHECKING:
    from collections.abc import Callable

    from anndata import AnnData

_TSNE_DOC = """\
n_pcs
    Use this many leading columns of the representation (second positional parameter,
    as in ``sc.tl.tsne``).
use_rep
    ``'X'``, a key of ``adata.obsm`` (e.g. ``'X_pca'``, ``'X_scvi'``), or ``None``:
    ``X`` if it has at most 50 variables, else ``obsm['X_pca']`` (PCA is never computed
    silently: run ``sc.pp.pca`` first).
perplexity
    Effective number of neighbours of each cell in the input affinity; the kNN graph has
    ``3 * perplexity`` neighbours per cell.
metric
    Distance between cells in the input space, with scikit-learn's (hence scanpy's)
    meaning: ``'euclidean'`` distances are squared in the Gaussian kernel of P
    (the estimators' ``metric_in='sqeuclidean'``); also ``'cosine'``, ``'manhattan'``.
early_exaggeration
    Multiplier of the attraction during the first 250 iterations. ``None``: the method's
    own default (12 for t-SNE, InfoTSNE and TSNEkhorn, 1 for LargeVis).
learning_rate
    Step size, in scikit-learn's units (scanpy's). ``'auto'``: ``max(n / (4 *
    early_exaggeration), 50)`` (Belkina et al. 2019, scikit-learn's 'auto'); scanpy's fixed
    1000 is too small above about 50,000 cells. ``None``: the method's default.
random_state, rng
    Seed (int) or a numpy ``RandomState`` / ``Generator`` to draw one from; ``None`` draws
    a fresh seed. The int seed is recorded in ``uns[key]['params']['random_state']``.
    ``rng`` is scanpy 1.13's name for it (pass one of the two).
use_fast_tsne
    Accepted for scanpy compatibility and ignored: the FFT-interpolated repulsion of
    FIt-SNE (Linderman et al. 2019) is used anyway above 2,500 cells.
key_added
    Name of the result: ``adata.obsm[key_added]`` and ``adata.uns[key_added]``.
copy
    Return a new AnnData instead of writing into ``adata``.
n_components
    Dimension of the embedding."""

_NEIGHBORS = """\
neighbors_key
    Build the input affinity from the kNN graph stored under this key by
    ``sc.pp.neighbors`` or ``tdr.pp.neighbors`` (it needs ``3 * perplexity`` neighbours
    per cell, see Raises) instead of searching. ``None`` (default, as ``sc.tl.tsne``,
    which never reads a graph): search afresh."""


def _run(
    tl_function: Callable[..., Any],
    method: Method,
    estimator_cls: type,
    scanpy_params: dict[str, Any],
    params: dict[str, Any],
    kwargs: dict[str, Any],
) -> AnnData | None:
    """Build the estimator from a t-SNE-family call and run it on the AnnData."""
    if params.pop("use_fast_tsne"):
        log.hint("    use_fast_tsne is ignored: the FFT-interpolated repulsion is built in")
    adata = params.pop("adata")
    estimator = estimator_cls(
        perplexity=params.pop("perplexity"),
        n_components=params.pop("n_components"),
        random_state=resolve_seed(seed_argument(params.pop("random_state"), params.pop("rng"))),
        device=params.pop("device"),
        backend=params.pop("backend"),
        **TSNE_NAMES.estimator_params(scanpy_params),
        **estimator_options(tl_function, estimator_cls, kwargs, TSNE_NAMES),
    )
    record = {"n_jobs": params["n_jobs"]}
    return run_embedding(adata, estimator, method, call_params=record, **params)


@doc_params(
    tsne=_TSNE_DOC,
    neighbors=_NEIGHBORS,
    common=common(),
    raises=RAISES,
    returns=returns("X_tsne", "tsne", "t-SNE"),
)
def tsne(
    adata: AnnData,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    perplexity: float = 30.0,
    metric: str = "euclidean",
    early_exaggeration: float | None = 12.0,
    learning_rate: float | str | None = "auto",
    random_state: Any = 0,
    rng: Any = None,
    use_fast_tsne: bool = False,
    n_jobs: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
    n_components: int = 2,
    neighbors_key: str | None = None,
    device: str = "auto",
    backend: str | None = "auto",
    cache: bool = False,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> AnnData | None:
    """Embed the cells with t-SNE (van der Maaten & Hinton 2008).

    A drop-in for ``sc.tl.tsne`` (same parameters, names and keys; ``learning_rate``
    defaults to ``'auto'``): the repulsion is exact up to 2,500 cells and interpolated on a
    grid with FFT convolutions above (O(n) per iteration, as FIt-SNE / openTSNE; pass
    ``repulsion='exact'`` or ``'fft'`` to choose), with early exaggeration for 250
    iterations, SGD with gains and PCA initialisation. ``sc.pl.tsne(adata, color=...)``
    plots the result.

    den-SNE (Narayan, Berger & Cho 2021): ``densne=True`` adds its density-preservation
    term, so that tight populations stay tight and diffuse ones diffuse (``dens_lambda``,
    ``dens_frac``, ``dens_var_shift`` as :class:`~torchdr_sc.estimators.TSNE` takes them);
    ``output_dens=True`` writes every cell's log local radius in the data and in the
    embedding to ``obs['<key>_rad_orig']`` and ``obs['<key>_rad_emb']``, as ``tl.umap``
    does for densMAP.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {tsne}
    {neighbors}
    {common}

    {returns}

    {raises}
    """
    params = dict(locals())
    from ..estimators import TSNE

    kwargs = params.pop("kwargs")
    scanpy = {k: params.pop(k) for k in ("metric", "early_exaggeration", "learning_rate")}
    return _run(tsne, Method("tsne", "tSNE", TSNE_NAMES), TSNE, scanpy, params, kwargs)


@doc_params(
    tsne=_TSNE_DOC,
    neighbors=_NEIGHBORS,
    common=common(),
    raises=RAISES,
    returns=returns("X_infotsne", "infotsne", "InfoTSNE"),
)
def infotsne(
    adata: AnnData,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    perplexity: float = 30.0,
    metric: str = "euclidean",
    early_exaggeration: float | None = None,
    learning_rate: float | str | None = None,
    random_state: Any = 0,
    rng: Any = None,
    use_fast_tsne: bool = False,
    n_jobs: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
    n_components: int = 2,
    neighbors_key: str | None = None,
    device: str = "auto",
    backend: str | None = "auto",
    cache: bool = False,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> AnnData | None:
    """Embed the cells with InfoNC-t-SNE (Damrich, Böhm, Hamprecht & Kobak 2023).

    t-SNE's input affinity, schedule and attraction, with the normaliser estimated from
    300 negatives per cell and iteration (a contrastive objective), shared by blocks of
    cells: linear time per iteration, so it scales to millions of cells. Plot with
    ``sc.pl.embedding(adata, basis='infotsne')``.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {tsne}
    {neighbors}
    {common}

    {returns}

    {raises}
    """
    params = dict(locals())
    from ..estimators import InfoTSNE

    kwargs = params.pop("kwargs")
    scanpy = {k: params.pop(k) for k in ("metric", "early_exaggeration", "learning_rate")}
    method = Method("infotsne", "InfoTSNE", TSNE_NAMES)
    return _run(infotsne, method, InfoTSNE, scanpy, params, kwargs)


@doc_params(
    tsne=_TSNE_DOC,
    neighbors=_NEIGHBORS,
    common=common(),
    raises=RAISES,
    returns=returns("X_largevis", "largevis", "LargeVis"),
)
def largevis(
    adata: AnnData,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    perplexity: float = 30.0,
    metric: str = "euclidean",
    early_exaggeration: float | None = None,
    learning_rate: float | str | None = None,
    random_state: Any = 0,
    rng: Any = None,
    use_fast_tsne: bool = False,
    n_jobs: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
    n_components: int = 2,
    neighbors_key: str | None = None,
    device: str = "auto",
    backend: str | None = "auto",
    cache: bool = False,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> AnnData | None:
    """Embed the cells with LargeVis (Tang, Liu, Zhang & Mei 2016).

    t-SNE's input affinity with negative sampling and a Cauchy kernel. Plot with
    ``sc.pl.embedding(adata, basis='largevis')``.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {tsne}
    {neighbors}
    {common}

    {returns}

    {raises}
    """
    params = dict(locals())
    from ..estimators import LargeVis

    kwargs = params.pop("kwargs")
    scanpy = {k: params.pop(k) for k in ("metric", "early_exaggeration", "learning_rate")}
    method = Method("largevis", "LargeVis", TSNE_NAMES)
    return _run(largevis, method, LargeVis, scanpy, params, kwargs)


@doc_params(
    tsne=_TSNE_DOC,
    common=common(),
    raises=RAISES,
    returns=returns("X_tsnekhorn", "tsnekhorn", "TSNEkhorn"),
)
def tsnekhorn(
    adata: AnnData,
    n_pcs: int | None = None,
    *,
    use_rep: str | None = None,
    perplexity: float = 30.0,
    metric: str = "euclidean",
    early_exaggeration: float | None = 12.0,
    learning_rate: float | str | None = "auto",
    random_state: Any = 0,
    rng: Any = None,
    use_fast_tsne: bool = False,
    n_jobs: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
    n_components: int = 2,
    device: str = "auto",
    backend: str | None = "auto",
    cache: bool = False,
    progress_bar: bool | None = None,
    **kwargs: Any,
) -> AnnData | None:
    """Embed the cells with TSNEkhorn (Van Assel, Vayer, Flamary & Courty 2023).

    t-SNE with doubly stochastic (symmetric Sinkhorn) affinities in the input and the
    embedding. Up to 2,500 cells (or with ``repulsion='exact'``, passed as a keyword) the
    computation is dense (at most 15,000 cells); above, the input affinity is solved on a
    fresh kNN graph of ``3 * perplexity`` neighbours and the Sinkhorn scaling uses the FFT
    kernel sums (time and memory at 100,000 cells: ``benchmarks/README.md``). No
    ``neighbors_key``. Plot with ``sc.pl.embedding(adata, basis='tsnekhorn')``.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {tsne}
    {common}

    {returns}

    {raises}
    """
    params = dict(locals())
    from ..estimators import TSNEkhorn

    kwargs = params.pop("kwargs")
    scanpy = {k: params.pop(k) for k in ("metric", "early_exaggeration", "learning_rate")}
    params["neighbors_key"] = None
    method = Method("tsnekhorn", "TSNEkhorn", TSNE_NAMES)
    return _run(tsnekhorn, method, TSNEkhorn, scanpy, params, kwargs)


for _function in (tsne, infotsne, largevis, tsnekhorn):
    _function.scanpy_names = TSNE_NAMES  # type: ignore[attr-defined]
