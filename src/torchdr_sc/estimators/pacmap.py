"""PaCMAP: near, mid-near and further pairs on a three-phase weight schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._validation import check_number
from ..affinity import SparseAffinity
from ..affinity.pacmap import EXTRA_NEIGHBORS, PACMAPAffinity
from ..distributed import DistContext
from ..knn import KNNGraph
from ..objective import make_objective
from ..optimize import OptimizeResult
from ._base import Embedder
from ._schedule import run_schedule

#: Iterations when ``max_iter`` is ``None``: the paper's 100 + 100 + 250.
DEFAULT_MAX_ITER = 450


@dataclass(kw_only=True, eq=False, repr=False)
class PACMAP(Embedder):
    """PaCMAP (Wang, Huang, Rudin & Shaposhnik, *Understanding How Dimension Reduction Tools
    Work: An Empirical Approach to Deciphering t-SNE, UMAP, TriMap, and PaCMAP for Data
    Visualization*, JMLR 22(201), 2021).

    Three kinds of pairs, drawn once before the optimisation:

    - **near pairs**: among a point's ``n_neighbors + 50`` nearest neighbours, the
      ``n_neighbors`` with the smallest scaled distance ``d_ij^2 / (sigma_i sigma_j)``
      (``sigma_i`` the mean distance to the 4th-6th neighbours); they are the input
      affinity P (weight 1 on each pair; cached and reused like any P);
    - **mid-near pairs**, ``round(n_neighbors * MN_ratio)`` per point: for each, 6 random
      points of which the second closest is kept;
    - **further pairs**, ``round(n_neighbors * FP_ratio)`` per point: random points that are
      not near pairs.

    With ``d_ij = 1 + |y_i - y_j|^2`` the loss is ``w_NB sum d/(10 + d)`` over the near
    pairs, ``w_MN sum d/(10000 + d)`` over the mid-near and ``w_FP sum 1/(1 + d)`` over the
    further ones. The paper's schedule sets the weights: ``w_MN`` from 1000 down to 3 over
    the first ``iter_per_phase`` iterations with ``w_NB = 2`` (the global layout forms),
    then ``w_NB = w_MN = 3``, then ``w_NB = 1`` and no mid-near term (the local structure);
    ``w_FP = 1`` throughout. The optimiser is Adam at ``lr = 1`` for 450 iterations, from
    the PCA layout scaled to a small size, as in the paper's implementation. The gradient is
    ``objective.pacmap`` (a C loop on the CPU); the same seed gives the same
    pairs and the same embedding on a device whatever the number of threads, and under
    ``torchrun`` every process draws the same pairs and sums the gradient of its rows.

    Parameters
    ----------
    n_neighbors
        Near pairs per point (the point itself not counted): 10, the pacmap package's
        default.
    MN_ratio
        Mid-near pairs per near pair (0.5).
    FP_ratio
        Further pairs per near pair (2.0).
    iter_per_phase
        Length of each of the first two phases of the weight schedule (100).
    max_iter
        Iterations; ``None``: 450 (100 + 100 + 250, the paper's).
    lr
        Adam's learning rate (1.0; ``'auto'`` is the same).
    optimizer, optimizer_kwargs
        ``'Adam'`` with PyTorch's defaults, as TorchDR's PACMAP; any optimiser
        :class:`Embedder` accepts.
    init
        ``'pca'`` (default), ``'spectral'``, ``'normal'`` or an array.
    init_scaling
        Standard deviation of the first coordinate of the initial layout: 0.01. The pacmap
        package starts from 0.01 times the PCA coordinates of the data scaled to ``[0, 1]``,
        which is of that size (0.008 on ``digits``); any small start serves, as Adam's
        first steps are of size ``lr``.
    metric_in
        Input metric: the kNN search, the scaled distances and the mid-near candidates'
        ranking. Euclidean and squared euclidean give the same pairs.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.

    Notes
    -----
    ``fit`` needs the data in memory (the mid-near pairs are drawn from it): streamed input,
    or only a precomputed ``affinity`` / ``knn`` without ``X``, is refused. ``transform``
    places new points as the pacmap package does: their ``n_neighbors`` nearest reference
    points attract them (the near-pair term and its schedule) while the reference stays
    fixed, from the mean of those neighbours' positions.
    """

    n_neighbors: int = 10
    MN_ratio: float = 0.5
    FP_ratio: float = 2.0
    iter_per_phase: int = 100
    lr: float | str = 1.0
    optimizer: Any = "Adam"
    optimizer_kwargs: Any = None
    init_scaling: float = 0.01

    _objective_method: ClassVar[str | None] = "pacmap"

    def _check_method_params(self) -> None:
        check_number("n_neighbors", self.n_neighbors, kind=int, low=1, closed="left")
        check_number("MN_ratio", self.MN_ratio, low=0, closed="left")
        check_number("FP_ratio", self.FP_ratio, low=0, closed="left")
        check_number("iter_per_phase", self.iter_per_phase, kind=int, low=0, closed="left")

    def pair_counts(self) -> tuple[int, int, int]:
        """Near, mid-near and further pairs per point, as the pacmap package rounds them."""
        n_nb = int(self.n_neighbors)
        return n_nb, round(n_nb * float(self.MN_ratio)), round(n_nb * float(self.FP_ratio))

    def _pacmap_affinity(self) -> PACMAPAffinity:
        return PACMAPAffinity(int(self.n_neighbors), metric=self.metric_in)

    def _base_neighbours(self) -> int:
        return int(self.n_neighbors) + EXTRA_NEIGHBORS

    def neighbours_needed(self, n: int) -> int:
        """``n_neighbors + 50`` (the candidates of the near pairs), at most ``n - 1``."""
        return self._pacmap_affinity().required_k(n)

    def _min_samples_text(self) -> str:
        return f"n_neighbors ({self.n_neighbors})"

    def check_n_samples(self, n: int) -> None:
        """Check that ``n_neighbors`` is below ``n``, then the shared checks."""
        self._pacmap_affinity().check_n_samples(n)
        super().check_n_samples(n)

    def _default_max_iter(self, n: int) -> int:
        return DEFAULT_MAX_ITER

    def affinity_params(self) -> dict[str, Any]:
        """Parameters that determine P, the near pairs."""
        metric = "euclidean" if self.metric_in in ("sqeuclidean", "euclidean") else self.metric_in
        n_neighbors = int(self.n_neighbors)
        return {"affinity": "PACMAPAffinity", "n_neighbors": n_neighbors, "metric": metric}

    def _affinity_from_knn(self, knn: KNNGraph) -> SparseAffinity:
        return self._pacmap_affinity().from_knn(knn)

    def data_needed(self) -> tuple[str, str] | None:
        """The mid-near pairs are drawn from the data: ``X`` in memory, always."""
        return "PACMAP draws its mid-near pairs from the data, in memory", ""

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        n = z0.shape[0]
        _, n_mid_near, n_further = self.pair_counts()
        # the pairs' seed comes from the fit's seed (not `gen`, which differs between
        # processes), rank 0's everywhere: every process and a single one draw the same pairs
        seed = torch.tensor([int(self.seed_) + 1], dtype=torch.int64, device=z0.device)
        if ctx.active:
            seed = ctx.broadcast(seed)
        objective = make_objective(
            "pacmap",
            P.to(dtype=z0.dtype),
            data=self._fit_data,
            n_mid_near=n_mid_near,
            n_further=n_further,
            seed=int(seed),
            metric=self.metric_in,
            iter_per_phase=int(self.iter_per_phase),
            shard=ctx.shard if ctx.active else None,
            compile=self.compile,
        )
        lr = 1.0 if self.lr == "auto" else float(self.lr)
        result = run_schedule(
            self,
            z0,
            objective,
            max_iter=self.planned_iterations(n),
            momenta=(0.0, 0.0),
            lr=lr,
            sync=ctx.sync if ctx.active else None,
        )
        self.execution_path_ = objective.path
        return result
