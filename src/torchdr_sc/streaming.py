"""Streamed input: embed data that is read chunk by chunk and never held whole in memory.

Every estimator's ``fit_transform`` accepts, besides an in-memory matrix:

- a :class:`torch.utils.data.DataLoader` that yields tensors ``(batch, features)``, or tuples /
  lists whose first element is such a tensor (TorchDR's contract). It is iterated several
  times, so it must yield the same rows in the same order every time (``shuffle=False``);
- an on-disk matrix read by row slices: the ``X`` of an AnnData opened with
  ``read_h5ad(path, backed='r')`` (an h5py dataset or anndata's backed CSR / CSC matrix:
  sparse chunks are densified one at a time), a zarr or h5py array, or any row-sliceable
  matrix wrapped in :class:`Chunked` (a numpy memmap, for instance).

Only the stages that need the data read it: the kNN graph and the PCA initialisation.
The input affinity and the optimisation then run as usual on the graph (``n x k`` values)
and the initial embedding (``n x n_components``).

kNN search (``backend`` of the estimator):

- ``'faiss'`` (``'auto'`` when faiss is installed): two passes. The first adds every chunk
  to a faiss index (exact ``IndexFlat`` up to :data:`~torchdr_sc.knn._faiss.FLAT_MAX_SAMPLES`
  rows, else ``IndexIVFFlat`` trained on the first chunks); the second queries the rows
  chunk by chunk. The index stores the rows in float32, so its memory is that of the data
  in float32 (no other copy is made).
- ``'torch'`` (``None``; ``'auto'`` without faiss): exact blockwise search with bounded
  memory. The rows to query are taken in blocks of ``QUERY_BYTES / 2`` (the block searched
  and the next one, filled meanwhile, fit :data:`QUERY_BYTES`); each block is compared
  with every chunk in one further pass over the data, distances in slices of
  :data:`SCORE_BYTES`. Memory stays ``O(QUERY_BYTES + CHUNK_BYTES + SCORE_BYTES)`` whatever
  the data size, at the cost of ``1 + n_blocks`` passes (two when the rows fit one block).

Memory besides the data: the PCA statistics are ``O(d^2)`` (a ``d x d`` float64 scatter
matrix and its eigendecomposition), and the graph and embedding ``O(n k)``.

PCA initialisation (``init='pca'``) is an exact incremental PCA (:class:`IncrementalPCA`:
streamed mean and covariance in float64, merged chunk by chunk), then the same
deterministic signs and rescaling as the in-memory initialisation.

Under ``torchrun`` every rank builds the whole index (or reads every chunk) but queries and
projects only the rows it owns; the rows are then all-gathered.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._device import resolve_device
from ._logging import get_logger
from .distributed import process_group_ready, resolve_distributed
from .embed.exact import RowShard
from .graph import KNNGraph, SparseAffinity

__all__ = [
    "CHUNK_BYTES",
    "QUERY_BYTES",
    "Chunked",
    "IncrementalPCA",
    "fit_streamed",
    "is_streamed",
    "streamed_knn",
]

logger = get_logger(__name__)

#: Rows read at once from an on-disk matrix: about this many bytes of float32.
CHUNK_BYTES = 64 * 2**20
#: The exact torch search queries blocks of rows of about this many bytes of float32.
QUERY_BYTES = 256 * 2**20
#: Bytes of one block of query x chunk distances in the exact torch search.
SCORE_BYTES = 64 * 2**20
#: Above this many features, PCA is fitted on the first :data:`PCA_SVD_ROWS` rows (as the
#: in-memory initialisation does) instead of the full covariance.
PCA_EXACT_MAX_FEATURES = 2048
PCA_SVD_ROWS = 20_000


# --------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------
class Chunked:
    """A row-sliceable matrix read in chunks of rows.

    Wrap any object with a 2-D ``shape`` whose row slices ``X[start:stop]`` return a numpy
    array, a scipy sparse matrix or a tensor (numpy memmap, h5py / zarr array, anndata's
    backed sparse matrix) to have estimators stream it instead of loading it.

    Parameters
    ----------
    X
        The matrix.
    chunk_rows
        Rows per chunk; default: about :data:`CHUNK_BYTES` of float32.
    """

    def __init__(self, X: Any, chunk_rows: int | None = None) -> None:
        shape = tuple(getattr(X, "shape", ()))
        if len(shape) != 2:
            msg = f"`X` must be a 2-D matrix (n_samples, n_features); got shape {shape}."
            raise ValueError(msg)
        if shape[0] == 0 or shape[1] == 0:
            msg = f"`X` is empty; got shape {shape}."
            raise ValueError(msg)
        if chunk_rows is not None and (
            isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1
        ):
            msg = f"`chunk_rows` must be a positive int or None; got {chunk_rows!r}."
            raise ValueError(msg)
        self.X = X
        self.n, self.d = int(shape[0]), int(shape[1])
        self.chunk_rows = chunk_rows or max(1, CHUNK_BYTES // (4 * self.d))

    def __repr__(self) -> str:
        return f"Chunked({type(self.X).__name__} {self.n}x{self.d}, chunk_rows={self.chunk_rows})"


def _is_backed_sparse(X: Any) -> bool:
    if "anndata" not in sys.modules:
        return False
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # pragma: no cover - anndata < 0.11
        return type(X).__name__.endswith(("CSRDataset", "CSCDataset", "SparseDataset"))
    return isinstance(X, CSRDataset | CSCDataset)


def is_streamed(X: Any) -> bool:
    """Whether ``X`` is read in chunks by :func:`fit_streamed` rather than loaded.

    True for a :class:`~torch.utils.data.DataLoader`, a :class:`Chunked` matrix, an h5py or
    zarr array, and anndata's backed sparse matrices (``adata.X`` of a backed AnnData).
    """
    if X is None or isinstance(X, np.ndarray | torch.Tensor):
        return False
    if isinstance(X, Chunked | torch.utils.data.DataLoader):
        return True
    module = type(X).__module__ or ""
    if module.startswith(("h5py", "zarr")) and len(getattr(X, "shape", ())) == 2:
        return True
    return _is_backed_sparse(X)


def _as_tensor(chunk: Any, what: str) -> torch.Tensor:
    """A chunk (numpy, scipy sparse, tensor) as a 2-D float tensor on its device."""
    if hasattr(chunk, "toarray"):  # scipy sparse: densify this chunk only
        chunk = chunk.toarray()
    if not isinstance(chunk, torch.Tensor):
        chunk = np.asarray(chunk)
        if not (np.issubdtype(chunk.dtype, np.number) or chunk.dtype == np.bool_):
            msg = f"{what} must hold numbers; got dtype {chunk.dtype}."
            raise TypeError(msg)
        chunk = torch.from_numpy(np.ascontiguousarray(chunk))
    if chunk.ndim != 2:
        msg = f"{what} must be 2-D (rows, features); got shape {tuple(chunk.shape)}."
        raise ValueError(msg)
    dtype = torch.float64 if chunk.dtype == torch.float64 else torch.float32
    return chunk.detach().to(dtype=dtype)


class _Source:
    """Chunks of rows of the streamed input, as float tensors."""

    n: int | None
    d: int | None
    like: Any

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first_row, rows)`` for the rows in ``[start, stop)``, in order."""
        raise NotImplementedError


