"""Exact incremental PCA for the streamed initialisation.

The streamed rows are reduced to the statistics that the in-memory ``init='pca'``
(:func:`~torchdr_sc.initialization.pca_components`) needs, and the axes come from the same
functions, so the streamed initialisation equals the in-memory one up to round-off.

References
----------
- T. F. Chan, G. H. Golub, R. J. LeVeque. Updating formulae and a pairwise algorithm for
  computing sample variances. Technical report STAN-CS-79-773, Stanford University, 1979.
"""

from __future__ import annotations

import torch

from .._device import one_thread_on_cpu
from .._logging import get_logger
from ..distributed import DistContext
from ..initialization import pad_columns, principal_axes, principal_axes_svd
from . import _constants as limits

logger = get_logger(__name__)


class IncrementalPCA:
    """Exact PCA of data seen chunk by chunk, in torch.

    Keeps the count, the mean and the scatter matrix in float64 and merges every chunk with
    Chan, Golub & LeVeque's (1979) pairwise update, so the result equals the PCA of all rows
    at once up to float64 round-off. Memory is ``O(d^2)`` for ``d`` features.

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
        """Add the rows ``x`` (float64) by their mean and scatter (:meth:`merge_statistics`)."""
        mean_b = x.mean(0)
        xc = x - mean_b
        with one_thread_on_cpu(x.device):  # the same bits whatever the thread count
            scatter = xc.T @ xc
        self.merge_statistics(x.shape[0], mean_b, scatter)

    def merge_statistics(self, b: int, mean_b: torch.Tensor, scatter_b: torch.Tensor) -> None:
        """Add ``b`` rows given by their float64 mean ``mean_b`` and scatter ``scatter_b``.

        Chan, Golub & LeVeque's pairwise update: with ``n`` rows of mean ``m`` and scatter
        ``S`` seen, ``m' = m + (m_b - m) b / (n + b)`` and
        ``S' = S + S_b + (m_b - m)(m_b - m)^T n b / (n + b)``.
        """
        if self.mean_ is None:
            self.device = mean_b.device
            self.mean_, self._scatter, self.n_samples_seen_ = mean_b, scatter_b.clone(), b
            return
        if mean_b.shape[0] != self.mean_.shape[0]:
            d, d_b = self.mean_.shape[0], mean_b.shape[0]
            msg = f"chunks have {d} and {d_b} features; they must agree."
            raise ValueError(msg)
        n = self.n_samples_seen_
        total = n + b
        delta = mean_b - self.mean_
        self.mean_ = self.mean_ + delta * (b / total)
        self._scatter.add_(scatter_b).addr_(delta, delta, alpha=n * b / total)  # in place
        self.n_samples_seen_ = total

    def reduced(self, ctx: DistContext) -> IncrementalPCA:
        """These statistics merged with those of every rank of ``ctx`` (a new object).

        With ``n_r`` rows of mean ``m_r`` and scatter ``S_r`` on rank ``r``: the global mean
        is ``sum n_r m_r / n`` and the global scatter ``sum S_r + n_r (m_r - m)(m_r - m)^T``
        (the pairwise update summed over ranks); two all-reduces of ``O(d^2)`` values.
        Every rank must call it (a collective). Without a group it returns ``self``.
        """
        if not ctx.active:
            return self
        if self.mean_ is None:
            msg = f"rank {ctx.rank} has no rows; give every rank at least one row."
            raise ValueError(msg)
        n = float(self.n_samples_seen_)
        packed = torch.cat([self.mean_.new_tensor([n]), self.mean_ * n])
        ctx.sync(packed)
        total = packed[0]
        mean = packed[1:] / total
        delta = self.mean_ - mean
        scatter = self._scatter + torch.outer(delta, delta) * n
        ctx.sync(scatter)
        out = IncrementalPCA(self.n_components, self.device)
        out.mean_, out._scatter, out.n_samples_seen_ = mean, scatter, round(float(total))
        return out

    @property
    def scatter_(self) -> torch.Tensor:
        """``(d, d)`` float64 scatter matrix ``Xc^T Xc`` of the rows seen (centred rows)."""
        if self._scatter is None:
            msg = "IncrementalPCA has seen no rows."
            raise ValueError(msg)
        return self._scatter

    def finalize(self) -> IncrementalPCA:
        """Compute the principal axes from the statistics (:func:`principal_axes`)."""
        if self.mean_ is None:
            msg = "IncrementalPCA has seen no rows."
            raise ValueError(msg)
        axes, evals = principal_axes(self._scatter, self.n_components)
        self.components_ = axes.T.contiguous()
        self.explained_variance_ = evals / max(1, self.n_samples_seen_ - 1)
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates of ``x`` on the axes, in ``x``'s dtype (zero-padded to n_components)."""
        if self.components_ is None:
            self.finalize()
        comps = self.components_.to(device=x.device, dtype=x.dtype)
        proj = (x - self.mean_.to(device=x.device, dtype=x.dtype)) @ comps.T
        return pad_columns(proj, self.n_components)


class _SubsetPCA:
    """PCA of the first ``PCA_SVD_ROWS`` rows, centred by the mean of all rows.

    What the in-memory initialisation does for more than ``PCA_EXACT_MAX_FEATURES``
    features (:data:`~torchdr_sc.initialization.PCA_EXACT_MAX_FEATURES`), where a ``d x d``
    scatter matrix is too large: the axes come from
    :func:`~torchdr_sc.initialization.principal_axes_svd`.
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
        """Add ``x`` to the running sum and keep its rows while fewer than the limit are kept."""
        s = x.to(torch.float64).sum(0)
        self.total = s if self.total is None else self.total + s
        self.count += x.shape[0]
        if self.kept < limits.PCA_SVD_ROWS:
            take = x[: limits.PCA_SVD_ROWS - self.kept]
            self.rows.append(take.clone())
            self.kept += take.shape[0]
        return self

    def finalize(self) -> _SubsetPCA:
        """Mean of all rows and axes of the kept rows (which are then released)."""
        self.mean_ = self.total / self.count
        first = torch.cat(self.rows, 0)
        self.rows = []
        self.components_ = principal_axes_svd(
            first - self.mean_.to(first.dtype), self.n_components
        ).T
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates of ``x`` on the axes, in ``x``'s dtype (zero-padded to n_components)."""
        comps = self.components_.to(device=x.device, dtype=x.dtype)
        proj = (x - self.mean_.to(device=x.device, dtype=x.dtype)) @ comps.T
        return pad_columns(proj, self.n_components)


class _PCAHolder:
    """Incremental PCA chosen at the first chunk (exact covariance or first-rows SVD)."""

    def __init__(self, n_components: int, device: torch.device) -> None:
        self.n_components, self.device = n_components, device
        self.pca: IncrementalPCA | _SubsetPCA | None = None

    def add(self, x: torch.Tensor) -> None:
        """Add the rows of ``x``; the first call picks the method from the feature count."""
        if self.pca is None:
            small = x.shape[1] <= limits.PCA_EXACT_MAX_FEATURES
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
