"""The input-affinity cache kept in ``adata.obsp`` / ``adata.uns``.

An entry is one CSR float32 matrix ``adata.obsp[key]`` plus its description
``adata.uns['tdr_affinities'][key]``::

    {'params': {...},          # the estimator's affinity_params(): what determines P
     'source': 'X_pca',        # 'X', an obsm key, or 'neighbors:<key>' for a kNN graph
     'n_pcs': 50,              # only when a column subset was used
     'fingerprint': '9f1c...', # shape + content hash of the source matrix
     'n_obs': 700,
     'version': '0.1.0'}

The key depends on the affinity parameters and the source only, so methods with the same
affinity (t-SNE, InfoTSNE and LargeVis with the same perplexity) share one entry, and a
recomputation (changed data, subset of cells) overwrites the stale entry in place.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..affinity import SparseAffinity
from .uns import to_uns

if TYPE_CHECKING:
    from anndata import AnnData

#: ``adata.uns`` key holding the descriptions of the cached affinities.
UNS_KEY = "tdr_affinities"

#: What a cache key looks like: ``tdr_<Affinity class>_<8 hex digits>``.
CACHE_KEY_PATTERN = re.compile(r"tdr_[A-Za-z]+_[0-9a-f]{8}")

#: Affinities with more stored entries than this are not cached (dense TSNEkhorn P on
#: large data would take gigabytes of ``obsp``).
MAX_CACHED_NNZ = 50_000_000


@dataclass(frozen=True)
class CacheSlot:
    """Where an affinity is cached and what must match to reuse it.

    Attributes
    ----------
    key
        ``adata.obsp`` key (also the key inside ``adata.uns['tdr_affinities']``).
    meta
        The description that must match (parameters, source, fingerprint).
    """

    key: str
    meta: dict[str, Any]

    def description(self, version: str) -> dict[str, Any]:
        """The ``uns`` entry written next to the matrix."""
        return {**self.meta, "version": version}


def _plain(value: Any) -> Any:
    """Comparable JSON-able form of a stored value (arrays read back from disk included)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def make_slot(
    affinity_params: dict[str, Any],
    source: str,
    n_pcs: int | None,
    fingerprint: str,
    n_obs: int,
) -> CacheSlot:
    """The cache slot of an affinity computed from ``source``.

    Parameters
    ----------
    affinity_params
        ``estimator.affinity_params()``.
    source
        ``'X'``, an ``obsm`` key, or ``'neighbors:<neighbors_key>'``.
    n_pcs
        Leading columns kept from ``source`` (``None``: all).
    fingerprint
        Fingerprint of the source matrix.
    n_obs
        Number of cells (a subset of cells never matches).
    """
    params = to_uns(affinity_params)
    ident = json.dumps([_plain(params), source, n_pcs], sort_keys=True, default=str)
    digest = hashlib.blake2b(ident.encode(), digest_size=4).hexdigest()
    name = str(affinity_params.get("affinity", "affinity"))
    meta: dict[str, Any] = {
        "params": params,
        "source": source,
        "fingerprint": fingerprint,
        "n_obs": int(n_obs),
    }
    if n_pcs is not None:
        meta["n_pcs"] = int(n_pcs)
    return CacheSlot(f"tdr_{name}_{digest}", meta)


def lookup(adata: AnnData, slot: CacheSlot) -> SparseAffinity | None:
    """The cached affinity of ``slot`` if it is present and still valid, else ``None``.

    Valid means: the description in ``uns`` has the same parameters, source, column count
    and fingerprint, and the matrix in ``obsp`` is ``n_obs x n_obs``.
    """
    entries = adata.uns.get(UNS_KEY, {})
    stored = entries.get(slot.key) if hasattr(entries, "get") else None
    if stored is None or slot.key not in adata.obsp:
        return None
    for field, expected in slot.meta.items():
        if _plain(stored.get(field)) != _plain(expected):
            return None
    if stored.get("n_pcs") is not None and "n_pcs" not in slot.meta:
        return None
    matrix = adata.obsp[slot.key]
    if matrix.shape != (adata.n_obs, adata.n_obs):
        return None
    return SparseAffinity.from_scipy(sp.csr_matrix(matrix))


