"""Incremental PCAs with TorchDR's API: exact (``d x d`` statistics) and approximate (SVD update).

:class:`ExactIncrementalPCA` accumulates the count, mean and scatter matrix batch by batch
(:class:`torchdr_sc.streaming.IncrementalPCA`, the statistics the streamed ``init='pca'``
uses) and diagonalises them: the result is the PCA of all rows seen, whatever the batches.
:class:`IncrementalPCA` is scikit-learn's single-pass approximation
(:class:`torchdr_sc.streaming.IncrementalSVD`), for data with too many features for a
``d x d`` matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from .._device import resolve_device, to_output
from .._random import make_generator, resolve_seed
from .._validation import check_number, check_option
from ..streaming import (
    SVD_DRIVERS,
    IncrementalSVD,
    is_streamed,
    prepare_matrix,
    project_rows,
    row_blocks,
    top_axes,
)
from ..streaming import IncrementalPCA as ExactStatistics
from .pca import ALL_ROWS, broadcast_same, check_distributed, data_dtype, process_context


def _is_matrix(X: Any) -> bool:
    return isinstance(X, np.ndarray | torch.Tensor) or hasattr(X, "tocsr") or is_streamed(X)


def _batches(X: Any) -> Iterator[Any]:
    """Blocks of rows of a matrix, or the items of an iterable of batches (``(X, y)`` too)."""
    if _is_matrix(X):
        for _, block in row_blocks(prepare_matrix(X), ALL_ROWS):
            yield block
        return
    if not isinstance(X, Iterable):
        msg = f"`X` must be a matrix or an iterable of batches; got {type(X).__name__}."
        raise TypeError(msg)
    for batch in X:
        yield batch[0] if isinstance(batch, list | tuple) else batch


def _tensor(batch: Any, device: torch.device) -> torch.Tensor:
    x = prepare_matrix(batch, "a batch of `X`")
    if hasattr(x, "toarray"):
        x = torch.from_numpy(np.asarray(x.toarray()))
    return torch.as_tensor(x).to(device=device, dtype=torch.float64)


class _Projection(TransformerMixin, BaseEstimator):
    """``transform`` for the incremental PCAs: ``(X - mean_) @ components_.T``."""

    def transform(self, X: Any) -> Any:
        """Coordinates of ``X`` on the principal axes."""
        if getattr(self, "components_", None) is None:
            msg = f"This {type(self).__name__} is not fitted yet: call fit(X) first."
            raise ValueError(msg)
        z = project_rows(
            prepare_matrix(X), ALL_ROWS, self.mean_.reshape(-1), self.components_, self._dtype
        )
        return to_output(z, X)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit on ``X`` and return its coordinates on the principal axes.

        Parameters
        ----------
        X
            ``(n_samples, n_features)`` matrix (dense, sparse or streamed).
        y
            Ignored.
        """
        return self.fit(X).transform(X)


