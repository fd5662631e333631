"""Choosing and checking the representation of the cells that gets embedded.

scanpy's rule (``scanpy.tools._utils._choose_representation``): ``use_rep`` names an
``obsm`` key or ``'X'``; without it, ``X`` is used if it has at most ``N_PCS`` (50)
variables, else ``obsm['X_pca']``. Unlike scanpy, PCA is never computed silently on the
user's object: a missing ``X_pca`` is an error that names ``sc.pp.pca``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .._validation import check_finite_rows, format_options
from . import log

if TYPE_CHECKING:
    from anndata import AnnData

#: Largest number of variables for which ``X`` is used directly (scanpy's ``settings.N_PCS``).
N_PCS = 50

#: Bytes hashed per update: every byte of a representation is hashed, in row blocks of
#: about this size when the array is not contiguous (bounded temporary copies).
FULL_HASH_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Representation:
    """The matrix that gets embedded and where it came from.

    Attributes
    ----------
    data
        Dense float32 array ``(n_obs, n_features)``.
    use_rep
        ``'X'`` or the ``obsm`` key it was read from.
    n_pcs
        Number of leading columns kept, or ``None`` for all of them.
    """

    data: np.ndarray
    use_rep: str
    n_pcs: int | None

    def fingerprint(self) -> str:
        """Shape, dtype and a hash of every byte (see :func:`fingerprint`)."""
        return fingerprint(self.data)


def _hash_rows(h: Any, x: np.ndarray) -> None:
    """Feed the bytes of ``x`` (C order, float32 or as stored) to ``h`` without a full copy."""
    if x.flags.c_contiguous:
        h.update(memoryview(x).cast("B"))
        return
    row_bytes = max(1, x.itemsize * int(np.prod(x.shape[1:], dtype=np.int64)))
    step = max(1, FULL_HASH_BYTES // row_bytes)
    for start in range(0, x.shape[0], step):
        h.update(memoryview(np.ascontiguousarray(x[start : start + step])).cast("B"))


def fingerprint(x: np.ndarray | sp.spmatrix) -> str:
    """Hex digest identifying the content of ``x``: its shape, dtype and every byte.

    BLAKE2b over the whole buffer, without a copy for C-contiguous arrays (a small
    fraction of any fit's time), so that any change,
    even in place and keeping the row sums, gets a different digest; the digests of
    small arrays are those of earlier versions (which hashed small arrays entirely).
    Sparse matrices are hashed through their CSR arrays.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(x.shape), str(x.dtype))).encode())
    if sp.issparse(x):
        csr = sp.csr_matrix(x)
        for part in (csr.indptr, csr.indices, csr.data):
            _hash_rows(h, np.ascontiguousarray(part))
        return h.hexdigest()
    x = np.asarray(x)
    _hash_rows(h, x.reshape(x.shape[0], -1) if x.ndim > 1 else x)
    return h.hexdigest()


def streamed_fingerprint(x: Any, chunk_rows: int) -> str:
    """The AnnData layer's fingerprint of ``X`` densified to float32, read in row chunks.

    Equal to :func:`fingerprint` of the dense float32 matrix (so that ``tl`` reuses an
    affinity cached by ``torchdr-sc embed`` on ``X``), without holding the matrix: the
    digest of consecutive updates is that of the whole bytes.
    """
    n, d = int(x.shape[0]), int(x.shape[1])
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(((n, d), "float32")).encode())
    for start in range(0, n, chunk_rows):
        chunk = x[start : min(start + chunk_rows, n)]
        chunk = chunk.toarray() if hasattr(chunk, "toarray") else np.asarray(chunk)
        _hash_rows(h, np.ascontiguousarray(chunk, dtype=np.float32))
    return h.hexdigest()


