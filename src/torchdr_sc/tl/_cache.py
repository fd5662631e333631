"""``tl.cached_affinities`` and ``tl.clear_cache``: the affinity cache, visible and removable.

With ``cache=True`` a ``tl`` function keeps its input affinity P in
``adata.obsp['tdr_<Affinity>_<hash>']``, described in ``adata.uns['tdr_affinities']``, and a
later call with the same affinity parameters on the same representation reuses it. These
two functions show what is kept (and what it weighs) and remove it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from ..adata import cache, log

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData


def cached_affinities(adata: AnnData) -> pd.DataFrame:
    """List the input affinities cached in ``adata``.

    Parameters
    ----------
    adata
        Annotated data matrix.

    Returns
    -------
    One row per cached matrix, indexed by its ``adata.obsp`` key, with columns
    ``affinity`` (class), ``params`` (its parameters), ``source`` (``'X'``, an ``obsm``
    key or ``'neighbors:<key>'``), ``nnz`` (stored values), ``megabytes`` (memory of the
    CSR matrix, and roughly what it adds to an ``.h5ad`` file) and ``described`` (whether
    ``uns['tdr_affinities']`` describes it). Empty when nothing is cached.

    Examples
    --------
    >>> tdr.tl.tsne(adata, cache=True)  # doctest: +SKIP
    >>> tdr.tl.cached_affinities(adata)  # doctest: +SKIP
    """
    import pandas as pd

    rows = [asdict(entry) for entry in cache.entries(adata)]
    columns = ["key", "affinity", "params", "source", "nnz", "megabytes", "described"]
    return pd.DataFrame(rows, columns=columns).set_index("key")


def clear_cache(adata: AnnData, keys: str | list[str] | None = None) -> None:
    """Remove cached input affinities from ``adata.obsp`` and ``adata.uns``.

    Parameters
    ----------
    adata
        Annotated data matrix (modified in place).
    keys
        ``obsp`` key(s) to remove, as listed by :func:`cached_affinities`; ``None``: all.
        ``uns['tdr_affinities']`` goes away with the last entry.

    Raises
    ------
    KeyError
        A key that is not a cached affinity (nothing is removed then).
    """
    if isinstance(keys, str):
        keys = [keys]
    removed = cache.remove(adata, keys)
    megabytes = sum(entry.megabytes for entry in removed)
    log.info(f"removed {len(removed)} cached affinities ({megabytes:.1f} MB)")