class _ArraySource(_Source):
    def __init__(self, chunked: Chunked) -> None:
        self.X, self.n, self.d = chunked.X, chunked.n, chunked.d
        self.step = chunked.chunk_rows
        self.like = np.empty((0, 0), np.float32)

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        stop = self.n if stop is None else stop
        for s in range(start, stop, self.step):
            e = min(s + self.step, stop)
            x = _as_tensor(self.X[s:e], "a chunk of `X`")
            if x.shape != (e - s, self.d):
                msg = f"reading rows {s}:{e} of `X` gave shape {tuple(x.shape)}."
                raise ValueError(msg)
            yield s, x


class _LoaderSource(_Source):
    """A DataLoader's batches; every pass is checked against the first one.

    The first complete pass records, batch by batch, the running row count and value sum;
    later passes must reproduce them (a shuffling or randomly transformed loader would give
    the graph of other rows than the ones embedded).
    """

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            msg = (
                "The DataLoader shuffles its rows (shuffle=True): a streamed input is read "
                "several times and its rows are the embedded samples, so it must yield them "
                "in a fixed order; build it with shuffle=False."
            )
            raise ValueError(msg)
        self.loader = loader
        self.d: int | None = None
        self.like: Any = None
        self.record: list[tuple[int, float]] | None = None
        self.n = None
        if not getattr(loader, "drop_last", False):
            try:
                self.n = len(loader.dataset)
            except TypeError:  # an IterableDataset without __len__
                self.n = None

    def _batch(self, batch: Any) -> torch.Tensor:
        data = batch[0] if isinstance(batch, tuple | list) and len(batch) else batch
        if not isinstance(data, torch.Tensor | np.ndarray):
            msg = (
                "The DataLoader must yield tensors, or tuples whose first element is the "
                f"data tensor; got {type(data).__name__}."
            )
            raise TypeError(msg)
        x = _as_tensor(data, "A DataLoader batch")
        if self.like is None:
            self.like = data if isinstance(data, torch.Tensor) else x
        if self.d is None:
            self.d = int(x.shape[1])
        elif x.shape[1] != self.d:
            msg = f"DataLoader batches have {self.d} and {x.shape[1]} features; they must agree."
            raise ValueError(msg)
        return x

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        row, total = 0, 0.0
        recording = self.record is None
        seen: list[tuple[int, float]] = []
        for i, batch in enumerate(self.loader):
            x = self._batch(batch)
            b = x.shape[0]
            row += b
            total += float(x.sum(dtype=torch.float64))
            if recording:
                seen.append((row, total))
            else:
                self._check(i, row, total)
            lo = max(start, row - b)
            hi = row if stop is None else min(stop, row)
            if hi > lo:
                yield lo, x[lo - (row - b) : hi - (row - b)]
            if not recording and stop is not None and row >= stop:
                return
        if recording:
            self.record = seen
            if self.n is not None and row != self.n:
                msg = f"The DataLoader's dataset has {self.n} rows but the loader yielded {row}."
                raise ValueError(msg)
            self.n = row
        elif not self.record or row != self.record[-1][0]:  # it ended early
            self._fail()

    def _check(self, i: int, row: int, total: float) -> None:
        ok = i < len(self.record) and self.record[i][0] == row
        if not (ok and math.isclose(self.record[i][1], total, rel_tol=1e-9, abs_tol=1e-6)):
            self._fail()

    def _fail(self) -> None:
        msg = (
            "The DataLoader did not yield the same rows on every pass over it: a streamed "
            "input is read several times, so the loader must yield the same rows in the "
            "same order every time (shuffle=False, no random transforms)."
        )
        raise ValueError(msg)


