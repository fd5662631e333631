"""TSNEkhorn: t-SNE with doubly stochastic (Sinkhorn) affinities on both sides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._validation import check_number
from ..affinity import SparseAffinity
from ..distributed import DistContext
from ..knn import KNNGraph
from ..objective import make_objective
from ..optimize import OptimizeResult
from ._base import MAX_DENSE_SAMPLES
from ._schedule import run_schedule
from .tsne import _ExactEmbedder, _Repulsion

#: Largest ``n * neighbours`` (kNN edges, ``neighbours = 3 * perplexity``) of the kNN / FFT
#: computation. Its peak memory is linear in the edges, dominated by the float64 dual solve
#: of P (about 15 edge-sized float64 vectors); the limit, 555,000 cells at perplexity 30,
#: keeps it within a workstation's memory (the measured peak at 100,000 cells and the
#: extrapolation are in ``benchmarks/README.md``; ``benchmarks/tsnekhorn_scale.py``).
MAX_KNN_EDGES = 50_000_000


@dataclass(kw_only=True, eq=False, repr=False)
class TSNEkhorn(_Repulsion, _ExactEmbedder):
    """TSNEkhorn (Van Assel, Vayer, Flamary & Courty, SNEkhorn, NeurIPS 2023).

    Input affinity: :class:`~torchdr_sc.affinity.SymmetricEntropicAffinity` (symmetric,
    doubly stochastic, row entropies log(perplexity)). Embedding affinity: the Student
    kernel ``(1 + |z_i - z_j|^2)^{-1}`` projected onto doubly stochastic matrices by
    symmetric Sinkhorn iterations (Cuturi 2013), warm-started at every step. The gradient
    uses the envelope theorem (the Sinkhorn potentials are held fixed), which gives the loss
    ``-sum P log K + sum Q`` of the TorchDR method table.

    Two computations, chosen by ``repulsion``:

    - ``'exact'``: P from all pairs of the data and dense ``n x n`` Sinkhorn, at most
      ``MAX_DENSE_SAMPLES`` samples (any ``n_components``).
    - ``'fft'``: P restricted to the symmetrised ``3 * perplexity``-NN graph
      (``SymmetricEntropicAffinity.from_knn``); the Sinkhorn sums
      ``sum_j K_ij e^{f_j}`` and the repulsion ``sum_j K_ij^2 e^{f_j} (z_i - z_j)`` are
      kernel sums with charges ``e^{f_j}`` interpolated on a grid and convolved by FFT
      (Linderman et al., Nature Methods 2019;
      ``torchdr_sc.objective.interpolated_weighted``), the attraction runs over P's
      edges. Memory and work per iteration are linear in n (1-D and 2-D embeddings): at
      most ``MAX_KNN_EDGES`` kNN edges (555,000 cells at perplexity 30); the measured
      time and memory at 100,000 cells are in ``benchmarks/README.md``.

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the symmetric entropic affinity.
    sinkhorn_iter
        Sinkhorn iterations per optimisation step (warm-started). With the FFT, the last
        one shares its kernel sums with the gradient, which therefore sees the potential
        of the one before.
    repulsion
        ``'exact'``, ``'fft'`` or ``'auto'``: exact up to
        ``AUTO_FFT_MIN_SAMPLES`` samples (or for
        ``n_components > 2``), FFT above; the choice is logged and kept in
        ``repulsion_used_``.
    n_interpolation_points, min_num_intervals, ints_in_interval
        The FFT grid, as for :class:`~torchdr_sc.TSNE` (4 nodes per box by default: the
        Sinkhorn scaling was checked on that grid only).
    max_step_norm
        As for :class:`~torchdr_sc.TSNE`.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    sinkhorn_iter: int = 5
    n_interpolation_points: int = 4

    _objective_method: ClassVar[str | None] = "tsnekhorn"

    def _check_method_params(self) -> None:
        self._check_perplexity()
        self._check_step_norm()
        check_number("sinkhorn_iter", self.sinkhorn_iter, kind=int, low=1, closed="left")
        self._check_repulsion()

    def check_n_samples(self, n: int) -> None:
        """Check the perplexity, and the dense limit when the exact computation is used."""
        if n > MAX_DENSE_SAMPLES and self.repulsion_for(n) == "exact":
            why = (
                "repulsion='exact'"
                if self.repulsion == "exact"
                else f"n_components={self.n_components}"
            )
            msg = (
                f"TSNEkhorn with {why} works on dense n x n matrices and supports at most "
                f"{MAX_DENSE_SAMPLES} samples; got {n}. Use repulsion='fft' (or 'auto') with "
                "n_components 1 or 2 for the kNN / FFT computation, or TSNE, InfoTSNE or UMAP."
            )
            raise ValueError(msg)
        edges = n * self.neighbours_needed(n)
        if self.repulsion_for(n) == "fft" and edges > MAX_KNN_EDGES:
            msg = (
                f"TSNEkhorn supports at most {MAX_KNN_EDGES:,} kNN edges (n x 3 perplexity) "
                f"in memory; got {n:,} samples x {self.neighbours_needed(n)} neighbours. Lower "
                "`perplexity`, or use TSNE, InfoTSNE or UMAP for larger data."
            )
            raise ValueError(msg)
        super().check_n_samples(n)

    @property
    def uses_knn_graph(self) -> bool:
        """Whether P comes from a kNN graph: with ``repulsion='fft'`` (or 'auto' for large n)."""
        return self.__dict__.get("_knn_path", self.repulsion == "fft")

    def affinity_params(self) -> dict[str, Any]:
        """Parameters that determine P (all pairs or kNN graph follows ``repulsion``)."""
        return {
            "affinity": "SymmetricEntropicAffinity",
            "perplexity": float(self.perplexity),
            "metric": self.metric_in,
            "repulsion": self.repulsion,
        }

    def _input_affinity(
        self, x: torch.Tensor | None, knn: KNNGraph | None, ctx: DistContext, timings: dict
    ) -> tuple[SparseAffinity, KNNGraph | None]:
        n = x.shape[0] if x is not None else knn.n_samples
        knn_path = self.repulsion_for(n) == "fft"
        if not knn_path and x is None:
            msg = (
                "TSNEkhorn with exact repulsion computes its affinity from all pairs of the "
                "data: pass `X`, or use repulsion='fft' to compute it on the kNN graph."
            )
            raise ValueError(msg)
        self.__dict__["_knn_path"] = knn_path
        try:
            return super()._input_affinity(x, knn, ctx, timings)
        finally:
            del self.__dict__["_knn_path"]

    def _affinity_from_data(self, x: torch.Tensor) -> SparseAffinity:
        aff = self._symmetric_entropic()
        dense = aff(x)
        return SparseAffinity.from_dense(dense, threshold=0.0)

    def _symmetric_entropic(self):
        from ..affinity import SymmetricEntropicAffinity

        return SymmetricEntropicAffinity(
            perplexity=self.perplexity, tol=self.tol_affinity, metric=self.metric_in
        )

    def _affinity_from_knn(self, knn: KNNGraph) -> SparseAffinity:
        P = self._symmetric_entropic().from_knn(knn)
        keep = P.weights > 0  # entries that underflowed in the output dtype
        if bool(keep.all()):
            return P
        return SparseAffinity(P.rows[keep], P.cols[keep], P.weights[keep], P.n)

    def _affinity_parts(self, knn: KNNGraph, ctx: DistContext | None) -> list[Any]:
        """The graph itself: P couples all rows, so every process solves the whole dual."""
        return [knn]

    def _affinity_from_parts(self, parts: list[Any], ctx: DistContext | None) -> SparseAffinity:
        """P from :meth:`_affinity_parts`' list (emptied)."""
        return self._affinity_from_knn(parts.pop())

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        n = z0.shape[0]
        max_iter = self.planned_iterations(n)
        lr = self._auto_lr(n) if self.lr == "auto" else float(self.lr)
        objective = make_objective(
            "tsnekhorn",
            P,
            z0=z0,
            sinkhorn_iter=self.sinkhorn_iter,
            repulsion=self._choose_repulsion(n),
            grid=self._grid_options(),
            compile=self.compile,
        )
        result = run_schedule(self, z0, objective, max_iter=max_iter, momenta=(0.5, 0.8), lr=lr)
        self.execution_path_ = objective.path
        return result
