"""Base class shared by the input affinities."""

from __future__ import annotations

import math
from typing import Any

import torch

from .._device import as_float_tensor, resolve_device
from .._logging import get_logger, verbosity
from .._validation import check_enough_samples, check_number, check_option
from ..knn import METRICS, KNNGraph, check_backend
from ..knn import knn as knn_search
from ._distances import pairwise_distances
from .sparse import SparseAffinity

logger = get_logger(__name__)


class Affinity:
    """Base class of the input affinities P.

    An affinity is a callable: ``P = affinity(X)`` returns a :class:`SparseAffinity` when it
    is computed from a kNN graph (``sparsity=True`` where supported) and a dense ``(n, n)``
    tensor otherwise. The two building blocks can also be called directly, so that a kNN
    graph or a distance matrix computed elsewhere is reused without recomputation:
    :meth:`from_knn` and :meth:`from_distances`.

    Parameters
    ----------
    metric
        Input-space metric, one of :data:`torchdr_sc.knn.METRICS`.
    backend
        kNN backend used by ``__call__`` in sparse mode: ``'auto'``, ``'faiss'``,
        ``'keops'``, ``'torch'`` or ``None`` (plain torch).
    device
        ``'auto'`` (torch input keeps its device, numpy input goes to CUDA when available)
        or a torch device.
    verbose
        Log progress at INFO level on stderr.
    sparsity
        Compute P from a kNN graph (sparse result) instead of all pairs (dense result).
    """

    def __init__(
        self,
        *,
        metric: str = "sqeuclidean",
        backend: str | None = "auto",
        device: Any = "auto",
        verbose: bool = False,
        sparsity: bool = False,
    ) -> None:
        self.metric = check_option("metric", metric, METRICS)
        self.backend = check_backend(backend)
        if not (device is None or (isinstance(device, str) and device == "auto")):
            resolve_device(device)
        self.device = device
        self.verbose = bool(verbose)
        self.sparsity = bool(sparsity)

    def __repr__(self) -> str:
        params = ", ".join(
            f"{key}={value!r}" for key, value in vars(self).items() if not key.endswith("_")
        )
        return f"{type(self).__name__}({params})"

    # -- public API -------------------------------------------------------------------------

    def __call__(self, X: Any) -> SparseAffinity | torch.Tensor:
        """Compute P from data ``X`` (numpy array or torch tensor, ``(n, d)``).

        Returns
        -------
        SparseAffinity or torch.Tensor
            Sparse P from a kNN graph when ``sparsity`` is on, else a dense ``(n, n)`` tensor
            with a zero diagonal, on the resolved device.
        """
        with verbosity(self.verbose):
            x = self._input(X)
            n = x.shape[0]
            if self.sparsity:
                k = self.required_k(n)
                graph = knn_search(x, k, backend=self.backend, metric=self.metric)
                return self.from_knn(graph)
            return self.from_distances(pairwise_distances(x, metric=self.metric))

    def required_k(self, n: int) -> int:
        """Number of neighbours needed from a kNN graph of ``n`` samples."""
        return max(n - 1, 0)

    def from_knn(self, knn: KNNGraph) -> SparseAffinity:
        """Sparse P from a kNN graph, using its stored distances."""
        msg = (
            f"{type(self).__name__} has no kNN (sparse) version; compute it from all pairs "
            "with from_distances or sparsity=False."
        )
        raise NotImplementedError(msg)

    def from_distances(self, D: torch.Tensor) -> torch.Tensor:
        """Dense P from an ``(n, n)`` distance matrix in the units of ``metric``."""
        msg = f"{type(self).__name__} does not implement from_distances."
        raise NotImplementedError(msg)

    # -- helpers for subclasses -------------------------------------------------------------

    def _input(self, X: Any) -> torch.Tensor:
        """Validate ``X``, move it to the resolved device and check the sample count.

        A tensor that requires grad keeps its autograd graph: the checks run on a
        detached view and the returned tensor is ``X`` itself moved and cast
        (differentiably), so that P is a differentiable function of ``X``. That is what
        an affinity used as the output similarity of
        :class:`~torchdr_sc.AffinityMatcher` (``affinity_out``) needs; detaching made
        autograd fail there ("element 0 of tensors does not require grad").
        """
        device = resolve_device(self.device, X)
        if isinstance(X, torch.Tensor) and X.requires_grad:
            checked = as_float_tensor(X.detach(), device=device)
            x = X.to(device=device, dtype=checked.dtype)
        else:
            x = as_float_tensor(X, device=device)
        self._check_n_samples(int(x.shape[0]))
        return x

    def _check_n_samples(self, n: int) -> None:
        """Raise before any work if ``n`` samples are too few for this affinity."""
        check_enough_samples(n, 1, "1")

    def _check_distances(self, D: torch.Tensor) -> torch.Tensor:
        """Validate a dense distance matrix and run the sample-count checks."""
        if not isinstance(D, torch.Tensor) or D.ndim != 2 or D.shape[0] != D.shape[1]:
            shape = tuple(D.shape) if hasattr(D, "shape") else type(D).__name__
            msg = f"`D` must be a square (n, n) torch tensor; got {shape}."
            raise ValueError(msg)
        if not D.is_floating_point():
            D = D.to(torch.float32)
        self._check_n_samples(int(D.shape[0]))
        return D