def storable(affinity: SparseAffinity) -> bool:
    """Whether ``affinity`` can be cached: every row held (not one process's block of a
    row-sharded P) and small enough."""
    return affinity.holds_all_rows and affinity.nnz <= MAX_CACHED_NNZ


def to_obsp(affinity: SparseAffinity) -> sp.csr_matrix:
    """The affinity as the CSR float32 matrix stored in ``obsp``."""
    csr = affinity.to_scipy(np.float32)
    csr.sort_indices()
    return csr


@dataclass(frozen=True)
class CacheEntry:
    """One cached affinity as :func:`entries` lists it.

    Attributes
    ----------
    key
        Its ``adata.obsp`` key.
    affinity
        The affinity class that computed it (e.g. ``'EntropicAffinity'``).
    params
        The affinity parameters, as ``'name=value, ...'``.
    source
        Where it was computed from: ``'X'``, an ``obsm`` key or ``'neighbors:<key>'``.
    nnz
        Stored values.
    megabytes
        Memory of the CSR matrix (values, column indices and row pointers).
    described
        Whether ``uns['tdr_affinities']`` describes it (``False``: an orphan matrix, e.g.
        left by an interrupted manual edit).
    """

    key: str
    affinity: str
    params: str
    source: str
    nnz: int
    megabytes: float
    described: bool


def _cache_keys(adata: AnnData) -> list[str]:
    """Keys of the cache: described in ``uns`` or named like one in ``obsp``."""
    described = adata.uns.get(UNS_KEY, {})
    described = list(described.keys()) if hasattr(described, "keys") else []
    named = [k for k in adata.obsp.keys() if CACHE_KEY_PATTERN.fullmatch(k)]
    return list(dict.fromkeys(described + named))


def _csr_megabytes(matrix: Any) -> tuple[int, float]:
    csr = sp.csr_matrix(matrix)
    size = csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
    return int(csr.nnz), size / 2**20


def entries(adata: AnnData) -> list[CacheEntry]:
    """The affinities cached in ``adata`` (see :class:`CacheEntry`), by key."""
    described = adata.uns.get(UNS_KEY, {})
    out = []
    for key in sorted(_cache_keys(adata)):
        meta = described.get(key, {}) if hasattr(described, "get") else {}
        params = dict(meta.get("params", {}))
        affinity = str(params.pop("affinity", "?"))
        text = ", ".join(f"{k}={_plain(v)}" for k, v in sorted(params.items()))
        nnz, mb = _csr_megabytes(adata.obsp[key]) if key in adata.obsp else (0, 0.0)
        source = str(meta.get("source", "?"))
        out.append(CacheEntry(key, affinity, text, source, nnz, mb, key in described))
    return out


def remove(adata: AnnData, keys: list[str] | None = None) -> list[CacheEntry]:
    """Delete cached affinities (all when ``keys`` is ``None``); returns what was removed.

    Raises
    ------
    KeyError
        A key in ``keys`` that is not a cached affinity (nothing is removed then).
    """
    cached = {e.key: e for e in entries(adata)}
    keys = list(cached) if keys is None else list(keys)
    missing = [k for k in keys if k not in cached]
    if missing:
        found = ", ".join(repr(k) for k in sorted(cached)) or "none"
        msg = f"{missing[0]!r} is not a cached affinity (cached: {found})."
        raise KeyError(msg)
    described = dict(adata.uns.get(UNS_KEY, {}))
    for key in keys:
        if key in adata.obsp:
            del adata.obsp[key]
        described.pop(key, None)
    if described:
        adata.uns[UNS_KEY] = described
    elif UNS_KEY in adata.uns:
        del adata.uns[UNS_KEY]
    return [cached[k] for k in keys]
