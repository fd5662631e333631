"""Principal component analysis in torch, as a scikit-learn estimator with TorchDR's API.

:class:`PCA` reads its input in blocks of rows (:mod:`torchdr_sc.streaming`): a dense
matrix, a scipy sparse one (never densified whole, never centred in memory), an on-disk one
(a backed AnnData's ``X``, h5py, zarr) or, under ``torchrun``, each rank's own rows. The
maths is in :mod:`torchdr_sc.streaming`; this module checks parameters and lays out the
fitted attributes as TorchDR and scikit-learn do.

The axes are not those of ``init='pca'`` (:func:`~torchdr_sc.initialization.pca_components`),
which fixes signs on the coordinates rather than on the axes.
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.base import BaseEstimator, TransformerMixin

from .._device import as_float_tensor, resolve_device, to_output
from .._logging import get_logger
from .._random import make_generator, resolve_seed
from .._validation import check_number, check_option
from ..distributed import DistContext, RowShard, resolve_distributed
from ..streaming import (
    PCA_SOLVERS,
    SVD_DRIVERS,
    column_moments,
    exact_statistics,
    pick_solver,
    prepare_matrix,
    project_rows,
    randomized_axes,
    reduce_moments,
    top_axes,
)

logger = get_logger(__name__)

#: ``distributed`` values: ``'auto'`` uses an initialised process group of 2+ ranks.
DISTRIBUTED_OPTIONS = ("auto", True, False)

ALL_ROWS = RowShard(0, -1)


def check_distributed(value: Any) -> None:
    """Raise unless ``value`` is one of :data:`DISTRIBUTED_OPTIONS`."""
    if not (isinstance(value, bool) or (isinstance(value, str) and value == "auto")):
        msg = f"`distributed` must be one of 'auto', False, True; got {value!r}."
        raise ValueError(msg)


def check_n_components(n_components: Any, n_features: int) -> None:
    """Raise unless ``n_components`` is an int in ``[1, n_features]``."""
    check_number("n_components", n_components, kind=int, low=1, closed="left")
    if n_components > n_features:
        msg = f"`n_components` ({n_components}) must be at most n_features ({n_features})."
        raise ValueError(msg)


def data_dtype(x: Any) -> torch.dtype:
    """float64 for float64 input, float32 otherwise (the package's compute dtype)."""
    dtype = getattr(x, "dtype", None)
    return torch.float64 if str(dtype).endswith("float64") else torch.float32


def process_context(distributed: Any) -> DistContext:
    """Rank and world size for ``distributed``; the rows are the caller's own (TorchDR's rule)."""
    ctx = resolve_distributed(distributed, 0)
    return DistContext(ctx.rank, ctx.world_size, ALL_ROWS)


def broadcast_same(ctx: DistContext, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Rank 0's tensors on every rank (the same bits everywhere), or the tensors as they are."""
    if not ctx.active:
        return list(tensors)
    return [ctx.broadcast(t) for t in tensors]


def _variances(
    axes: torch.Tensor, evals: torch.Tensor, mean: torch.Tensor, n: int, zero_center: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variance along each axis and the singular values, as scikit-learn reports them.

    Centred: ``eigenvalue / (n - 1)`` (``PCA``). Not centred, ``evals`` are those of the
    uncentred Gram matrix and the variance is that of the coordinates with ``ddof=0``
    (``TruncatedSVD``): ``(eigenvalue - n (m . v)^2) / n``.
    """
    if zero_center:
        return evals / max(1, n - 1), evals.clamp_min(0).sqrt()
    shifted = evals - n * (axes @ mean) ** 2
    return shifted / n, evals.clamp_min(0).sqrt()


class PCA(TransformerMixin, BaseEstimator):
    """PCA by the eigendecomposition of the covariance (exact) or subspace iteration, in torch.

    Parameters
    ----------
    n_components
        Number of components kept.
    device
        'auto' (torch input keeps its device, otherwise CUDA when available), 'cpu', 'cuda'.
    distributed
        ``'auto'``: under an initialised ``torch.distributed`` group of 2+ ranks, each rank
        passes its own rows, the means and covariances are summed over the ranks and every
        rank gets the same components (TorchDR's ``distributed='auto'``); ``True`` requires
        such a group; ``False`` uses this process's rows alone.
    verbose
        Log the solver used.
    random_state
        Seed of the randomised solver's start (int, numpy / torch generator, or ``None``).
        The exact solver draws nothing.
    svd_driver
        cuSOLVER driver of ``torch.linalg.svd`` (TorchDR's parameter); accepted and checked,
        unused by the eigen-solvers here.
    svd_solver
        ``'auto'``, ``'covariance_eigh'`` or ``'randomized'`` (``streaming.PCA_SOLVERS``).
    zero_center
        Centre the data (PCA). ``False`` gives the axes of the uncentred data
        (scikit-learn's ``TruncatedSVD``), as ``sc.pp.pca(zero_center=False)``.

    Attributes
    ----------
    mean_
        ``(1, n_features)`` feature means (zeros when ``zero_center=False``).
    components_
        ``(n_components, n_features)`` principal axes by decreasing variance; each axis's
        largest-magnitude entry is positive (scikit-learn's and TorchDR's sign rule).
    explained_variance_, explained_variance_ratio_
        Variance along each axis (``n - 1`` in the denominator) and its share of the total.
    singular_values_
        Singular values of the (centred) data along the axes.
    n_samples_
        Rows seen, summed over the ranks.
    solver_, seed_
        The solver used and the seed recorded.
    embedding_
        The coordinates returned by the last :meth:`fit_transform` (this rank's rows).
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        device: Any = "auto",
        distributed: bool | str = "auto",
        verbose: bool = False,
        random_state: Any = None,
        svd_driver: str | None = None,
        svd_solver: str = "auto",
        zero_center: bool = True,
    ) -> None:
        self.n_components = n_components
        self.device = device
        self.distributed = distributed
        self.verbose = verbose
        self.random_state = random_state
        self.svd_driver = svd_driver
        self.svd_solver = svd_solver
        self.zero_center = zero_center

    def _check_params(self) -> None:
        check_number("n_components", self.n_components, kind=int, low=1, closed="left")
        check_distributed(self.distributed)
        check_option("svd_driver", self.svd_driver, SVD_DRIVERS)
        check_option("svd_solver", self.svd_solver, PCA_SOLVERS)
        check_option("zero_center", self.zero_center, (True, False))

    def fit(self, X: Any, y: Any = None) -> PCA:
        """Learn the principal axes of ``X`` (this rank's rows under a process group).

        Parameters
        ----------
        X
            ``(n_samples, n_features)``: numpy, torch, scipy sparse, or an on-disk /
            streamed matrix (``torchdr_sc.streaming.is_streamed``).
        y
            Ignored.
        """
        self._check_params()
        x = prepare_matrix(X)
        d = int(x.shape[1]) if hasattr(x, "shape") else None
        ctx = process_context(self.distributed)
        self.seed_ = resolve_seed(self.random_state)
        device = resolve_device(self.device, X)
        if d is not None:
            check_n_components(self.n_components, d)
        self.solver_ = pick_solver(self.svd_solver, d or 0)
        if self.solver_ == "covariance_eigh":
            mean, axes, evals, n, total = self._exact(x, ctx, device)
        else:
            mean, axes, evals, n, total = self._randomized(x, ctx, device)
        axes, evals = broadcast_same(ctx, axes, evals)
        check_n_components(self.n_components, int(axes.shape[1]))
        var, singular = _variances(axes, evals, mean, n, self.zero_center)
        dtype = data_dtype(X)
        total_var = total / (max(1, n - 1) if self.zero_center else n)
        self.mean_ = (mean if self.zero_center else torch.zeros_like(mean)).to(dtype)[None]
        self.components_ = axes.to(dtype)
        self.explained_variance_ = var.to(dtype)
        self.explained_variance_ratio_ = (var / total_var).to(dtype)
        self.singular_values_ = singular.to(dtype)
        self.n_samples_, self.n_features_in_ = n, int(axes.shape[1])
        if self.verbose:
            logger.info("PCA: %d components of %d rows with %s", axes.shape[0], n, self.solver_)
        return self

    def _exact(self, x: Any, ctx: DistContext, device: torch.device) -> tuple:
        stats = exact_statistics(x, ALL_ROWS, self.n_components, device).reduced(ctx)
        mean, scatter, n = stats.mean_, stats.scatter_, stats.n_samples_seen_
        sym = scatter if self.zero_center else scatter + torch.outer(mean, mean) * n
        axes, evals = top_axes(sym, self.n_components)
        return mean, axes, evals, n, torch.diagonal(scatter).sum()

    def _randomized(self, x: Any, ctx: DistContext, device: torch.device) -> tuple:
        n, total, squares = reduce_moments(ctx, *column_moments(x, ALL_ROWS, device))
        mean = total / n
        centre = mean if self.zero_center else torch.zeros_like(mean)
        generator = make_generator(self.seed_, "cpu")
        axes, evals = randomized_axes(
            x, ALL_ROWS, ctx, centre, self.n_components, generator=generator
        )
        return mean, axes, evals, n, squares.sum() - n * (mean @ mean)

    def transform(self, X: Any) -> Any:
        """Coordinates of ``X`` on the principal axes (dense, sparse or streamed ``X``)."""
        if not hasattr(self, "components_"):
            msg = "This PCA is not fitted yet: call fit(X) first."
            raise ValueError(msg)
        x = prepare_matrix(X)
        mean = self.mean_[0] if self.zero_center else None
        z = project_rows(x, ALL_ROWS, mean, self.components_, self.components_.dtype)
        return to_output(z, X)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit and return the coordinates of ``X`` (kept as ``embedding_``)."""
        self.embedding_ = self.fit(X).transform(X)
        return self.embedding_

    def inverse_transform(self, X: Any) -> Any:
        """Points of feature space whose coordinates are ``X`` (``X @ components_ + mean_``).

        ``X`` is scikit-learn's name for the coordinates (``(n, n_components)``).
        """
        if not hasattr(self, "components_"):
            msg = "This PCA is not fitted yet: call fit(X) first."
            raise ValueError(msg)
        z = as_float_tensor(X, device=self.components_.device, dtype=self.components_.dtype)
        return to_output(z @ self.components_ + self.mean_, X)