def check_str(name: str, value: Any, *, optional: bool = False) -> None:
    """Raise a TypeError unless ``value`` is a str (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        kind = "a str or None" if optional else "a str"
        msg = f"`{name}` must be {kind}; got {value!r}."
        raise TypeError(msg)


def check_key(name: str, value: Any, *, optional: bool = False) -> None:
    """Check a key that names an element written to the AnnData (``key_added``).

    ``write_h5ad`` / ``write_zarr`` cannot store a key holding ``'/'`` (it separates
    groups), and an empty key would silently mean the default.

    Raises
    ------
    TypeError
        Not a str (nor ``None`` when ``optional``).
    ValueError
        An empty key, or one holding ``'/'``.
    """
    check_str(name, value, optional=optional)
    if value is None:
        return
    if not value:
        msg = f"`{name}` must not be empty; pass None for the default key."
        raise ValueError(msg)
    if "/" in value:
        msg = (
            f"`{name}` must not contain '/' (write_h5ad and write_zarr cannot store such a "
            f"key); got {value!r}."
        )
        raise ValueError(msg)


def _to_memory(x: Any) -> Any:
    """Read a backed (on-disk) matrix into memory; other matrices are returned unchanged."""
    if hasattr(x, "to_memory"):  # anndata's backed sparse datasets
        return x.to_memory()
    if type(x).__module__.startswith(("h5py", "zarr")):
        return x[()]
    return x


def _densify(x: Any, name: str) -> np.ndarray:
    x = _to_memory(x)
    if sp.issparse(x):
        x = x.toarray()
    if hasattr(x, "to_numpy"):  # a DataFrame in obsm
        x = x.to_numpy()
    x = np.asarray(x)
    if x.ndim != 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        msg = f"`{name}` must be a 2-D numeric matrix; got shape {x.shape} and dtype {x.dtype}."
        raise TypeError(msg)
    return np.ascontiguousarray(x, dtype=np.float32)


def _x(adata: AnnData) -> Any:
    """``adata.X``; an error naming ``use_rep`` when it is absent."""
    if adata.X is not None:
        return adata.X
    keys = sorted(map(str, adata.obsm.keys()))
    if keys:
        hint = f", e.g. use_rep={keys[0]!r} (available: {format_options(keys)})"
    else:
        hint = " (adata.obsm is empty: compute a representation first, e.g. sc.pp.pca)"
    msg = f"adata.X is absent (None), so there is no matrix to embed: pass `use_rep`{hint}."
    raise ValueError(msg)


def _select_source(adata: AnnData, use_rep: str | None, n_pcs: int | None) -> tuple[str, Any]:
    """Name and (lazy) matrix of the representation, by scanpy's rule."""
    if use_rep is None and n_pcs == 0:
        return "X", _x(adata)
    if use_rep is None:
        if adata.n_vars <= N_PCS:
            return "X", _x(adata)
        if "X_pca" in adata.obsm:
            return "X_pca", adata.obsm["X_pca"]
        msg = (
            f"adata.X has {adata.n_vars} variables (more than {N_PCS}) and adata.obsm holds no "
            "'X_pca': run `sc.pp.pca(adata)` first, or pass `use_rep` (e.g. use_rep='X' to "
            "embed all variables). No PCA is computed silently on your object."
        )
        raise ValueError(msg)
    if use_rep in adata.obsm:
        return use_rep, adata.obsm[use_rep]
    if use_rep == "X":
        return "X", _x(adata)
    available = format_options(adata.obsm.keys()) or "nothing"
    msg = f"`use_rep={use_rep!r}` is not in adata.obsm (available: {available})."
    raise ValueError(msg)


def choose_representation(
    adata: AnnData, *, use_rep: str | None = None, n_pcs: int | None = None
) -> Representation:
    """Pick, read and check the matrix to embed.

    Parameters
    ----------
    adata
        The annotated data (views and backed objects included).
    use_rep
        ``'X'``, a key of ``adata.obsm``, or ``None`` for scanpy's rule.
    n_pcs
        Keep the first ``n_pcs`` columns of an ``obsm`` representation; ``0`` with
        ``use_rep=None`` means ``X``.

    Returns
    -------
    The representation, as a dense float32 array.

    Raises
    ------
    ValueError
        If ``use_rep`` is not in ``obsm``; if the matrix has a different number of rows
        than ``obs``, too few columns for ``n_pcs``, or holds NaN / inf; or if there is no
        small ``X`` and no ``X_pca``.
    """
    check_str("use_rep", use_rep, optional=True)
    if n_pcs is not None and (isinstance(n_pcs, bool) or not isinstance(n_pcs, int | np.integer)):
        msg = f"`n_pcs` must be a non-negative int or None; got {n_pcs!r}."
        raise TypeError(msg)
    if n_pcs is not None and n_pcs < 0:
        msg = f"`n_pcs` must be a non-negative int or None; got {n_pcs!r}."
        raise ValueError(msg)
    name, raw = _select_source(adata, use_rep, n_pcs)
    where = "adata.X" if name == "X" else f"adata.obsm[{name!r}]"
    shape = tuple(getattr(raw, "shape", ()))
    if len(shape) != 2 or shape[0] != adata.n_obs:
        msg = (
            f"{where} has shape {shape} but adata has {adata.n_obs} cells (obs): the object "
            "is inconsistent; recompute that representation."
        )
        raise ValueError(msg)
    kept = None
    if name != "X" and n_pcs:
        if n_pcs > shape[1]:
            msg = f"`n_pcs={n_pcs}` is larger than the {shape[1]} columns of {where}."
            raise ValueError(msg)
        kept = int(n_pcs)
        raw = raw.iloc[:, :kept] if hasattr(raw, "iloc") else raw[:, :kept]
    data = _densify(raw, where)
    check_finite_rows(data, where)
    if name == "X":
        log.info("    using data matrix X directly")
    else:
        log.info(f"    using {name!r} with n_pcs = {data.shape[1]}")
    return Representation(data, name, kept)
