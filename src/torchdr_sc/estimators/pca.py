"""Principal component analysis in torch, as a scikit-learn estimator.

The axes come from :func:`~torchdr_sc.initialization.principal_axes`, the eigen-solver that
``init='pca'`` (:func:`~torchdr_sc.initialization.pca_components`) also uses; the estimator
itself is not used for initialisation. Its signs are fixed on the axes, not on the
coordinates as ``init='pca'`` does, so the two can differ in sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator, TransformerMixin

from .._device import as_float_tensor, resolve_device, to_output
from .._validation import check_number
from ..initialization import principal_axes, sign_by_largest_entry


@dataclass(kw_only=True, eq=False, repr=False)
class PCA(TransformerMixin, BaseEstimator):
    """PCA by an eigen-decomposition of the covariance (exact), in torch.

    The covariance is diagonalised in float64 whatever the input dtype.

    Parameters
    ----------
    n_components
        Number of components kept.
    device
        'auto' (torch input keeps its device, otherwise CUDA when available), 'cpu', 'cuda'.

    Attributes
    ----------
    mean_
        Feature means ``(n_features,)``.
    components_
        Principal axes ``(n_components, n_features)``, by decreasing variance; signs made
        deterministic (the largest-magnitude entry of each axis is positive).
    explained_variance_
        Variance along each component.
    """

    n_components: int = 2
    device: Any = "auto"

    def fit(self, X: Any, y: Any = None) -> PCA:
        """Learn the principal axes of ``X``."""
        check_number("n_components", self.n_components, kind=int, low=1, closed="left")
        x = as_float_tensor(X, device=resolve_device(self.device, X))
        if self.n_components > x.shape[1]:
            msg = f"`n_components` ({self.n_components}) must be at most n_features ({x.shape[1]})."
            raise ValueError(msg)
        self.mean_ = x.mean(0)
        xc = x - self.mean_
        cov = (xc.T @ xc).double() / max(1, x.shape[0] - 1)
        axes, evals = principal_axes(cov, self.n_components)
        # the sign rule on the axes: each component's largest-magnitude entry is positive
        self.components_ = sign_by_largest_entry(axes.to(x.dtype)).T
        self.explained_variance_ = evals.to(x.dtype)
        return self

    def transform(self, X: Any) -> Any:
        """Project ``X`` on the principal axes."""
        x = as_float_tensor(X, device=self.mean_.device, dtype=self.mean_.dtype)
        return to_output((x - self.mean_) @ self.components_.T, X)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit and project ``X``."""
        return self.fit(X).transform(X)