def _source(X: Any) -> _Source:
    if isinstance(X, torch.utils.data.DataLoader):
        return _LoaderSource(X)
    return _ArraySource(X if isinstance(X, Chunked) else Chunked(X))


# --------------------------------------------------------------------------------------
# incremental PCA
# --------------------------------------------------------------------------------------
class IncrementalPCA:
    """Exact PCA of data seen chunk by chunk, in torch.

    Keeps the count, the mean and the scatter matrix in float64 and merges every chunk with
    Chan, Golub & LeVeque's pairwise update, so the result equals the PCA of all rows at
    once up to float64 round-off. Memory is ``O(d^2)`` for ``d`` features.

    Parameters
    ----------
    n_components
        Number of components.
    device
        Where the statistics are kept (default: the first chunk's device).

    Attributes
    ----------
    mean_
        ``(d,)`` mean of the rows seen (float64).
    components_
        ``(n_components, d)`` principal axes, by decreasing variance (after :meth:`finalize`).
    explained_variance_
        ``(n_components,)`` variances along the axes (after :meth:`finalize`).
    n_samples_seen_
        Rows seen.
    """

    def __init__(self, n_components: int, device: torch.device | str | None = None) -> None:
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            msg = f"`n_components` must be a positive int; got {n_components!r}."
            raise ValueError(msg)
        self.n_components = n_components
        self.device = None if device is None else torch.device(device)
        self.n_samples_seen_ = 0
        self.mean_: torch.Tensor | None = None
        self._scatter: torch.Tensor | None = None
        self.components_: torch.Tensor | None = None
        self.explained_variance_: torch.Tensor | None = None

    def partial_fit(self, x: torch.Tensor) -> IncrementalPCA:
        """Add the rows of ``x`` (``(b, d)``) to the statistics.

        Works on slices of about 2**20 values, so that the float64 temporaries stay small
        whatever the chunk size.
        """
        step = max(1, 2**20 // max(1, x.shape[1]))
        for s in range(0, x.shape[0], step):
            self._merge(x[s : s + step].to(device=self.device or x.device, dtype=torch.float64))
        return self

    def _merge(self, x: torch.Tensor) -> None:
        """Chan, Golub & LeVeque's update with the rows ``x`` (float64)."""
        b = x.shape[0]
        mean_b = x.mean(0)
        xc = x - mean_b
        scatter_b = xc.T @ xc
        if self.mean_ is None:
            self.device = x.device
            self.mean_, self._scatter, self.n_samples_seen_ = mean_b, scatter_b, b
            return
        if x.shape[1] != self.mean_.shape[0]:
            msg = f"chunks have {self.mean_.shape[0]} and {x.shape[1]} features; they must agree."
            raise ValueError(msg)
        n = self.n_samples_seen_
        total = n + b
        delta = mean_b - self.mean_
        self.mean_ = self.mean_ + delta * (b / total)
        self._scatter = self._scatter + scatter_b + torch.outer(delta, delta) * (n * b / total)
        self.n_samples_seen_ = total

    def finalize(self) -> IncrementalPCA:
        """Compute the principal axes from the statistics."""
        if self.mean_ is None:
            msg = "IncrementalPCA has seen no rows."
            raise ValueError(msg)
        evals, evecs = torch.linalg.eigh(self._scatter)
        order = torch.argsort(evals, descending=True)[: self.n_components]
        self.components_ = evecs[:, order].T.contiguous()
        self.explained_variance_ = evals[order] / max(1, self.n_samples_seen_ - 1)
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates of ``x`` on the axes, in ``x``'s dtype (zero-padded to n_components)."""
        if self.components_ is None:
            self.finalize()
        comps = self.components_.to(device=x.device, dtype=x.dtype)
        proj = (x - self.mean_.to(device=x.device, dtype=x.dtype)) @ comps.T
        return _pad_columns(proj, self.n_components)


class _SubsetPCA:
    """PCA of the first :data:`PCA_SVD_ROWS` rows, centred by the mean of all rows.

    What the in-memory initialisation does for more than
    :data:`PCA_EXACT_MAX_FEATURES` features, where a ``d x d`` covariance is too large.
    """

    def __init__(self, n_components: int) -> None:
        self.n_components = n_components
        self.rows: list[torch.Tensor] = []
        self.kept = 0
        self.total: torch.Tensor | None = None
        self.count = 0
        self.components_: torch.Tensor | None = None
        self.mean_: torch.Tensor | None = None

    def partial_fit(self, x: torch.Tensor) -> _SubsetPCA:
        s = x.to(torch.float64).sum(0)
        self.total = s if self.total is None else self.total + s
        self.count += x.shape[0]
        if self.kept < PCA_SVD_ROWS:
            take = x[: PCA_SVD_ROWS - self.kept]
            self.rows.append(take.clone())
            self.kept += take.shape[0]
        return self

    def finalize(self) -> _SubsetPCA:
        self.mean_ = self.total / self.count
        first = torch.cat(self.rows, 0)
        self.rows = []
        xc = first - self.mean_.to(first.dtype)
        _, _, v = torch.linalg.svd(xc, full_matrices=False)
        self.components_ = v[: self.n_components]
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        comps = self.components_.to(device=x.device, dtype=x.dtype)
        proj = (x - self.mean_.to(device=x.device, dtype=x.dtype)) @ comps.T
        return _pad_columns(proj, self.n_components)


def _pad_columns(proj: torch.Tensor, n_components: int) -> torch.Tensor:
    if proj.shape[1] >= n_components:
        return proj
    pad = proj.new_zeros((proj.shape[0], n_components - proj.shape[1]))
    return torch.cat([proj, pad], 1)


def _signed(proj: torch.Tensor) -> torch.Tensor:
    """The in-memory PCA init's sign rule: each column's largest-magnitude entry is positive."""
    idx = proj.abs().argmax(0)
    signs = torch.sign(proj[idx, torch.arange(proj.shape[1], device=proj.device)])
    return proj * torch.where(signs == 0, torch.ones_like(signs), signs)


# --------------------------------------------------------------------------------------
# kNN search: faiss index filled chunk by chunk
# --------------------------------------------------------------------------------------
class _Coordinates:
    """Search coordinates: rows normalised (cosine), else shifted by the first chunk's mean.

    The shift (any fixed vector: L2 and L1 distances are translation invariant) keeps the
    ``|x|^2 + |y|^2 - 2 x.y`` evaluation of float32 distances well conditioned for data far
    from the origin, as the in-memory search does with the exact mean.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.shift: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.metric == "cosine":
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            return x / norms.clamp_min(torch.finfo(x.dtype).tiny)
        if self.shift is None:
            self.shift = x.mean(0, keepdim=True)
        return x - self.shift.to(x.device)

    def inplace(self, x: torch.Tensor) -> torch.Tensor:
        """The same transformation, overwriting the float32 tensor ``x``."""
        if self.metric == "cosine":
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            return x.div_(norms.clamp_min_(torch.finfo(x.dtype).tiny))
        if self.shift is None:
            self.shift = x.mean(0, keepdim=True)
        return x.sub_(self.shift.to(x.device))


def _numpy32(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())


class _FaissSearch:
    """Flat or IVF faiss index filled chunk by chunk, then queried chunk by chunk.

    IVF (more than ``FLAT_MAX_SAMPLES`` rows, when the row count is known up front): the
    coarse quantizer is trained on the first ``40 * nlist`` rows, which are kept until then.
    """

    def __init__(self, metric: str, n: int | None, seed: int) -> None:
        from .knn._faiss import FLAT_MAX_SAMPLES, _faiss_metric, default_nlist, require_faiss

        self.faiss = require_faiss()
        self.metric = metric
        self.fmetric = _faiss_metric(self.faiss, metric)
        ivf = n is not None and n > FLAT_MAX_SAMPLES and metric != "manhattan"
        self.kind = "ivf" if ivf else "flat"
        self.nlist = default_nlist(n) if ivf else 0
        self.n_train = min(n, 40 * self.nlist) if ivf else 0
        self.seed = seed
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.index: Any = None
        self.quantizer: Any = None

    def add(self, xs: torch.Tensor) -> None:
        arr = _numpy32(xs)
        if self.index is None and self.kind == "flat":
            self.index = self.faiss.IndexFlat(arr.shape[1], self.fmetric)
        if self.index is not None:
            self.index.add(arr)
            return
        self.pending.append(arr)
        self.n_pending += arr.shape[0]
        if self.n_pending >= self.n_train:
            self._train()

    def _train(self) -> None:
        faiss = self.faiss
        train = np.concatenate(self.pending, 0)
        self.pending, self.n_pending = [], 0
        n, d = train.shape
        self.nlist = max(1, min(self.nlist, n))
        cp = faiss.ClusteringParameters()
        cp.niter, cp.seed, cp.max_points_per_centroid = 10, self.seed, 40
        cp.spherical = self.metric == "cosine"
        assign = faiss.IndexFlat(d, faiss.METRIC_INNER_PRODUCT if cp.spherical else faiss.METRIC_L2)
        clustering = faiss.Clustering(d, self.nlist, cp)
        clustering.train(train, assign)
        self.quantizer = faiss.IndexFlat(d, self.fmetric)  # the IVF index does not own it
        self.quantizer.add(faiss.vector_to_array(clustering.centroids).reshape(self.nlist, d))
        self.index = faiss.IndexIVFFlat(self.quantizer, d, self.nlist, self.fmetric)
        self.index.add(train)
        logger.info(
            "streamed kNN: faiss IVF index (nlist=%d) trained on the first %d rows", self.nlist, n
        )

    def finish(self) -> None:
        """Called after the last chunk (trains an IVF index that saw fewer rows than planned)."""
        if self.index is None:
            self._train()

    def search(self, xs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``(values, indices)`` of the ``k`` nearest rows of every row of ``xs``."""
        from .knn._faiss import default_nprobe

        arr = _numpy32(xs)
        if self.kind == "flat":
            return self.index.search(arr, k)
        nprobe = min(self.nlist, default_nprobe(self.nlist))
        self.index.nprobe = nprobe
        val, ind = self.index.search(arr, k)
        short = np.flatnonzero((ind < 0).any(axis=1))
        while short.size and nprobe < self.nlist:  # rows short of k hits: visit more lists
            nprobe = min(self.nlist, 4 * nprobe)
            self.index.nprobe = nprobe
            val[short], ind[short] = self.index.search(np.ascontiguousarray(arr[short]), k)
            short = short[(ind[short] < 0).any(axis=1)]
        return val, ind


def _to_metric(raw: torch.Tensor, metric: str) -> torch.Tensor:
    """faiss's values (squared L2, inner product of unit rows, L1) in ``metric`` units."""
    if metric == "cosine":
        return (1.0 - raw).clamp_min_(0.0)
    raw = raw.clamp_min_(0.0)
    return raw.sqrt_() if metric == "euclidean" else raw


def _drop_self_pairs(
    idx: torch.Tensor, dist: torch.Tensor, start: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove row ``start + r``'s own index from its ``k + 1`` sorted candidates.

    When the row is not among them (exact duplicates fill the list), the farthest candidate
    goes instead, so no row is ever its own neighbour.
    """
    m, kp1 = idx.shape
    own = torch.arange(start, start + m)[:, None]
    is_self = idx == own
    first = is_self & (is_self.cumsum(1) == 1)
    missing = ~first.any(1)
    first[missing, -1] = True
    keep = ~first
    return idx[keep].view(m, kp1 - 1), dist[keep].view(m, kp1 - 1)


# --------------------------------------------------------------------------------------
# kNN search: exact torch, one pass per block of query rows
# --------------------------------------------------------------------------------------
class _TopK:
    """Running ``k`` nearest rows of a block of query rows over the streamed chunks."""

    def __init__(self, q: torch.Tensor, start: int, k: int, metric: str) -> None:
        self.q, self.start, self.k, self.metric = q, start, k, metric
        m = q.shape[0]
        self.dist = torch.full((m, k), float("inf"), dtype=q.dtype, device=q.device)
        self.idx = torch.full((m, k), -1, dtype=torch.int64, device=q.device)
        self.q_sq = (q * q).sum(1)

    def update(self, start: int, xs: torch.Tensor) -> None:
        """Merge the rows ``xs`` (rows ``start...`` of the data) into the running lists.

        Query rows are taken in steps whose ``step x b`` distance block fits
        :data:`SCORE_BYTES`; the block's own ``k`` best are merged with the running ``k``
        best (``2k`` candidates), so no ``(step, k + b)`` copy is made.
        """
        m, b = self.q.shape[0], xs.shape[0]
        k = self.k
        step = max(1, SCORE_BYTES // max(1, 4 * b))
        x_sq = (xs * xs).sum(1) if self.metric in ("sqeuclidean", "euclidean") else None
        for s in range(0, m, step):
            e = min(s + step, m)
            q = self.q[s:e]
            if self.metric == "manhattan":
                d = torch.cdist(q, xs, p=1.0)
            elif self.metric == "cosine":
                d = torch.addmm(torch.ones((), dtype=q.dtype, device=q.device), q, xs.T, alpha=-1.0)
            else:
                d = torch.addmm(x_sq[None, :], q, xs.T, alpha=-2.0).add_(self.q_sq[s:e, None])
            d.clamp_min_(0.0)
            lo, hi = max(self.start + s, start), min(self.start + e, start + b)
            if hi > lo:  # a query row is never its own neighbour
                own = torch.arange(lo, hi, device=d.device)
                d[own - self.start - s, own - start] = float("inf")
            kb = min(k, b)
            cand_d, cand_p = torch.topk(d, kb, dim=1, largest=False, sorted=False)
            del d
            both_d = torch.cat([self.dist[s:e], cand_d], 1)
            both_i = torch.cat([self.idx[s:e], cand_p.add_(start)], 1)
            best, pos = torch.topk(both_d, k, dim=1, largest=False, sorted=True)
            self.dist[s:e] = best
            self.idx[s:e] = torch.gather(both_i, 1, pos)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, distances)`` in the metric's units."""
        dist = self.dist.sqrt() if self.metric == "euclidean" else self.dist
        return self.idx, dist


# --------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------
@dataclass
class StreamResult:
    """What :func:`streamed_knn` computed for the rows of one shard.

    Attributes
    ----------
    indices, distances
        ``(m, k)`` kNN rows of the shard, on CPU (``None`` when no search was asked).
    projection
        ``(m, n_components)`` PCA coordinates of the shard's rows, on CPU (``None``
        without PCA).
    n
        Number of rows of the whole input.
    shard
        The rows the result is about.
    passes
        Passes made over the input.
    backend
        ``'faiss'`` or ``'torch'`` (``None`` without search).
    like
        The first DataLoader batch (output format), else ``None``.
    """

    indices: torch.Tensor | None
    distances: torch.Tensor | None
    projection: torch.Tensor | None
    n: int
    shard: RowShard
    passes: int
    backend: str | None
    like: Any = None


def _stream_backend(backend: str | None) -> str:
    """Search used for streamed input: faiss for 'auto' when installed, else exact torch."""
    from .knn._faiss import require_faiss

    if backend == "auto":
        try:
            require_faiss()
        except ImportError:
            logger.info("streamed kNN: faiss is not installed; exact blockwise torch search")
            return "torch"
        return "faiss"
    if backend in (None, "torch"):
        return "torch"
    if backend == "faiss":
        require_faiss()
        return "faiss"
    msg = (
        f"backend={backend!r} cannot search a streamed input; use backend='faiss' (an index "
        "filled chunk by chunk), 'torch' (exact, bounded memory) or 'auto'."
    )
    raise ValueError(msg)


def _source(X: Any) -> _Source:
    if isinstance(X, torch.utils.data.DataLoader):
        return _LoaderSource(X)
    return _ArraySource(X if isinstance(X, Chunked) else Chunked(X))


class _PCAHolder:
    """Incremental PCA chosen at the first chunk (exact covariance or first-rows SVD)."""

    def __init__(self, n_components: int, device: torch.device) -> None:
        self.n_components, self.device = n_components, device
        self.pca: IncrementalPCA | _SubsetPCA | None = None

    def add(self, x: torch.Tensor) -> None:
        if self.pca is None:
            small = x.shape[1] <= PCA_EXACT_MAX_FEATURES
            self.pca = (
                IncrementalPCA(self.n_components, self.device)
                if small
                else _SubsetPCA(self.n_components)
            )
        self.pca.partial_fit(x.to(self.device))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """PCA coordinates of ``x``, row slices at a time (small temporaries), on CPU."""
        step = max(1, 2**20 // max(1, x.shape[1]))
        parts = [
            self.pca.transform(x[s : s + step].to(self.device, torch.float32)).float().cpu()
            for s in range(0, x.shape[0], step)
        ]
        return torch.cat(parts)


def streamed_knn(
    X: Any,
    k: int | Callable[[int], int] | None,
    *,
    backend: str | None = "auto",
    metric: str = "sqeuclidean",
    n_components: int | None = None,
    shard: RowShard | Callable[[int], RowShard] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    check_n: Callable[[int], None] | None = None,
) -> StreamResult:
    """k nearest neighbours (and PCA coordinates) of the rows of a streamed input.

    Parameters
    ----------
    X
        A :class:`~torch.utils.data.DataLoader`, a :class:`Chunked` matrix or an on-disk
        array (see :func:`is_streamed`).
    k
        Neighbours per row, self excluded (or a function of the number of rows); ``None``:
        no search (PCA only).
    backend
        ``'auto'`` (faiss when installed, else torch), ``'faiss'``, ``'torch'`` / ``None``.
    metric
        ``'sqeuclidean'``, ``'euclidean'``, ``'cosine'`` or ``'manhattan'``.
    n_components
        Also compute PCA coordinates on this many components (``None``: no PCA).
    shard
        Rows whose neighbours (and coordinates) are returned, or a function of the number
        of rows giving them; every row is searched among. Default: all rows.
    device
        Device of the exact torch search and of the PCA statistics (faiss runs on CPU).
    seed
        Seeds the IVF training of large faiss indexes.
    check_n
        Called with the number of rows as soon as it is known, before any search (to
        validate parameters such as the perplexity against it).

    Returns
    -------
    StreamResult
        The shard's kNN rows and PCA coordinates.

    Raises
    ------
    ValueError
        NaN / inf rows (counted), a DataLoader that shuffles or does not repeat itself, an
        unknown backend.
    """
    from ._validation import check_option
    from .graph import METRICS

    check_option("metric", metric, METRICS)
    src = _source(X)
    device = torch.device(device)
    name = None if k is None else _stream_backend(backend)
    search = _Search(src, name, k, metric, shard, device, seed, check_n)
    pca = _PCAHolder(n_components, device) if n_components is not None else None
    search.first_pass(pca)
    if name == "faiss":
        idx, dist, proj = search.faiss_pass(pca)
    elif name == "torch":
        idx, dist, proj = search.torch_passes(pca)
    else:
        idx = dist = None
        proj = torch.cat([pca.transform(x) for _, x in search.read_shard()]) if pca else None
    like = src.like if isinstance(src, _LoaderSource) else None
    return StreamResult(idx, dist, proj, search.n, search.shard, search.passes, name, like)


class _Search:
    """State of one streamed search: the passes over the input and their bookkeeping."""

    def __init__(
        self,
        src: _Source,
        name: str | None,
        k: Any,
        metric: str,
        shard: Any,
        device: torch.device,
        seed: int,
        check_n: Callable[[int], None] | None,
    ) -> None:
        self.src, self.name, self.k_arg, self.metric = src, name, k, metric
        self.shard_arg, self.device, self.check_n = shard, device, check_n
        self.coords = _Coordinates(metric)
        self.n: int = -1
        self.k = 0
        self.shard = RowShard(0, 0)
        self.passes = 0
        self.block: torch.Tensor | None = None
        self.filled = 0
        self.q_lo = 0
        self.faiss = _FaissSearch(metric, src.n, seed) if name == "faiss" else None
        if src.n is not None:
            self._settle(src.n)

    def _settle(self, n: int) -> None:
        """Fix the row count, k and the shard; validate before any search."""
        self.n = n
        if self.check_n is not None:
            self.check_n(n)
        shard = self.shard_arg(n) if callable(self.shard_arg) else self.shard_arg
        self.shard = RowShard.full(n) if shard is None else shard
        self.q_lo = self.shard.start
        if self.k_arg is not None:
            self.k = int(self.k_arg(n) if callable(self.k_arg) else self.k_arg)
            if not 1 <= self.k <= n - 1:
                msg = f"k ({self.k}) must be in [1, n_samples - 1] = [1, {n - 1}]."
                raise ValueError(msg)

    def first_pass(self, pca: _PCAHolder | None) -> None:
        """Validate every row, fill the faiss index and the PCA statistics; the torch
        search also keeps its first block of query rows."""
        bad = rows = 0
        for start, x in self.src.chunks():
            bad += int((~torch.isfinite(x).all(1)).sum())
            rows = start + x.shape[0]
            if bad:
                continue
            if pca is not None:
                pca.add(x)
            if self.name == "faiss":
                self.faiss.add(self.coords(x))
            elif self.name == "torch" and self.n >= 0:
                self._collect(start, x)
        self.passes += 1
        if bad:
            msg = (
                f"`X` holds NaN or inf values in {bad} of {rows} rows; remove or impute them first."
            )
            raise ValueError(msg)
        if self.n < 0:
            self._settle(rows)
        if pca is not None:
            pca.pca.finalize()

    def read_shard(self) -> Iterator[tuple[int, torch.Tensor]]:
        """The shard's rows (a random-access source reads only them)."""
        self.passes += 1
        yield from self.src.chunks(self.shard.start, self.shard.stop)

    def faiss_pass(self, pca: _PCAHolder | None) -> tuple[Any, Any, Any]:
        self.faiss.finish()
        idx_parts, dist_parts, proj_parts = [], [], []
        for start, x in self.read_shard():
            val, ind = self.faiss.search(self.coords(x), self.k + 1)
            i = torch.from_numpy(ind.astype(np.int64, copy=False))
            d = _to_metric(torch.from_numpy(np.asarray(val, dtype=np.float32)), self.metric)
            i, d = _drop_self_pairs(i, d, start)
            idx_parts.append(i)
            dist_parts.append(d)
            if pca is not None:
                proj_parts.append(pca.transform(x))
        proj = torch.cat(proj_parts) if proj_parts else None
        return torch.cat(idx_parts), torch.cat(dist_parts), proj

    def _collect(self, start: int, x: torch.Tensor) -> None:
        """Copy the rows of ``x`` that belong to the next query block into its buffer.

        The buffer holds about ``QUERY_BYTES / 2`` of float32: the block being searched and
        the next one being collected fit :data:`QUERY_BYTES` together.
        """
        if self.block is None:
            rows = max(1, QUERY_BYTES // (8 * x.shape[1]))
            rows = min(rows, self.shard.stop - self.q_lo)
            self.block = torch.empty((rows, x.shape[1]), dtype=torch.float32, device=self.device)
            self.filled = 0
        lo = self.q_lo + self.filled
        hi = self.q_lo + self.block.shape[0]
        a, b = max(lo, start), min(hi, start + x.shape[0])
        if b > a and a == lo:
            self.block[self.filled : self.filled + b - a] = x[a - start : b - start]
            self.filled += b - a

    def torch_passes(self, pca: _PCAHolder | None) -> tuple[Any, Any, Any]:
        """Exact search: each pass compares one block of query rows with every chunk."""
        idx_parts, dist_parts, proj_parts = [], [], []
        while self.q_lo < self.shard.stop:
            top = None
            if self.block is not None:
                if self.filled != self.block.shape[0]:
                    msg = "internal error: a streamed query block was not filled."
                    raise RuntimeError(msg)
                q, self.block = self.block, None
                if pca is not None:
                    proj_parts.append(pca.transform(q))
                top = _TopK(self.coords.inplace(q), self.q_lo, self.k, self.metric)
                self.q_lo += q.shape[0]
            for start, x in self.src.chunks():
                if top is not None:
                    top.update(start, self.coords(x.to(self.device)))
                if self.q_lo < self.shard.stop:
                    self._collect(start, x)
            self.passes += 1
            if top is not None:
                i, d = top.result()
                idx_parts.append(i.cpu())
                dist_parts.append(d.cpu())
        proj = torch.cat(proj_parts) if proj_parts else None
        return torch.cat(idx_parts), torch.cat(dist_parts), proj


def _seed_of(random_state: Any) -> int:
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return int(random_state) % (2**31 - 1)
    return 0


def fit_streamed(
    est: Any,
    X: Any,
    *,
    affinity: SparseAffinity | None = None,
    knn: KNNGraph | None = None,
) -> tuple[torch.Tensor, Any]:
    """Run an :class:`~torchdr_sc.estimators.Embedder` on a streamed input ``X``.

    Reads ``X`` in chunks to build the kNN graph (unless ``affinity`` or ``knn`` is given)
    and the PCA initialisation (when ``init='pca'``), then runs the estimator's affinity
    and optimisation on them. Records ``est.stream_info_`` (rows, passes, backend, seconds)
    and the reading time as ``est.timings_['knn']``.

    Returns
    -------
    embedding : torch.Tensor
        The embedding.
    like
        What the output format follows: the first batch of a DataLoader (tensor output),
        else an empty float32 numpy array (numpy output).

    Raises
    ------
    ValueError
        For a method whose affinity needs all pairs of samples, a shuffling DataLoader,
        NaN / inf rows, or parameters that do not fit the number of rows.
    RuntimeError
        ``distributed=True`` without a process group.
    """
    if getattr(est, "_affinity_from_data", None) is not None:
        msg = (
            f"{type(est).__name__} computes its affinity from all pairs of samples, which "
            "needs the data in memory: pass an array or tensor instead of a streamed input."
        )
        raise ValueError(msg)
    if est.distributed is True and not process_group_ready():
        resolve_distributed(True, 0)  # raises, with the torchrun command
    t0 = time.perf_counter()
    need_search = affinity is None and knn is None
    pca = isinstance(est.init, str) and est.init == "pca"
    device = resolve_device(est.device, None)

    def neighbours(n: int) -> int:
        return min(est._neighbours_needed_for(n), n - 1)

    def shard(n: int) -> RowShard:
        return resolve_distributed(est.distributed, n).shard

    result = streamed_knn(
        X,
        neighbours if need_search else None,
        backend=est.backend,
        metric=est.metric_in,
        n_components=int(est.n_components) if pca else None,
        shard=shard,
        device=device,
        seed=_seed_of(est.random_state),
        check_n=est._check_data,
    )
    n = result.n
    ctx = resolve_distributed(est.distributed, n)
    gather = (lambda t: ctx.all_gather_rows(t.to(device), n).cpu()) if ctx.active else (lambda t: t)
    graph = knn
    if need_search:
        graph = KNNGraph(gather(result.indices), gather(result.distances), est.metric_in)
    init = None
    if pca:
        from .embed.init import _rescale

        init = _rescale(_signed(gather(result.projection)), est._default_init_scaling())
    t_read = time.perf_counter() - t0
    logger.info(
        "streamed input: %d rows read in %d passes, kNN backend %s (%.2fs)",
        n,
        result.passes,
        result.backend,
        t_read,
    )
    z = est._fit(None, affinity, graph, init=init)
    est.timings_["knn"] = t_read
    est.stream_info_ = {
        "n_samples": n,
        "passes": result.passes,
        "backend": result.backend,
        "read_s": t_read,
    }
    like = result.like if result.like is not None else np.empty((0, 0), np.float32)
    return z, like
