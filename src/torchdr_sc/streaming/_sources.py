"""Streamed data sources: DataLoaders and row-sliceable on-disk matrices."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .._device import numeric_matrix
from .._logging import get_logger
from . import _constants as limits

logger = get_logger(__name__)


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
        Rows per chunk; default: about :data:`~._constants.CHUNK_BYTES` of float32.
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
        self.chunk_rows = chunk_rows or max(1, limits.CHUNK_BYTES // (4 * self.d))

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
    chunk = numeric_matrix(chunk, what)
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
