"""t-SNE and SNE with exact (all-pairs, blockwise) repulsion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..affinity import SparseAffinity
from ..distributed import DistContext
from ..objective.exact import sne_gradient, tsne_gradient
from ..optimize import OptimizeResult
from ._base import Embedder
from ._schedule import run_schedule
from .perplexity import PerplexityMixin


@dataclass(kw_only=True, eq=False, repr=False)
class _ExactEmbedder(PerplexityMixin, Embedder):
    """t-SNE-style schedule: exaggeration phase with momentum 0.5, then momentum 0.8."""

    early_exaggeration_coeff: float | None = 12.0
    early_exaggeration_iter: int | None = 250

    def _check_method_params(self) -> None:
        self._check_perplexity()

    def _auto_lr(self, n: int) -> float:
        coeff = self.early_exaggeration_coeff or 1.0
        return max(n / (4.0 * coeff), 50.0)

    def _gradient_fn(self, P: SparseAffinity, ctx: DistContext):
        raise NotImplementedError

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        max_iter = self.max_iter or 1000
        lr = self._auto_lr(z0.shape[0]) if self.lr == "auto" else float(self.lr)
        grad = self._gradient_fn(P.to(dtype=z0.dtype), ctx)
        sync = ctx.sync if ctx.active else None
        return run_schedule(self, z0, grad, max_iter=max_iter, momenta=(0.5, 0.8), lr=lr, sync=sync)


@dataclass(kw_only=True, eq=False, repr=False)
class TSNE(_ExactEmbedder):
    """t-SNE (van der Maaten & Hinton 2008) with exact repulsion.

    Input affinity: :class:`~torchdr_sc.affinity.EntropicAffinity` on the ``3 * perplexity``
    nearest neighbours, symmetrised ``(P + P^T) / 2n``. Embedding kernel
    ``Q_ij = (1 + |z_i - z_j|^2)^{-1}``; loss ``-sum P log Q + log sum Q``. The all-pairs
    repulsion is computed in row blocks with closed-form gradients, so memory stays
    ``O(block x n)`` (no ``n x n`` matrix); time is ``O(n^2)`` per iteration - use
    :class:`InfoTSNE` or :class:`UMAP` beyond ~50k samples.

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the entropic affinity.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    def _gradient_fn(self, P: SparseAffinity, ctx: DistContext):
        P = P.scaled(1.0 / float(P.weights.sum()))
        reduce = ctx.reduce_scalar if ctx.active else (lambda v: v)
        workspace: dict = {}

        def grad(z: torch.Tensor, it: int, phase) -> torch.Tensor:
            return tsne_gradient(z, P, phase.exaggeration, ctx.shard, reduce, workspace)

        return grad


@dataclass(kw_only=True, eq=False, repr=False)
class SNE(_ExactEmbedder):
    """Stochastic Neighbor Embedding (Hinton & Roweis 2002) with exact repulsion.

    Input affinity: row-stochastic :class:`~torchdr_sc.affinity.EntropicAffinity` (not
    symmetrised); embedding kernel ``exp(-|z_i - z_j|^2)`` normalised per row; loss
    ``sum_i KL(P_i || Q_i)`` (divided by n).

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the entropic affinity.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    early_exaggeration_coeff: float | None = 4.0
    p_symmetrization: ClassVar[str] = "none"

    def _auto_lr(self, n: int) -> float:
        # the Gaussian kernel's gradient is steeper than the Student one: n / 40 is stable
        # on digits where t-SNE's n / 4 diverges
        return max(n / 40.0, 1.0)

    def _gradient_fn(self, P: SparseAffinity, ctx: DistContext):
        inv_n = 1.0 / P.n

        def grad(z: torch.Tensor, it: int, phase) -> torch.Tensor:
            return sne_gradient(z, P, phase.exaggeration, ctx.shard) * inv_n

        return grad
