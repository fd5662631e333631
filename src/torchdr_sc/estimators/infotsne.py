"""InfoTSNE: InfoNC-t-SNE on t-SNE's schedule, with negatives shared by blocks of rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._validation import check_number
from ..affinity import SparseAffinity
from ..distributed import DistContext
from ..objective import make_objective
from ..optimize import OptimizeResult
from ._base import Embedder
from ._schedule import run_schedule
from .perplexity import PerplexityMixin


@dataclass(kw_only=True, eq=False, repr=False)
class InfoTSNE(PerplexityMixin, Embedder):
    """InfoNC-t-SNE (Damrich, Böhm, Hamprecht & Kobak, *From t-SNE to UMAP with contrastive
    learning*, ICLR 2023).

    Input affinity: symmetrised :class:`~torchdr_sc.affinity.EntropicAffinity` (t-SNE's P,
    summing to 1); embedding kernel ``w_ij = 1 / (1 + |z_i - z_j|^2)``; loss, as TorchDR
    documents it,

    ``-sum_ij P_ij log w_ij + sum_i p_i log sum_{k in Neg(i)} w_ik``

    with ``p_i = sum_j P_ij`` and ``Neg(i)`` ``n_negatives`` points drawn uniformly at every
    iteration: t-SNE's loss with its normaliser ``Z`` estimated per row from the negatives
    (the contrastive estimate of the paper). Every iteration evaluates the attraction over
    all of P's edges, as t-SNE does
    (``objective.attraction.StudentAttraction``), and the repulsion with fresh
    negatives for every point: the rows are shuffled into blocks of ``n_negatives`` and each
    block takes the rows of another as its negatives
    (``objective.infonce.InfoNCERepulsion``), ``n x n_negatives / 2``
    kernel values per iteration, one pair of blocks at a time (a C loop on the CPU),
    linear in ``n``. The
    schedule is t-SNE's: early exaggeration, then the main phase, with SGD momentum 0.5 then
    0.8 and ``lr='auto'`` = ``max(n / (4 e), 50)`` in each phase (``e`` the phase's
    exaggeration), as TorchDR's InfoTSNE, with t-SNE's per-coordinate gains (``optimizer``).

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the entropic affinity.
    n_negatives
        Negatives per point and iteration (TorchDR's default, 300). Below ``2 n_negatives``
        points every other point is a negative (the exact per-row normaliser).
    discard_NNs
        Do not count a negative that is one of the point's neighbours in P.
    early_exaggeration_coeff, early_exaggeration_iter
        Multiplier of the attraction during the first iterations: 12 for 250 iterations
        (TorchDR's defaults).
    max_iter
        Iterations; ``None``: 1,000 (TorchDR's default).
    optimizer
        ``'DeltaBarDelta'`` (default): SGD with momentum and per-coordinate gains, as
        :class:`TSNE` uses (openTSNE's and FIt-SNE's optimiser), or any optimiser
        :class:`Embedder` accepts. TorchDR's default is ``'SGD'``: with the same rates it
        reaches the same local figures but orders the clusters of the simulated atlas
        along its pseudotime worse than openTSNE (the comparison in
        ``tests/test_atlas_quality.py``), which the gains recover.
    scheduler
        ``None``: a constant rate in each phase. TorchDR's default ``'LinearLR'`` is
        PyTorch's 5-iteration warm-up from a third of the rate, rebuilt at each phase; a
        scheduler given here runs over the whole fit instead and replaces the per-phase
        ``lr='auto'`` rates.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    optimizer: Any = "DeltaBarDelta"
    n_negatives: int = 300
    discard_NNs: bool = False
    early_exaggeration_coeff: float | None = 12.0
    early_exaggeration_iter: int | None = 250

    _objective_method: ClassVar[str | None] = "infotsne"

    def _check_method_params(self) -> None:
        self._check_perplexity()
        check_number("n_negatives", self.n_negatives, kind=int, low=1, closed="left")

    def _auto_lr(self, n: int) -> float:
        """TorchDR's (scikit-learn's) rule for the exaggeration phase: ``n / (4 e)``."""
        coeff = self.early_exaggeration_coeff or 1.0
        return max(n / (4.0 * coeff), 50.0)

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        n = z0.shape[0]
        max_iter = self.planned_iterations(n)
        # the shuffles must agree between processes (they split the pairs of blocks)
        seed = torch.randint(0, 2**62, (1,), generator=gen, device=gen.device)
        if ctx.active:
            seed = ctx.broadcast(seed.to(z0.device))
        objective = make_objective(
            "infotsne",
            P.to(dtype=z0.dtype),
            n_negatives=int(self.n_negatives),
            seed=int(seed),
            shard=ctx.shard,
            compile=self.compile,
            exclude_neighbours=bool(self.discard_NNs),
            rank=ctx.rank,
            world_size=ctx.world_size,
        )

        lr = self._auto_lr(n) if self.lr == "auto" else float(self.lr)
        main_scale = max(n / 4.0, 50.0) / lr if self.lr == "auto" else 1.0
        result = run_schedule(
            self,
            z0,
            objective,
            max_iter=max_iter,
            momenta=(0.5, 0.8),
            lr=lr,
            sync=ctx.sync if ctx.active else None,
            main_lr_scale=main_scale,
        )
        self.execution_path_ = objective.path
        return result
