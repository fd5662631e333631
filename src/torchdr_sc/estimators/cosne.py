"""CO-SNE: t-SNE in the Poincaré ball."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .._validation import check_number
from ..affinity import SparseAffinity
from ..distributed import DistContext
from ..initialization import into_poincare_ball
from ..objective import make_objective
from ..optimize import OptimizeResult, RiemannianAdam
from ._base import Embedder
from ._schedule import run_schedule
from .perplexity import PerplexityMixin

#: Iterations when ``max_iter`` is ``None``: TorchDR's COSNE runs 2,000.
DEFAULT_MAX_ITER = 2000
#: ``lr='auto'``: the step, in hyperbolic distance, Riemannian Adam takes per iteration.
AUTO_LR = 0.05


@dataclass(kw_only=True, eq=False, repr=False)
class COSNE(PerplexityMixin, Embedder):
    """CO-SNE (Guo, Guo & Yu, *CO-SNE: Dimensionality Reduction and Visualization for
    Hyperbolic Data*, CVPR 2022): t-SNE in the Poincaré ball.

    The embedding lies in the unit ball with its hyperbolic metric (curvature -1). Input
    affinity: t-SNE's (:class:`~torchdr_sc.affinity.EntropicAffinity` on the ``3 *
    perplexity`` nearest neighbours, symmetrised, scaled to sum 1). Output similarity: the
    hyperbolic Cauchy kernel ``w_ij = gamma / (D_ij + gamma^2)``, ``D_ij`` the squared
    hyperbolic distance. The loss is t-SNE's ``-sum P log w + log sum_{i != j} w`` plus the
    paper's h-loss, ``lambda1 / n sum_i (|x_i|^2 - d(0, y_i)^2)^2``, which pulls each point's
    squared hyperbolic distance to the origin towards its input row's squared norm
    (``torchdr_sc.objective.cosne``). The optimiser is Riemannian Adam
    (:class:`~torchdr_sc.optimize.RiemannianAdam`): the Euclidean gradient scaled by
    ``(1 - |y|^2)^2 / 4``, steps along geodesics, points kept strictly inside the ball.

    **Exact only.** The repulsion runs over all pairs in row blocks (``O(n^2)`` per
    iteration, no ``n x n`` matrix): there is no FFT path (the interpolation of TSNE's
    ``repulsion='fft'`` needs a kernel of ``y_i - y_j``, a convolution; the hyperbolic
    kernel also depends on ``|y_i|`` and ``|y_j|``) and no sampled one (a sampled
    normaliser, as InfoTSNE's, would apply, but is not implemented; TorchDR's COSNE sums all
    pairs of its embedding too). Use it up to some tens of thousands of points.

    **Euclidean input.** The paper's input is hyperbolic (points in a ball, whose norms
    encode depth in a hierarchy). As TorchDR's COSNE, the h-loss takes the squared
    Euclidean norms ``|x_i|^2`` of whatever rows it is given: for Euclidean data (a PCA,
    standardised features) the targets are the rows' squared distances to the data's
    origin, large for many features, so that points are pushed towards the ball's edge;
    ``lambda1=0`` turns the term off (plain t-SNE in the ball), and data scaled so that
    ``|x_i|^2`` is a few units keeps the targets within the ball's usable range (a point
    of norm ``1 - 1e-5``, the float32 limit, is 12.2 from the origin; targets beyond are
    logged as a warning). On ``digits``, rows
    scaled to a mean squared norm of 4 with ``lambda1=0.1`` give clusters as well separated
    as TSNE's (silhouettes, ``docs/guide/formulation.md``).

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the entropic affinity (30).
    lambda1
        Weight of the h-loss (1, TorchDR's default); 0 turns it off.
    gamma
        Scale of the Cauchy kernel (2, TorchDR's default).
    lr
        Riemannian Adam's learning rate: roughly the hyperbolic length of a point's step.
        ``'auto'`` (default): ``AUTO_LR`` = 0.05.
    optimizer
        :class:`~torchdr_sc.optimize.RiemannianAdam` (the only one: the points must stay in
        the ball); ``optimizer_kwargs`` may set its ``betas`` and ``eps``.
    init
        ``'pca'`` (default), ``'spectral'`` or ``'normal'`` (TorchDR's ``'hyperbolic'``),
        rescaled so that the first coordinate has standard deviation ``init_scaling`` and
        mapped into the ball by the exponential map at the origin; or an array of points
        inside the unit ball, used as given.
    init_scaling
        0.5, TorchDR's.
    max_iter
        Iterations; ``None``: ``DEFAULT_MAX_ITER`` = 2,000 (TorchDR's), the first
        ``early_exaggeration_iter`` = 250 with the attraction multiplied by
        ``early_exaggeration_coeff`` = 12.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.

    Notes
    -----
    ``fit`` needs the data in memory (the h-loss reads its norms): streamed input, or only a
    precomputed ``affinity`` / ``knn`` without ``X``, is refused. There is no ``transform``.
    The same seed gives the same embedding, bit for bit, whatever the number of CPU threads.
    """

    lambda1: float = 1.0
    gamma: float = 2.0
    optimizer: Any = RiemannianAdam
    optimizer_kwargs: Any = None
    init_scaling: float = 0.5
    early_exaggeration_coeff: float | None = 12.0
    early_exaggeration_iter: int | None = 250

    _objective_method: ClassVar[str | None] = "cosne"

    def _check_method_params(self) -> None:
        self._check_perplexity()
        check_number("lambda1", self.lambda1, low=0, closed="left")
        check_number("gamma", self.gamma, low=0)
        if self.optimizer is not RiemannianAdam:
            msg = (
                f"`optimizer` must be torchdr_sc.optimize.RiemannianAdam for COSNE (its points "
                f"live in the Poincaré ball); got {self.optimizer!r}: leave the default."
            )
            raise ValueError(msg)

    def check_n_samples(self, n: int) -> None:
        """The shared checks, then that a given ``init`` lies inside the unit ball."""
        super().check_n_samples(n)
        if not isinstance(self.init, str):
            arr = np.asarray(self.init.cpu() if isinstance(self.init, torch.Tensor) else self.init)
            largest = float(np.sqrt((arr.astype(np.float64) ** 2).sum(1)).max(initial=0.0))
            if largest >= 1.0:
                msg = (
                    f"`init` must hold points inside the unit ball for COSNE; its largest row "
                    f"norm is {largest:.3g}: scale it below 1, or use init='pca'."
                )
                raise ValueError(msg)

    def data_needed(self) -> tuple[str, str] | None:
        """The h-loss reads the norms of the data's rows: ``X`` in memory, always."""
        return "COSNE's h-loss reads the norms of the data's rows, in memory", ""

    def _default_max_iter(self, n: int) -> int:
        return DEFAULT_MAX_ITER

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        z0 = into_poincare_ball(z0, given=not isinstance(self.init, str))
        objective = make_objective(
            "cosne",
            P.to(dtype=z0.dtype),
            data=self._fit_data.to(z0.dtype),
            gamma=float(self.gamma),
            lambda1=float(self.lambda1),
            shard=ctx.shard if ctx.active else None,
            reduce_scalar=ctx.reduce_scalar if ctx.active else None,
        )
        lr = AUTO_LR if self.lr == "auto" else float(self.lr)
        result = run_schedule(
            self,
            z0,
            objective,
            max_iter=self.planned_iterations(z0.shape[0]),
            momenta=(0.0, 0.0),
            lr=lr,
            sync=ctx.sync if ctx.active else None,
        )
        self.execution_path_ = objective.path
        return result
