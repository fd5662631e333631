"""Generic, autograd-based embeddings from an input affinity and an output kernel.

These are the flexible (and dense, so small-n) counterparts of the specialised estimators:
any input affinity object and any differentiable output kernel can be matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._validation import check_option
from ..affinity import Affinity, SparseAffinity
from ..distributed import DistContext
from ..knn import KNNGraph
from ..objective import MATCHING_LOSSES, make_objective
from ..optimize import OptimizeResult
from ._base import MAX_DENSE_SAMPLES, Embedder
from ._schedule import run_schedule

#: ``loss_fn`` values of :class:`AffinityMatcher` (losses of ``objective.matching``).
LOSSES = tuple(name for name in MATCHING_LOSSES if name != "neighbor_embedding")


def _sqdist(z: torch.Tensor) -> torch.Tensor:
    sq = (z * z).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(0.0)


def _callable_name(obj: Any) -> str:
    """A short name of a callable for messages (class name of an object, else its name)."""
    if isinstance(obj, type) or not callable(obj):
        return repr(obj)
    return getattr(obj, "__name__", None) or type(obj).__name__


def _sparse_out_message(affinity: Any) -> str:
    """The error for an output affinity computed on a kNN graph (sparse, not differentiable)."""
    name = type(affinity).__name__
    return (
        f"`affinity_out` ({name}) computes a sparse affinity on a kNN graph, which is "
        f"neither dense nor differentiable in the embedding; pass {name}(..., "
        "sparsity=False) to compute it on all pairs."
    )


@dataclass(kw_only=True, eq=False, repr=False)
class StudentKernel:
    """Output kernel ``(1 + |z_i - z_j|^2 / dof)^{-(dof + 1) / 2}`` (diagonal 0).

    Parameters
    ----------
    degrees_of_freedom
        1 gives the Cauchy kernel of t-SNE.
    """

    degrees_of_freedom: float = 1.0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Dense kernel matrix of ``z``."""
        nu = self.degrees_of_freedom
        k = (1.0 + _sqdist(z) / nu).pow(-(nu + 1) / 2)
        return k * (1.0 - torch.eye(z.shape[0], dtype=z.dtype, device=z.device))


