"""TSNEkhorn: t-SNE with doubly stochastic (Sinkhorn) affinities on both sides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._validation import check_number
from ..affinity import SparseAffinity
from ..distributed import DistContext
from ..objective.exact import matvec_columns
from ..optimize import OptimizeResult
from ._base import MAX_DENSE_SAMPLES
from ._schedule import run_schedule
from .tsne import _ExactEmbedder


@dataclass(kw_only=True, eq=False, repr=False)
class TSNEkhorn(_ExactEmbedder):
    """TSNEkhorn (Van Assel, Vayer, Flamary & Courty, SNEkhorn, NeurIPS 2023).

    Input affinity: :class:`~torchdr_sc.affinity.SymmetricEntropicAffinity` (symmetric,
    doubly stochastic, row entropies log(perplexity)). Embedding affinity: the Student
    kernel ``(1 + |z_i - z_j|^2)^{-1}`` projected onto doubly stochastic matrices by
    symmetric Sinkhorn iterations, warm-started at every step. The gradient uses the
    envelope theorem (the Sinkhorn potentials are held fixed), which gives the loss
    ``-sum P log K + sum Q`` of the TorchDR method table. Dense ``n x n`` computation:
    at most ``MAX_DENSE_SAMPLES`` samples.

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the symmetric entropic affinity.
    sinkhorn_iter
        Sinkhorn iterations per optimisation step (warm-started).
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    sinkhorn_iter: int = 5

    def _check_method_params(self) -> None:
        self._check_perplexity()
        check_number("sinkhorn_iter", self.sinkhorn_iter, kind=int, low=1, closed="left")

    def check_n_samples(self, n: int) -> None:
        if n > MAX_DENSE_SAMPLES:
            msg = (
                f"TSNEkhorn works on dense n x n matrices and supports at most "
                f"{MAX_DENSE_SAMPLES} samples; got {n}. Use TSNE, InfoTSNE or UMAP for larger data."
            )
            raise ValueError(msg)
        super().check_n_samples(n)

    def affinity_params(self) -> dict[str, Any]:
        """Parameters that determine P."""
        return {
            "affinity": "SymmetricEntropicAffinity",
            "perplexity": float(self.perplexity),
            "metric": self.metric_in,
        }

    def _affinity_from_data(self, x: torch.Tensor) -> SparseAffinity:
        from ..affinity import SymmetricEntropicAffinity

        aff = SymmetricEntropicAffinity(
            perplexity=self.perplexity,
            tol=self.tol_affinity,
            metric=self.metric_in,
        )
        dense = aff(x)
        return SparseAffinity.from_dense(dense, threshold=0.0)

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        from ..affinity import log_sinkhorn_potentials

        n = z0.shape[0]
        max_iter = self.planned_iterations(n)
        p_dense = P.to(dtype=z0.dtype).to_dense() / n
        state: dict[str, torch.Tensor | None] = {"f": None}
        eye = torch.eye(n, dtype=torch.bool, device=z0.device)

        def grad(z: torch.Tensor, it: int, phase) -> torch.Tensor:
            sq = (z * z).sum(1)
            d2 = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min_(0.0)
            log_k = -torch.log1p(d2).masked_fill_(eye, 0.0)
            log_k.masked_fill_(eye, float("-inf"))
            f = log_sinkhorn_potentials(log_k, state["f"], self.sinkhorn_iter, 0.0)
            state["f"] = f
            q = torch.exp(f[:, None] + f[None, :] + log_k) / n
            m = (phase.exaggeration * p_dense - q).mul_(torch.exp(log_k))
            return 4.0 * (z * m.sum(1, keepdim=True) - matvec_columns(m, z.T.contiguous()))

        lr = self._auto_lr(n) if self.lr == "auto" else float(self.lr)
        return run_schedule(self, z0, grad, max_iter=max_iter, momenta=(0.5, 0.8), lr=lr)
