"""``pp.pca``: scanpy's ``pp.pca`` on the torch PCA (dense, sparse, backed, row-sharded).

The signature, defaults and written keys are scanpy 1.11's. The PCA itself is
:class:`~torchdr_sc.estimators.PCA`: a sparse matrix is read in blocks of rows and never
densified or centred whole, a backed AnnData's ``X`` is streamed from disk, and under
``torchrun`` every rank reads only its share of the rows (the coordinates are then gathered,
so every rank holds the same result).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import check_number, check_option
from ..adata import Changes, check_str, commit, in_memory_copy, log
from ..distributed import resolve_distributed
from ..estimators import PCA
from ..streaming import Chunked, is_streamed, prepare_matrix

if TYPE_CHECKING:
    from anndata import AnnData

#: scanpy's ``svd_solver`` names -> the solver used here. Every exact scanpy solver maps to
#: ``'auto'`` (exact up to ``streaming.EXACT_MAX_FEATURES`` features, randomised beyond).
SVD_SOLVERS = {
    None: "auto",
    "auto": "auto",
    "arpack": "auto",
    "covariance_eigh": "covariance_eigh",
    "full": "auto",
    "lobpcg": "auto",
    "randomized": "randomized",
    "tsqr": "auto",
}

#: scanpy's default number of components (``settings.N_PCS``).
N_COMPS = 50


class _Empty:
    """Marker of an argument left at its default (scanpy's ``_empty``)."""

    def __repr__(self) -> str:
        return "<default>"


_EMPTY = _Empty()


class _Window:
    """Rows ``[start, stop)`` and the columns ``cols`` of a matrix, read lazily by row slices."""

    def __init__(self, X: Any, start: int, stop: int, cols: np.ndarray | None) -> None:
        self.X, self.start, self.cols = X, start, cols
        width = X.shape[1] if cols is None else int(cols.size)
        self.shape = (stop - start, width)

    def __getitem__(self, rows: slice) -> Any:
        s, e, _ = rows.indices(self.shape[0])
        block = self.X[self.start + s : self.start + e]
        return block if self.cols is None else block[:, self.cols]


def _mask(adata: AnnData, mask_var: Any, use_highly_variable: bool | None) -> tuple[Any, Any]:
    """``(recorded value, boolean mask or None)`` for scanpy's ``mask_var`` rules."""
    if use_highly_variable is not None:
        warnings.warn(
            "`use_highly_variable` is deprecated (as in scanpy); pass "
            "mask_var='highly_variable' for True, mask_var=None for False.",
            FutureWarning,
            stacklevel=3,
        )
        if mask_var is not _EMPTY:
            msg = (
                "`use_highly_variable` and `mask_var` are incompatible; pass only "
                "mask_var='highly_variable' (or mask_var=None)."
            )
            raise ValueError(msg)
    if use_highly_variable or (
        use_highly_variable is None and mask_var is _EMPTY and "highly_variable" in adata.var
    ):
        mask_var = "highly_variable"
    if mask_var is _EMPTY or mask_var is None:
        return None, None
    if isinstance(mask_var, str):
        if mask_var not in adata.var:
            shown = ", ".join(repr(c) for c in sorted(map(str, adata.var.columns))) or "none"
            msg = f"`mask_var={mask_var!r}` is not a column of adata.var (available: {shown})."
            raise ValueError(msg)
        return mask_var, adata.var[mask_var].to_numpy(dtype=bool)
    mask = np.asarray(mask_var)
    if mask.dtype != bool or mask.shape != (adata.n_vars,):
        msg = (
            f"`mask_var` must be a var column name or a boolean array of length {adata.n_vars}; "
            f"got an array of dtype {mask.dtype} and shape {mask.shape}."
        )
        raise ValueError(msg)
    return mask, mask


def _n_comps(n_comps: int | None, n_obs: int, n_vars: int) -> int:
    """scanpy's default (50, or one less than the smaller side when that is <= 50), checked."""
    if n_vars == 0:
        msg = (
            "`mask_var` selects no genes; select at least two "
            "(e.g. run sc.pp.highly_variable_genes)."
        )
        raise ValueError(msg)
    smaller = min(n_obs, n_vars)
    if n_comps is None:
        return smaller - 1 if smaller <= N_COMPS else N_COMPS
    check_number("n_comps", n_comps, kind=int, low=1, closed="left")
    if n_comps > smaller:
        msg = (
            f"`n_comps` ({n_comps}) must be at most min(n_obs, n_vars) = {smaller} "
            "(genes after `mask_var`); pass a smaller n_comps."
        )
        raise ValueError(msg)
    return n_comps


def _check_options(svd_solver: Any, chunk_size: Any, dtype: Any, key_added: Any) -> np.dtype:
    check_option("svd_solver", svd_solver, SVD_SOLVERS)
    if chunk_size is not None:
        check_number("chunk_size", chunk_size, kind=int, low=1, closed="left")
    check_str("key_added", key_added, optional=True)
    try:
        out = np.dtype(dtype)
    except TypeError as err:
        msg = f"`dtype` must be a numpy float dtype such as 'float32'; got {dtype!r}."
        raise ValueError(msg) from err
    if out.kind != "f":
        msg = f"`dtype` must be a numpy float dtype such as 'float32'; got {dtype!r}."
        raise ValueError(msg)
    return out


def _matrix(adata: AnnData, layer: str | None) -> Any:
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        shown = ", ".join(repr(k) for k in sorted(adata.layers.keys())) or "none"
        msg = f"`layer={layer!r}` is not in adata.layers (available: {shown})."
        raise ValueError(msg)
    return adata.layers[layer]


def _source(x: Any, mask: np.ndarray | None, rows: tuple[int, int], what: str) -> Any:
    """What the estimator reads: in memory, the masked columns (checked); on disk, a window."""
    start, stop = rows
    if is_streamed(x):
        cols = None if mask is None else np.flatnonzero(mask)
        return Chunked(_Window(x, start, stop, cols))
    if sp.issparse(x) or isinstance(x, np.ndarray | torch.Tensor):
        part = x[start:stop]
        part = part if mask is None else part[:, mask]
    else:
        part = np.asarray(x)[start:stop]
        part = part if mask is None else part[:, mask]
    return prepare_matrix(part, what)


def _fit(
    x: Any, mask: Any, n_comps: int, solver: str, zero_center: bool, seed: Any, **kw: Any
) -> tuple[np.ndarray, PCA]:
    """PCA of this rank's rows; the coordinates of all rows, gathered over the ranks."""
    n = int(x.shape[0])
    ctx = resolve_distributed(kw["distributed"], n)
    rows = (ctx.shard.start, ctx.shard.stop)
    est = PCA(
        n_comps,
        device=kw["device"],
        distributed=kw["distributed"],
        random_state=seed,
        svd_solver=solver,
        zero_center=zero_center,
    )
    local = est.fit_transform(_source(x, mask, rows, kw["what"]))
    z = torch.as_tensor(np.asarray(local, dtype=np.float32))
    if ctx.active:
        z = ctx.all_gather_rows(z, n)
    return z.numpy(), est


def pca(
    data: AnnData | np.ndarray | sp.spmatrix,
    n_comps: int | None = None,
    *,
    layer: str | None = None,
    zero_center: bool = True,
    svd_solver: str | None = None,
    chunked: bool = False,
    chunk_size: int | None = None,
    random_state: Any = 0,
    return_info: bool = False,
    mask_var: Any = _EMPTY,
    use_highly_variable: bool | None = None,
    dtype: Any = "float32",
    key_added: str | None = None,
    copy: bool = False,
    device: Any = "auto",
    distributed: bool | str = "auto",
) -> Any:
    """Principal component analysis with scanpy's signature, on the torch PCA.

    Parameters
    ----------
    data
        An AnnData (its ``X``, or ``layer``; a backed one is streamed from disk), or a dense
        / scipy sparse matrix (the coordinates are returned).
    n_comps
        Components; default 50, or ``min(n_obs, n_vars) - 1`` when that is smaller.
    layer
        ``adata.layers[layer]`` instead of ``X``.
    zero_center
        Centre the genes (PCA); ``False`` is scanpy's truncated SVD of the uncentred data.
        Sparse data is never centred in memory either way.
    svd_solver
        scanpy's names: ``'randomized'`` is subspace iteration, ``'covariance_eigh'`` the
        exact covariance eigendecomposition, and every other (``'arpack'``, ``'full'``, ...,
        ``None``) ``'auto'``: exact up to 4096 genes, randomised beyond.
    chunked, chunk_size
        scanpy's incremental PCA switch: here every PCA reads its input in blocks, so
        ``chunked=True`` only forces ``zero_center=True`` as scanpy's does.
    random_state
        Seed of the randomised solver.
    return_info
        For array input: also return the axes, variance ratios and variances.
    mask_var
        Genes used: a ``var`` column name or a boolean array; by default
        ``'highly_variable'`` when that column exists; ``None`` for all genes.
    use_highly_variable
        Deprecated spelling of ``mask_var='highly_variable'`` (``FutureWarning``).
    dtype
        dtype of the coordinates.
    key_added
        Keys of ``obsm``, ``varm`` and ``uns``; default ``'X_pca'``, ``'PCs'``, ``'pca'``.
    copy
        Return a new AnnData instead of writing into ``data``.
    device
        'auto' (CUDA when available), 'cpu' or 'cuda'.
    distributed
        'auto': under ``torchrun`` each rank reads its rows of the same object and every
        rank gets the whole result; ``False``: this process reads everything.

    Returns
    -------
    For array input the coordinates (with ``return_info``, ``(coordinates, components,
    variance_ratio, variance)``); else ``None``, or the new AnnData with ``copy=True``.
    Sets ``obsm['X_pca']`` (coordinates), ``varm['PCs']`` (loadings; zero rows for genes
    outside ``mask_var``) and ``uns['pca']`` (``params``, ``variance``, ``variance_ratio``).
    """
    from anndata import AnnData

    out_dtype = _check_options(svd_solver, chunk_size, dtype, key_added)
    check_option("zero_center", zero_center, (True, False))
    check_option("chunked", chunked, (True, False))
    start = log.info("computing PCA")
    is_adata = isinstance(data, AnnData)
    adata = data if is_adata else AnnData(data)
    recorded, mask = _mask(adata, mask_var, use_highly_variable)
    n_vars = adata.n_vars if mask is None else int(mask.sum())
    n_comps = _n_comps(n_comps, adata.n_obs, n_vars)
    log.info(f"    with n_comps={n_comps}")
    what = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    x = _matrix(adata, layer)
    z, est = _fit(
        x,
        mask,
        n_comps,
        SVD_SOLVERS[svd_solver],
        zero_center or chunked,
        random_state,
        device=device,
        distributed=distributed,
        what=what,
    )
    x_pca = z.astype(out_dtype, copy=False)
    comps = est.components_.cpu().numpy()
    ratio = est.explained_variance_ratio_.cpu().numpy()
    variance = est.explained_variance_.cpu().numpy()
    if not is_adata:
        log.info("    finished", time=start)
        return (x_pca, comps, ratio, variance) if return_info else x_pca
    params = _params(recorded, layer, zero_center)
    uns = {"params": params, "variance": variance, "variance_ratio": ratio}
    changes = _changes(adata, x_pca, comps, mask, uns, key_added)
    target = in_memory_copy(adata) if copy else adata
    commit(target, changes)
    log.info("    finished", time=start, deep=changes.summary())
    return target if copy else None


def _params(recorded: Any, layer: str | None, zero_center: bool) -> dict[str, Any]:
    """``uns['pca']['params']`` as scanpy writes it, without ``None`` values."""
    params: dict[str, Any] = {
        "zero_center": bool(zero_center),
        "use_highly_variable": isinstance(recorded, str) and recorded == "highly_variable",
    }
    if recorded is not None:
        params["mask_var"] = recorded
    if layer is not None:
        params["layer"] = layer
    return params


def _changes(
    adata: AnnData,
    x_pca: np.ndarray,
    comps: np.ndarray,
    mask: np.ndarray | None,
    uns: dict[str, Any],
    key_added: str | None,
) -> Changes:
    """The writes of ``pp.pca`` in scanpy 1.11's layout; genes outside ``mask`` load zero."""
    key_obsm, key_varm, key_uns = ("X_pca", "PCs", "pca") if key_added is None else [key_added] * 3
    if mask is None:
        loadings = comps.T
    else:
        loadings = np.zeros((adata.n_vars, comps.shape[0]))
        loadings[mask] = comps.T
    changes = Changes()
    changes.add("obsm", key_obsm, x_pca, "the PCA coordinates")
    changes.add("varm", key_varm, loadings, "the loadings")
    changes.add("uns", key_uns, uns, "parameters, variance and variance ratio")
    return changes