@dataclass(kw_only=True, eq=False, repr=False)
class GaussianKernel:
    """Output kernel ``exp(-|z_i - z_j|^2 / sigma)`` (diagonal 0)."""

    sigma: float = 1.0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Dense kernel matrix of ``z``."""
        k = torch.exp(-_sqdist(z) / self.sigma)
        return k * (1.0 - torch.eye(z.shape[0], dtype=z.dtype, device=z.device))


@dataclass(kw_only=True, eq=False, repr=False)
class AffinityMatcher(Embedder):
    """Match an input affinity P with an output affinity Q = ``affinity_out(Z)``.

    Minimises ``loss_fn(P, Q)`` by autograd on dense ``n x n`` matrices (small n only):
    ``'cross_entropy'`` ``-sum P log Q``, ``'kl'`` ``sum P log(P / Q) - P + Q``,
    ``'square_loss'`` ``sum (P - Q)^2``. P is normalised to sum to 1.

    Parameters
    ----------
    affinity_in
        Callable on the data returning a dense tensor or a
        :class:`~torchdr_sc.affinity.SparseAffinity` (e.g. ``EntropicAffinity(perplexity=30)``).
    affinity_out
        Differentiable callable on the embedding returning a dense ``(n, n)`` tensor:
        an output kernel (e.g. :class:`StudentKernel`) or an affinity object computed on
        all pairs (``sparsity=False``), e.g.
        :class:`~torchdr_sc.affinity.NormalizedGaussianAffinity` (exact gradients) or
        ``SinkhornAffinity(base_kernel='student')`` (its Sinkhorn potentials are held
        constant in the gradient). Affinity objects keep the autograd graph of an input
        that requires grad; a callable whose result is sparse or detached from the
        embedding is refused with a TypeError.
    kwargs_affinity_out
        Extra keyword arguments of ``affinity_out``.
    loss_fn
        One of 'cross_entropy', 'kl', 'square_loss'.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    affinity_in: Any = None
    affinity_out: Any = None
    kwargs_affinity_out: dict | None = None
    loss_fn: str = "cross_entropy"
    optimizer: Any = "Adam"
    lr: float | str = 0.1
    init_scaling: float = 1.0
    early_exaggeration_coeff: float | None = 1.0
    early_exaggeration_iter: int | None = 0

    def _check_method_params(self) -> None:
        if not callable(self.affinity_in) or not callable(self.affinity_out):
            msg = "`affinity_in` and `affinity_out` must be callables (affinity objects)."
            raise TypeError(msg)
        if isinstance(self.affinity_out, Affinity) and self.affinity_out.sparsity:
            raise TypeError(_sparse_out_message(self.affinity_out))
        check_option("loss_fn", self.loss_fn, LOSSES)

    def _output_affinity(self, z: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        """``affinity_out(z)``, checked to be a dense ``(n, n)`` tensor differentiable in z.

        Raises
        ------
        TypeError
            A sparse result (a kNN affinity), or one without an autograd graph (computed
            on a detached copy of ``z`` or under ``torch.no_grad``), which autograd would
            otherwise reject deep in the optimisation.
        """
        q = self.affinity_out(z, **extra)
        name = _callable_name(self.affinity_out)
        n = z.shape[0]
        if not isinstance(q, torch.Tensor):
            if isinstance(q, SparseAffinity):
                raise TypeError(_sparse_out_message(self.affinity_out))
            msg = f"`affinity_out` ({name}) must return a torch tensor; got {type(q).__name__}."
            raise TypeError(msg)
        if q.shape != (n, n):
            msg = (
                f"`affinity_out` ({name}) must return an (n, n) = ({n}, {n}) tensor; "
                f"got shape {tuple(q.shape)}."
            )
            raise TypeError(msg)
        if not q.requires_grad:
            msg = (
                f"`affinity_out` ({name}) returned a tensor that is not differentiable with "
                "respect to the embedding: compute it with torch operations on its input "
                "(not on a detached copy, numpy, or under torch.no_grad())."
            )
            raise TypeError(msg)
        return q

    def check_n_samples(self, n: int) -> None:
        if n > MAX_DENSE_SAMPLES:
            name = type(self).__name__
            msg = f"{name} is dense and supports at most {MAX_DENSE_SAMPLES} samples; got {n}."
            raise ValueError(msg)
        if n < 2:
            msg = f"At least 2 samples are needed for a neighbor embedding; got {n}."
            raise ValueError(msg)

    def affinity_params(self) -> dict[str, Any]:
        """Parameters that determine P."""
        return {"affinity": repr(self.affinity_in)}

    def _affinity_from_data(self, x: torch.Tensor) -> SparseAffinity:
        p = self.affinity_in(x)
        if isinstance(p, SparseAffinity):
            return p
        return SparseAffinity.from_dense(p.to(x.dtype))

    def _affinity_from_knn(self, knn: KNNGraph) -> SparseAffinity:  # pragma: no cover
        raise NotImplementedError

    def _auto_lr(self, n: int) -> float:
        return 0.1

    def _loss_name(self) -> str:
        """The key of the loss in ``objective.MATCHING_LOSSES``."""
        return self.loss_fn

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        max_iter = self.planned_iterations(z0.shape[0])
        extra = self.kwargs_affinity_out or {}
        objective = make_objective(
            "autograd",
            P,
            output=lambda z: self._output_affinity(z, extra),
            loss=self._loss_name(),
            dtype=z0.dtype,
        )
        lr = self._auto_lr(z0.shape[0]) if self.lr == "auto" else float(self.lr)
        result = run_schedule(self, z0, objective, max_iter=max_iter, momenta=(0.5, 0.8), lr=lr)
        self.execution_path_ = objective.path
        return result


@dataclass(kw_only=True, eq=False, repr=False)
class NeighborEmbedding(AffinityMatcher):
    """Neighbor embedding ``min_Z -lambda sum P log Q + log sum Q`` (TorchDR's formulation).

    ``Q = affinity_out(Z)`` is the unnormalised output kernel; the repulsion is the global
    normaliser ``log sum_ij Q_ij`` and ``lambda`` is the early-exaggeration coefficient during
    the first ``early_exaggeration_iter`` iterations. With ``EntropicAffinity`` in and
    :class:`StudentKernel` out this is t-SNE computed by autograd (dense, small n).

    Parameters
    ----------
    affinity_in, affinity_out, kwargs_affinity_out
        As in :class:`AffinityMatcher`.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    optimizer: Any = "SGD"
    lr: float | str = "auto"
    init_scaling: float = 1e-4
    early_exaggeration_coeff: float | None = 12.0
    early_exaggeration_iter: int | None = 250

    def _loss_name(self) -> str:
        """``-lambda sum P_sym log Q + log sum Q``."""
        return "neighbor_embedding"

    def _auto_lr(self, n: int) -> float:
        return max(n / (4.0 * (self.early_exaggeration_coeff or 1.0)), 50.0)
