"""Docstring fragments shared by the ``tl`` functions (scanpy's ``_doc_params`` pattern)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_COMMON = """\
use_rep
    ``'X'``, a key of ``adata.obsm`` (e.g. ``'X_pca'``, ``'X_scvi'``), or ``None``:
    ``X`` if it has at most 50 variables, else ``obsm['X_pca']``. PCA is never computed
    silently on your object: run ``sc.pp.pca`` first.
n_pcs
    Use this many leading columns of the representation.
n_jobs
    CPU threads of the computation (torch's thread count for this call); ``-1``: all
    cores; ``None``: leave torch's setting (all cores by default), not scanpy's
    ``settings.n_jobs``.
device
    ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'`` or ``'cuda:<index>'``.
backend
    kNN backend: ``'auto'``, ``'torch'``, ``'faiss'`` or ``'keops'`` (see
    ``torchdr_sc.knn.BACKENDS``).
cache
    Keep the input affinity P in ``adata.obsp['tdr_<Affinity>_<hash>']`` (described in
    ``adata.uns['tdr_affinities']``) and reuse it in a later call with the same affinity
    parameters on the same, unchanged representation. Off by default, so that a call
    writes only scanpy's keys: the matrix holds up to ``2 * n_neighbors`` (UMAP) or
    ``6 * perplexity`` (t-SNE) values per cell and is saved with the object by
    ``write_h5ad``, while computing P (kNN search included) takes 5-8 % of a t-SNE run and
    about 30 % of a UMAP run without a stored graph at 50,000-200,000 cells on 2 CPU cores
    (``benchmarks/results/cpu-2core-tsne-fft.md``, ``cpu-2core-200k.md``). Turn it on
    when you try several embedding parameters on one affinity. List the cache with
    :func:`torchdr_sc.tl.cached_affinities`, empty it with
    :func:`torchdr_sc.tl.clear_cache`.
progress_bar
    Report the stages (kNN search, affinity, optimisation) and a bar over the iterations
    on stderr. ``None``: on in a Jupyter notebook, or for a run of many cells in a
    terminal (see :func:`torchdr_sc.progress.default_progress`).
**kwargs
    Further parameters of the estimator (TorchDR's names), e.g. ``optimizer``,
    ``scheduler``, ``compile``, ``check_interval``. An estimator parameter that has a
    scanpy name here is only accepted under that name."""

RAISES = """\
Raises
------
ValueError
    Before any computation, leaving ``adata`` untouched: ``use_rep`` not in ``obsm``, NaN
    or inf in the representation, a representation whose row count differs from
    ``n_obs``, too few cells for the neighbourhood size, a missing ``neighbors_key`` or
    one whose graph has too small a k, or an invalid parameter.
TypeError
    ``key_added`` (or ``use_rep``) that is not a str, or an unknown keyword argument."""


def common() -> str:
    """Parameters shared by every ``tl`` function (this package's own)."""
    return _COMMON


def returns(obsm: str, uns: str, what: str) -> str:
    """The ``Returns`` section of a ``tl`` function."""
    return f"""\
Returns
-------
``None`` if ``copy=False``, else a new AnnData. Sets the following fields:

``adata.obsm['{obsm}' | key_added]`` : :class:`numpy.ndarray` (float32)
    {what} coordinates, shape ``(n_obs, n_components)`` (for UMAP and t-SNE, the key of
    the active scanpy preset when it defines one: ``obsm['umap']`` under scanpy 1.13's
    ``Preset.ScanpyV2Preview``).
``adata.uns['{uns}' | key_added]`` : dict
    ``params`` (method, the parameters under scanpy's names, e.g. ``a`` and ``b`` for
    UMAP, then the estimator's others, ``use_rep``, ``n_pcs``, the ``neighbors_key`` of a
    stored graph used, seed, package version),
    ``timings`` (seconds per stage) and ``n_iter``.
``adata.obsp['tdr_<Affinity>_<hash>']`` : CSR float32, only when ``cache=True``
    The input affinity P, described in ``adata.uns['tdr_affinities']``."""


def doc_params(**fragments: str) -> Callable[[F], F]:
    """Fill ``{name}`` placeholders of the decorated function's docstring."""

    def decorate(func: F) -> F:
        doc = func.__doc__ or ""
        for name, text in fragments.items():
            match = re.search(rf"^([ \t]*){{{name}}}", doc, flags=re.MULTILINE)
            if match:
                indented = textwrap.indent(text, match.group(1)).lstrip(" \t")
                doc = doc.replace(f"{{{name}}}", indented)
        func.__doc__ = doc
        return func

    return decorate
