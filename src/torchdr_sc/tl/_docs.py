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
{neighbors}key_added
    Name of the result: ``adata.obsm[key_added]`` and ``adata.uns[key_added]``.
random_state
    Seed (int) or a numpy ``RandomState`` / ``Generator`` to draw one from; ``None`` draws
    a fresh seed. The int seed is recorded in ``uns[key]['params']['random_state']``.
device
    ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'`` or ``'cuda:<index>'``.
backend
    kNN backend: ``'auto'``, ``'torch'``, ``'faiss'`` or ``'keops'``.
cache
    Reuse the input affinity cached in ``adata.obsp`` by an earlier call with the same
    affinity parameters on the same, unchanged representation, and cache the one computed
    here (``False``: neither read nor write the cache).
copy
    Return a new AnnData instead of writing into ``adata``.
**kwargs
    Any further parameter of the estimator, e.g. ``max_iter``, ``lr``, ``init``,
    ``metric_in``, ``progress_bar=True`` (a progress bar over the optimisation)."""

NEIGHBORS_KEY = """\
neighbors_key
    Build the input affinity from the kNN graph stored under this key by
    ``sc.pp.neighbors`` or ``tdr.pp.neighbors`` instead of searching neighbours again
    (its k must be large enough; see Raises). Its ``use_rep`` / ``n_pcs`` are used when
    you give neither.
"""

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


def common(*, neighbors: bool = True) -> str:
    """Parameters shared by the ``tl`` functions (``neighbors_key`` included or not)."""
    return _COMMON.replace("{neighbors}", NEIGHBORS_KEY if neighbors else "")


def returns(obsm: str, uns: str, what: str) -> str:
    """The ``Returns`` section of a ``tl`` function."""
    return f"""\
Returns
-------
``None`` if ``copy=False``, else a new AnnData. Sets the following fields:

``adata.obsm['{obsm}' | key_added]`` : :class:`numpy.ndarray` (float32)
    {what} coordinates, shape ``(n_obs, n_components)``.
``adata.uns['{uns}' | key_added]`` : dict
    ``params`` (method, parameters, ``use_rep``, ``n_pcs``, seed, package version),
    ``timings`` (seconds per stage) and ``n_iter``.
``adata.obsp['tdr_<Affinity>_<hash>']`` : CSR float32, when ``cache=True``
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