class PerplexityAffinity(Affinity):
    """Base of the affinities calibrated to a perplexity (entropic, symmetric entropic).

    Validates ``perplexity``, a float in (0, inf), after the options of
    :class:`Affinity`, and asks for more samples than the perplexity.
    """

    def __init__(self, perplexity: float, **options: Any) -> None:
        super().__init__(**options)
        self.perplexity = check_number("perplexity", perplexity, low=0.0)
        if math.isinf(self.perplexity):
            msg = f"`perplexity` must be a float in (0, inf); got {perplexity!r}."
            raise ValueError(msg)

    def _check_n_samples(self, n: int) -> None:
        check_enough_samples(n, self.perplexity, f"perplexity ({self.perplexity:g})")

    def required_k(self, n: int) -> int:
        """``min(ceil(3 * perplexity), n - 1)``, the t-SNE family's neighbourhood size."""
        return max(min(math.ceil(3 * self.perplexity), n - 1), 1)

    def usable_k(self, knn: KNNGraph) -> int:
        """Neighbours used from ``knn``: at most :meth:`required_k`, more than the
        perplexity (a ValueError naming the fix otherwise; a shorter graph than required
        is logged)."""
        n = knn.n_samples
        self._check_n_samples(n)
        k = min(knn.k, self.required_k(n))
        if self.perplexity >= k and k < n - 1:
            msg = (
                f"perplexity ({self.perplexity:g}) must be smaller than the number of "
                f"neighbours in the kNN graph ({k}); compute the graph with "
                f"k >= {self.required_k(n)}."
            )
            raise ValueError(msg)
        warn_short_graph(type(self).__name__, k, self.required_k(n))
        return k


def check_solver_options(tol: float, max_iter: int, *, min_iter: int = 1) -> tuple[float, int]:
    """Validated ``tol`` (> 0) and ``max_iter`` (>= ``min_iter``) of an iterative solver."""
    tol = check_number("tol", tol, low=0.0)
    max_iter = check_number("max_iter", max_iter, kind=int, low=min_iter, closed="left")
    return tol, max_iter


def warn_short_graph(name: str, k: int, needed: int) -> None:
    """Log that a kNN graph holds fewer neighbours than the affinity asks for."""
    if k < needed:
        logger.warning(
            "%s: the kNN graph has %d neighbours per row, fewer than the %d it needs; using %d.",
            name,
            k,
            needed,
            k,
        )


def log_unconverged(name: str, n_unconverged: int, n: int, n_iter: int) -> None:
    """Log the outcome of a per-row calibration."""
    if n_unconverged:
        logger.warning(
            "%s: %d of %d rows did not reach the tolerance after %d iterations "
            "(rows whose target is out of reach, e.g. duplicated points, end at the limit).",
            name,
            n_unconverged,
            n,
            n_iter,
        )
    else:
        logger.info("%s: %d rows calibrated in %d iterations", name, n, n_iter)
