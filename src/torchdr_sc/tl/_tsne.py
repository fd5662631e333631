"""``tl.tsne``, ``tl.infotsne``, ``tl.largevis`` and ``tl.tsnekhorn``: the t-SNE family.

t-SNE, InfoTSNE and LargeVis share their input affinity (entropic, symmetrised) for the
same perplexity, hence one cache entry in ``adata.obsp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._random import resolve_seed
from ..adata import Method, estimator_options, run_embedding
from ._docs import RAISES, common, doc_params, returns

if TYPE_CHECKING:
    from anndata import AnnData

_PERPLEXITY_DOC = """\
perplexity
    Effective number of neighbours of each cell in the input affinity; the kNN graph has
    ``3 * perplexity`` neighbours per cell.
n_components
    Dimension of the embedding."""


@doc_params(
    common=common(),
    perplexity=_PERPLEXITY_DOC,
    raises=RAISES,
    returns=returns("X_tsne", "tsne", "t-SNE"),
)
def tsne(
    adata: AnnData,
    *,
    perplexity: float = 30.0,
    n_components: int = 2,
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
    """Embed the cells with t-SNE (van der Maaten & Hinton 2008).

    A drop-in for ``sc.tl.tsne`` (same default perplexity 30): the repulsion is exact up to
    8,000 cells and interpolated on a grid with FFT convolutions above (O(n) per
    iteration, as FIt-SNE / openTSNE; pass ``repulsion='exact'`` or ``'fft'`` to choose),
    with early exaggeration 12 for 250 iterations, SGD with gains and PCA initialisation.
    ``sc.pl.tsne(adata, color=...)`` plots the result.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {perplexity}
    {common}

    {returns}

    {raises}
    """
    from ..estimators import TSNE

    estimator = TSNE(
        perplexity=perplexity,
        n_components=n_components,
        random_state=resolve_seed(random_state),
        device=device,
        backend=backend,
        **estimator_options(tsne, TSNE, kwargs),
    )
    return run_embedding(
        adata,
        estimator,
        Method("tsne", "tSNE"),
        key_added=key_added,
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=neighbors_key,
        copy=copy,
        cache=cache,
    )


@doc_params(
    common=common(),
    perplexity=_PERPLEXITY_DOC,
    raises=RAISES,
    returns=returns("X_infotsne", "infotsne", "InfoTSNE"),
)
def infotsne(
    adata: AnnData,
    *,
    perplexity: float = 30.0,
    n_components: int = 2,
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
    """Embed the cells with InfoNC-t-SNE (Damrich, Böhm, Hamprecht & Kobak 2023).

    t-SNE's input affinity with a negative-sampling (contrastive) objective: linear time
    per epoch, so it scales to millions of cells. Plot with
    ``sc.pl.embedding(adata, basis='infotsne')``.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {perplexity}
    {common}

    {returns}

    {raises}
    """
    from ..estimators import InfoTSNE

    estimator = InfoTSNE(
        perplexity=perplexity,
        n_components=n_components,
        random_state=resolve_seed(random_state),
        device=device,
        backend=backend,
        **estimator_options(infotsne, InfoTSNE, kwargs),
    )
    return run_embedding(
        adata,
        estimator,
        Method("infotsne", "InfoTSNE"),
        key_added=key_added,
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=neighbors_key,
        copy=copy,
        cache=cache,
    )


@doc_params(
    common=common(),
    perplexity=_PERPLEXITY_DOC,
    raises=RAISES,
    returns=returns("X_largevis", "largevis", "LargeVis"),
)
def largevis(
    adata: AnnData,
    *,
    perplexity: float = 30.0,
    n_components: int = 2,
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
    """Embed the cells with LargeVis (Tang, Liu, Zhang & Mei 2016).

    t-SNE's input affinity with negative sampling and a Cauchy kernel. Plot with
    ``sc.pl.embedding(adata, basis='largevis')``.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {perplexity}
    {common}

    {returns}

    {raises}
    """
    from ..estimators import LargeVis

    estimator = LargeVis(
        perplexity=perplexity,
        n_components=n_components,
        random_state=resolve_seed(random_state),
        device=device,
        backend=backend,
        **estimator_options(largevis, LargeVis, kwargs),
    )
    return run_embedding(
        adata,
        estimator,
        Method("largevis", "LargeVis"),
        key_added=key_added,
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=neighbors_key,
        copy=copy,
        cache=cache,
    )


@doc_params(
    common=common(neighbors=False),
    perplexity=_PERPLEXITY_DOC,
    raises=RAISES,
    returns=returns("X_tsnekhorn", "tsnekhorn", "TSNEkhorn"),
)
def tsnekhorn(
    adata: AnnData,
    *,
    perplexity: float = 30.0,
    n_components: int = 2,
    use_rep: str | None = None,
    n_pcs: int | None = None,
    key_added: str | None = None,
    random_state: Any = 0,
    device: str = "auto",
    backend: str | None = "auto",
    cache: bool = True,
    copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """Embed the cells with TSNEkhorn (Van Assel, Vayer, Flamary & Courty 2023).

    t-SNE with doubly stochastic (symmetric Sinkhorn) affinities in the input and the
    embedding. Dense ``n x n`` computation: at most 15,000 cells, and no ``neighbors_key``
    (the affinity uses all pairs). Plot with ``sc.pl.embedding(adata, basis='tsnekhorn')``.

    Parameters
    ----------
    adata
        Annotated data matrix (views and backed objects included).
    {perplexity}
    {common}

    {returns}

    {raises}
    """
    from ..estimators import TSNEkhorn

    estimator = TSNEkhorn(
        perplexity=perplexity,
        n_components=n_components,
        random_state=resolve_seed(random_state),
        device=device,
        backend=backend,
        **estimator_options(tsnekhorn, TSNEkhorn, kwargs),
    )
    return run_embedding(
        adata,
        estimator,
        Method("tsnekhorn", "TSNEkhorn"),
        key_added=key_added,
        use_rep=use_rep,
        n_pcs=n_pcs,
        neighbors_key=None,
        copy=copy,
        cache=cache,
    )