class ExactIncrementalPCA(_Projection):
    """Exact PCA of batches of rows: mean and covariance accumulated, then diagonalised.

    Memory is ``O(d^2)`` for ``d`` features, whatever the number of rows. Batches are merged
    with Chan et al.'s pairwise update, so unlike TorchDR no separate pass for the mean is
    needed (:meth:`compute_mean` is kept for TorchDR's two-pass calls).

    Parameters
    ----------
    n_components
        Components kept.
    device
        Where the statistics live: 'auto' (a tensor's device, else CUDA when available),
        'cpu', 'cuda'.
    distributed
        ``'auto'``: under a process group of 2+ ranks each rank gives its own rows and the
        statistics are summed over the ranks when the axes are computed (a collective: every
        rank makes the same calls); ``True`` requires a group; ``False``: this process only.
    verbose
        Unused; TorchDR's parameter.
    random_state
        Unused (the method draws nothing); recorded as ``seed_`` for TorchDR's API.

    Attributes
    ----------
    mean_
        ``(n_features,)`` mean of the rows seen (TorchDR's shape for this class).
    components_
        ``(n_components, n_features)`` axes, largest-magnitude entry positive.
    explained_variance_, explained_variance_ratio_
        Variance along each axis (``n - 1`` in the denominator, as :class:`PCA` and
        scikit-learn; TorchDR divides by ``n``) and its share of the total.
    n_samples_seen_, n_features_in_
        Rows seen (over all ranks) and features.
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        device: Any = "auto",
        distributed: bool | str = "auto",
        verbose: bool = False,
        random_state: Any = None,
    ) -> None:
        self.n_components = n_components
        self.device = device
        self.distributed = distributed
        self.verbose = verbose
        self.random_state = random_state

    def _start(self, X: Any) -> None:
        check_number("n_components", self.n_components, kind=int, low=1, closed="left")
        check_distributed(self.distributed)
        self._device = resolve_device(self.device, X if isinstance(X, torch.Tensor) else None)
        self._dtype = data_dtype(X) if _is_matrix(X) else torch.float32
        self._stats = ExactStatistics(self.n_components, self._device)
        self.components_ = None

    def compute_mean(self, X_batches: Any) -> ExactIncrementalPCA:
        """Mean of the rows of ``X_batches`` (TorchDR's first pass); resets the statistics."""
        self._start(X_batches)
        for batch in _batches(X_batches):
            self._stats.partial_fit(_tensor(batch, self._device))
        stats = self._stats.reduced(process_context(self.distributed))
        self.mean_ = stats.mean_.to(self._dtype)
        self.n_samples_seen_, self.n_features_in_ = stats.n_samples_seen_, stats.mean_.shape[0]
        self._stats = ExactStatistics(self.n_components, self._device)
        return self

    def partial_fit(self, X: Any, y: Any = None) -> ExactIncrementalPCA:
        """Add the rows of ``X`` and recompute the axes (a collective under a process group)."""
        if not hasattr(self, "_stats"):
            self._start(X)
        for batch in _batches(X):
            self._stats.partial_fit(_tensor(batch, self._device))
        return self._finalize()

    def fit(self, X: Any, y: Any = None) -> ExactIncrementalPCA:
        """Axes of all rows of ``X``: a matrix (read in blocks) or an iterable of batches."""
        self._start(X)
        self.seed_ = resolve_seed(self.random_state)
        for batch in _batches(X):
            self._stats.partial_fit(_tensor(batch, self._device))
        return self._finalize()

    def _finalize(self) -> ExactIncrementalPCA:
        ctx = process_context(self.distributed)
        stats = self._stats.reduced(ctx)
        if stats.mean_ is None:
            msg = "ExactIncrementalPCA has seen no rows."
            raise ValueError(msg)
        axes, evals = top_axes(stats.scatter_, self.n_components)
        axes, evals = broadcast_same(ctx, axes, evals)
        n = stats.n_samples_seen_
        total = torch.diagonal(stats.scatter_).sum()
        self.mean_ = stats.mean_.to(self._dtype)
        self.components_ = axes.to(self._dtype)
        self.explained_variance_ = (evals / max(1, n - 1)).to(self._dtype)
        self.explained_variance_ratio_ = (evals / total).to(self._dtype)
        self.n_samples_seen_, self.n_features_in_ = n, int(axes.shape[1])
        return self

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit, then the coordinates of ``X`` (a matrix: an iterable cannot be re-read)."""
        if not _is_matrix(X):
            msg = (
                "fit_transform needs a matrix; with an iterable of batches call fit(batches), "
                "then transform(batch) for each batch."
            )
            raise TypeError(msg)
        return self.fit(X).transform(X)


def gen_batches(n: int, batch_size: int, min_batch_size: int = 0) -> Iterator[slice]:
    """Slices of ``batch_size`` rows over ``range(n)``; a short last batch joins the previous.

    A batch that would leave fewer than ``min_batch_size`` rows after it is merged with them
    (scikit-learn's rule: every batch has at least ``n_components`` rows).
    """
    start = 0
    for _ in range(n // batch_size):
        end = start + batch_size
        if end + min_batch_size > n:
            continue
        yield slice(start, end)
        start = end
    if start < n:
        yield slice(start, n)


class IncrementalPCA(_Projection):
    """Approximate PCA in one pass over batches (scikit-learn's ``IncrementalPCA``, in torch).

    Memory is ``O((k + b) d)``; the axes approximate the exact PCA's. Parameters and
    attributes follow TorchDR (and scikit-learn).

    Parameters
    ----------
    n_components
        Components kept; ``None``: ``min(rows, features)`` of the first batch.
    copy
        Accepted for TorchDR's API; the input is never modified.
    batch_size
        Rows per batch in :meth:`fit`; default ``5 * n_features``.
    svd_driver
        cuSOLVER driver of ``torch.linalg.svd`` (CUDA only).
    lowrank, lowrank_q, lowrank_niter
        Decompose each batch by a randomised SVD of width ``lowrank_q`` (default
        ``2 * n_components``) with ``lowrank_niter`` power iterations.
    device
        'auto', 'cpu' or 'cuda'.
    verbose
        Unused; TorchDR's parameter.
    random_state
        Seed of the randomised SVD's starts.

    Attributes
    ----------
    mean_, var_
        ``(n_features,)`` mean and variance (``ddof=0``) of the rows seen.
    components_, singular_values_
        Axes (largest-magnitude entry positive) and singular values.
    explained_variance_, explained_variance_ratio_, noise_variance_
        As in scikit-learn.
    n_components_, n_samples_seen_
        Components kept and rows seen.
    """

    def __init__(
        self,
        n_components: int | None = None,
        *,
        copy: bool = True,
        batch_size: int | None = None,
        svd_driver: str | None = None,
        lowrank: bool = False,
        lowrank_q: int | None = None,
        lowrank_niter: int = 4,
        device: Any = "auto",
        verbose: bool = False,
        random_state: Any = None,
    ) -> None:
        self.n_components = n_components
        self.copy = copy
        self.batch_size = batch_size
        self.svd_driver = svd_driver
        self.lowrank = lowrank
        self.lowrank_q = lowrank_q
        self.lowrank_niter = lowrank_niter
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    def _check(self, x: torch.Tensor) -> None:
        n, d = x.shape
        k = self.n_components
        if k is not None:
            check_number("n_components", k, kind=int, low=1, closed="left")
            if k > d:
                msg = (
                    f"`n_components` ({k}) must be at most the number of features ({d}); "
                    "pass a smaller n_components."
                )
                raise ValueError(msg)
            if k > n:
                msg = (
                    f"`n_components` ({k}) must be at most the rows of a batch ({n}); pass "
                    "larger batches (batch_size) or a smaller n_components."
                )
                raise ValueError(msg)
        if self.lowrank and k is None:
            msg = "`n_components` must be set with lowrank=True (the width is 2 * n_components)."
            raise ValueError(msg)
        check_option("svd_driver", self.svd_driver, SVD_DRIVERS)
        if getattr(self, "_state", None) is not None and self._state.mean_ is not None:
            seen = self._state.mean_.shape[0]
            if d != seen:
                msg = f"`X` has {d} features, the earlier batches {seen}; pass batches that agree."
                raise ValueError(msg)

    def _new_state(self, X: Any) -> None:
        self._device = resolve_device(self.device, X if isinstance(X, torch.Tensor) else None)
        self._dtype = data_dtype(X)
        self.seed_ = resolve_seed(self.random_state)
        self._state = IncrementalSVD(
            self.n_components,
            svd_driver=self.svd_driver,
            lowrank=self.lowrank,
            lowrank_q=self.lowrank_q,
            lowrank_niter=self.lowrank_niter,
            generator=make_generator(self.seed_, "cpu"),
        )

    def partial_fit(self, X: Any, y: Any = None, check_input: bool = True) -> IncrementalPCA:
        """Update the axes with the batch ``X`` (``(b, d)``)."""
        if getattr(self, "_state", None) is None:
            self._new_state(X)
        x = _tensor(X, self._device)
        if check_input:
            self._check(x)
        self._state.partial_fit(x)
        self._publish()
        return self

    def _publish(self) -> None:
        st, dt = self._state, self._dtype
        self.n_components_ = st.n_components
        self.n_samples_seen_ = st.n_samples_seen_
        self.mean_, self.var_ = st.mean_.to(dt), st.var_.to(dt)
        self.components_, self.singular_values_ = st.components_.to(dt), st.singular_values_.to(dt)
        self.explained_variance_ = st.explained_variance_.to(dt)
        self.explained_variance_ratio_ = st.explained_variance_ratio_.to(dt)
        self.noise_variance_ = st.noise_variance_.to(dt)

    def fit(self, X: Any, y: Any = None) -> IncrementalPCA:
        """Fit on the rows of ``X`` in batches of ``batch_size`` (a new fit)."""
        x = prepare_matrix(X)
        if not hasattr(x, "shape"):
            msg = "fit needs a matrix; with an iterable of batches call partial_fit(batch) on each."
            raise TypeError(msg)
        self._state = None
        self._new_state(X)
        n, d = int(x.shape[0]), int(x.shape[1])
        if self.batch_size is not None:
            check_number("batch_size", self.batch_size, kind=int, low=1, closed="left")
        size = int(self.batch_size or 5 * d)
        for rows in gen_batches(n, size, min_batch_size=self.n_components or 0):
            self.partial_fit(x[rows], check_input=True)
        return self
