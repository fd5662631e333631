"""PCA of a matrix read in blocks of rows: dense, scipy sparse, on disk, or row-sharded.

The estimators of :mod:`torchdr_sc.estimators` (``PCA``, ``ExactIncrementalPCA``) and
``pp.pca`` compute here. Nothing is held whole but the input itself: rows are read in
blocks of about :data:`BLOCK_BYTES` (a sparse block is densified alone, never the whole
matrix, and the stored matrix is never centred), and reduced to

- the count, the mean and the ``d x d`` scatter matrix, summed in float64 from each block's
  product in the data's dtype, in parallel over blocks (exact PCA; ``_scatter.py``), or
- the products of the scatter matrix with a thin ``d x l`` basis (randomised subspace
  iteration, for many features, where a ``d x d`` matrix does not fit).

Under a ``torch.distributed`` group each rank reads only its own rows and the statistics are
summed over the ranks (``O(d^2)`` or ``O(d l)`` values per collective), so every rank ends
with the same axes.

Every sum that feeds a result is a matrix product or a column sum of a block (one thread per
output or per block, the same bits whatever the thread count), blocks are added in row order,
and the eigendecompositions (of the leading eigenpairs only) run on one CPU thread (LAPACK's
result changes with the thread count): the same input gives bitwise the same axes on CPU
whatever the thread count.

References
----------
- N. Halko, P.-G. Martinsson, J. A. Tropp. Finding structure with randomness:
  probabilistic algorithms for constructing approximate matrix decompositions.
  SIAM Review 53(2), 2011.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from .._device import numeric_matrix
from ..distributed import DistContext, RowShard
from ._pca import IncrementalPCA
from ._scatter import block_statistics
from ._sources import _source, is_streamed

#: Rows are read in blocks of about this many bytes of float64.
BLOCK_BYTES = 32 * 2**20

#: How the principal axes are found: ``'covariance_eigh'`` (exact: the ``d x d`` scatter
#: matrix and its eigendecomposition), ``'randomized'`` (subspace iteration on that matrix,
#: never formed), ``'auto'`` (exact up to :data:`EXACT_MAX_FEATURES` features).
PCA_SOLVERS = ("auto", "covariance_eigh", "randomized")

#: ``svd_solver='auto'`` is exact up to this many features (the ``d x d`` float64 matrix
#: stays small next to the data); above, randomised.
EXACT_MAX_FEATURES = 4096


def pick_solver(solver: str, n_features: int) -> str:
    """``'covariance_eigh'`` or ``'randomized'`` for a :data:`PCA_SOLVERS` name."""
    if solver == "auto":
        return "covariance_eigh" if n_features <= EXACT_MAX_FEATURES else "randomized"
    return solver


def prepare_matrix(X: Any, name: str = "X") -> Any:
    """``X`` in a form :func:`row_blocks` reads: CSR for scipy sparse, a tensor for dense.

    Streamed inputs (backed, h5py, zarr, :class:`~torchdr_sc.streaming.Chunked`, DataLoaders)
    are returned as they are; their values are checked block by block while reading.

    Raises
    ------
    TypeError
        Non-numeric or complex values.
    ValueError
        Not 2-D, empty, or NaN / inf values (counted by rows).
    """
    if is_streamed(X):
        return X
    if sp.issparse(X):
        csr = sp.csr_matrix(X) if X.format != "csr" else X
        if csr.shape[0] == 0 or csr.shape[1] == 0:
            msg = f"`{name}` is empty; got shape {csr.shape}."
            raise ValueError(msg)
        _check_sparse_finite(csr, name)
        return csr
    x = numeric_matrix(X, f"`{name}`")
    if x.shape[0] == 0 or x.shape[1] == 0:
        msg = f"`{name}` is empty; got shape {tuple(x.shape)}."
        raise ValueError(msg)
    if x.is_floating_point():
        bad = int((~torch.isfinite(x)).any(1).sum())
        if bad:
            raise ValueError(_non_finite(name, bad, x.shape[0]))
    return x


def _non_finite(name: str, bad: int, n: int) -> str:
    return f"`{name}` holds NaN or inf values in {bad} of {n} rows; remove or impute them first."


def _check_sparse_finite(csr: sp.csr_matrix, name: str) -> None:
    bad_values = ~np.isfinite(csr.data)
    if bad_values.any():
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[bad_values]
        raise ValueError(_non_finite(name, len(np.unique(rows)), csr.shape[0]))


def n_rows(X: Any) -> int:
    """Number of rows of a prepared matrix (a DataLoader's rows are counted by reading it)."""
    shape = getattr(X, "shape", None)
    if shape is not None:
        return int(shape[0])
    return sum(int(b.shape[0]) for _, b in row_blocks(X, RowShard(0, -1)))


def row_blocks(
    X: Any, rows: RowShard, block_rows: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first_row, block)`` over the rows ``[rows.start, rows.stop)`` of ``X``, in order.

    Blocks are float32 (float64 for float64 input) dense tensors; a sparse block is
    densified on its own. ``rows.stop == -1`` means to the end.
    """
    stop = None if rows.stop == -1 else rows.stop
    if is_streamed(X):
        src = _source(X)
        for s, chunk in src.chunks(rows.start, stop):
            bad = int((~torch.isfinite(chunk)).any(1).sum())
            if bad:
                raise ValueError(_non_finite("X", bad, chunk.shape[0]) + f" (rows from {s})")
            yield s, chunk
        return
    n, d = X.shape[0], X.shape[1]
    stop = n if stop is None else stop
    step = block_rows or max(1, BLOCK_BYTES // (8 * d))
    for s in range(rows.start, stop, step):
        e = min(s + step, stop)
        if sp.issparse(X):
            block = torch.from_numpy(np.asarray(X[s:e].toarray()))
        else:
            block = X[s:e]
        dtype = torch.float64 if block.dtype == torch.float64 else torch.float32
        yield s, block.to(dtype)


def exact_statistics(
    X: Any, rows: RowShard, n_components: int, device: torch.device
) -> IncrementalPCA:
    """Count, mean and scatter matrix of the rows ``rows`` of ``X`` (this rank's share)."""
    return block_statistics((block for _, block in row_blocks(X, rows)), n_components, device)


def leading_eigh(sym: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenpairs of a symmetric matrix in float64, largest first.

    On CPU only those ``k`` are computed (LAPACK ``syevr`` through
    :func:`scipy.linalg.eigh`), on one thread, since LAPACK's result changes with the thread
    count; elsewhere ``torch.linalg.eigh``.

    Returns
    -------
    eigenvalues, eigenvectors
        ``(k,)`` and ``(d, k)`` (eigenvectors as columns), by decreasing eigenvalue.
    """
    sym = sym.double()
    d = sym.shape[0]
    if sym.device.type != "cpu":
        evals, evecs = torch.linalg.eigh(sym)
        order = torch.argsort(evals, descending=True, stable=True)[:k]
        return evals[order], evecs[:, order]
    with threadpool_limits(1, user_api="blas"):
        evals, evecs = scipy.linalg.eigh(
            sym.numpy(), subset_by_index=[d - k, d - 1], driver="evr", check_finite=False
        )
    return torch.from_numpy(evals[::-1].copy()), torch.from_numpy(evecs[:, ::-1].copy())


def top_axes(sym: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading eigenpairs of a symmetric matrix: ``(k, d)`` axes as rows, signs fixed.

    Each axis's largest-magnitude entry is positive (scikit-learn's ``svd_flip`` rule for
    ``PCA``), so the axes do not depend on the eigensolver's sign choices.
    """
    evals, evecs = leading_eigh(sym, min(n_components, sym.shape[0]))
    axes = evecs.T.contiguous()
    idx = axes.abs().argmax(1)
    signs = torch.sign(axes[torch.arange(axes.shape[0], device=axes.device), idx])
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    return axes, evals


def column_moments(
    X: Any, rows: RowShard, device: torch.device
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Count, float64 column sums and column sums of squares of this rank's rows."""
    count, total, squares = 0, None, None
    for _, block in row_blocks(X, rows):
        b = block.to(device=device, dtype=torch.float64)
        s, q = b.sum(0), (b * b).sum(0)
        total = s if total is None else total + s
        squares = q if squares is None else squares + q
        count += b.shape[0]
    return count, total, squares


def reduce_moments(
    ctx: DistContext, count: int, total: torch.Tensor, squares: torch.Tensor
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The moments of :func:`column_moments` summed over the ranks of ``ctx``."""
    if not ctx.active:
        return count, total, squares
    packed = torch.cat([total.new_tensor([float(count)]), total, squares])
    ctx.sync(packed)
    d = total.shape[0]
    return round(float(packed[0])), packed[1 : d + 1], packed[d + 1 :]


def _scatter_times(X: Any, rows: RowShard, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``Xc^T Xc basis`` over this rank's rows, ``Xc`` the rows minus ``mean`` (implicitly)."""
    out = torch.zeros_like(basis)
    shift = mean @ basis
    for _, block in row_blocks(X, rows):
        b = block.to(device=basis.device, dtype=torch.float64)
        y = b @ basis - shift
        out += b.T @ y - torch.outer(mean, y.sum(0))
    return out


def randomized_axes(
    X: Any,
    rows: RowShard,
    ctx: DistContext,
    mean: torch.Tensor,
    n_components: int,
    *,
    generator: torch.Generator,
    n_iter: int = 7,
    oversample: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading axes of the scatter matrix by subspace iteration (Halko et al. 2011).

    Each iteration is one pass over the rows computing ``S Q`` blockwise (``S`` the scatter
    matrix, never formed; ``Q`` a ``d x l`` orthonormal basis, ``l = k + oversample``),
    summed over the ranks; a Rayleigh-Ritz step on ``Q^T S Q`` gives the axes and the
    eigenvalues of ``S``. The start is drawn from ``generator`` on the CPU, so it is the
    same on every rank and device.

    Returns
    -------
    axes, eigenvalues
        ``(k, d)`` float64 axes (signs fixed as in :func:`top_axes`) and ``(k,)`` eigenvalues
        of the scatter matrix.
    """
    d = mean.shape[0]
    width = min(d, n_components + oversample)
    start = torch.randn(d, width, generator=generator, dtype=torch.float64)
    basis = torch.linalg.qr(start.to(mean.device))[0]
    for _ in range(n_iter):
        product = _scatter_times(X, rows, mean, basis)
        if ctx.active:
            ctx.sync(product)
        basis = torch.linalg.qr(product)[0]
    product = _scatter_times(X, rows, mean, basis)
    if ctx.active:
        ctx.sync(product)
    small = basis.T @ product
    small_axes, evals = top_axes((small + small.T) / 2, n_components)
    axes = small_axes @ basis.T
    idx = axes.abs().argmax(1)
    signs = torch.sign(axes[torch.arange(axes.shape[0], device=axes.device), idx])
    return axes * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None], evals


def project_rows(
    X: Any, rows: RowShard, mean: torch.Tensor | None, axes: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Coordinates of this rank's rows on ``axes`` (``(k, d)``), centred by ``mean`` if given.

    Computed block by block in ``dtype`` on ``axes``'s device; a sparse block's product
    ``X_b V - m V`` needs no centred copy of the data.
    """
    comps = axes.to(dtype).T
    shift = None if mean is None else (mean.to(dtype) @ comps)
    shape = getattr(X, "shape", None)
    if shape is not None:  # known row count: write the blocks' coordinates in place
        stop = int(shape[0]) if rows.stop == -1 else rows.stop
        out = torch.empty((stop - rows.start, axes.shape[0]), dtype=dtype, device=axes.device)
        for s, block in row_blocks(X, rows):
            part = out[s - rows.start : s - rows.start + block.shape[0]]
            torch.matmul(block.to(device=axes.device, dtype=dtype), comps, out=part)
            if shift is not None:
                part -= shift
        return out
    parts = []
    for _, block in row_blocks(X, rows):
        y = block.to(device=axes.device, dtype=dtype) @ comps
        parts.append(y if shift is None else y - shift)
    if not parts:
        return torch.zeros((0, axes.shape[0]), dtype=dtype, device=axes.device)
    return torch.cat(parts, 0)
