"""Negative-sampling embeddings with edge sampling: UMAP and LargeVis.

InfoTSNE, once a third method of this scheme, runs t-SNE's schedule with negatives shared by
blocks of rows (:mod:`~torchdr_sc.estimators.infotsne`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch

from .._validation import check_number
from ..affinity import SparseAffinity, UMAPAffinity
from ..distributed import DistContext
from ..knn import KNNGraph
from ..objective import make_objective
from ..objective.sampled import (
    CROWDED_TERMS,
    SINGLE_THREAD_WORK,
    SampledKernel,
    single_cpu_thread,
)
from ..optimize import OptimizeResult
from ._base import Embedder
from ._schedule import run_schedule
from ._stages import require_data_in_memory
from .densmap import (
    EXTRA_EPOCHS,
    DensMAPOptions,
    density_options,
    record_radii,
)
from .perplexity import PerplexityMixin


@dataclass(kw_only=True, eq=False, repr=False)
class _SampledEmbedder(Embedder):
    """UMAP-style stochastic optimisation with edge sampling and negative samples.

    Defaults follow umap-learn: plain SGD, learning rate 1 decaying linearly to 0, 500
    epochs below 10,000 samples and 200 above.
    """

    n_negatives: int = 5
    lr: float | str = 1.0
    scheduler: Any = "linear"
    init_scaling: float = 1.0
    early_exaggeration_coeff: float | None = 1.0
    early_exaggeration_iter: int | None = 0
    discard_NNs: bool = False

    _iteration_unit: ClassVar[str] = "epochs"
    _objective_method: ClassVar[str | None] = "negative_sampling"
    #: Expected pair terms per cell and epoch above which a cell's summed step is scaled
    #: down (:func:`~torchdr_sc.objective.sampled.crowding_scale`).
    _crowded_terms: ClassVar[int] = CROWDED_TERMS

    def _kernel(self) -> SampledKernel:
        raise NotImplementedError

    def _check_sampled_params(self) -> None:
        check_number("n_negatives", self.n_negatives, kind=int, low=1, closed="left")

    def _default_max_iter(self, n: int) -> int:
        return 500 if n <= 10_000 else 200

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        n = z0.shape[0]
        max_iter = self.planned_iterations(n)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        options = {
            "kernel": self._kernel(),
            "n_negatives": int(self.n_negatives),
            "seed": seed,
            "shard": ctx.shard if ctx.active else None,
            "discard_tails": self.discard_NNs,
            "compile": self.compile,
            "device": z0.device,
            "crowded_terms": self._crowded_terms,
        }
        objective = self._sampled_objective(P, ctx, options, max_iter)
        lr = 1.0 if self.lr == "auto" else float(self.lr)
        small = objective.work < SINGLE_THREAD_WORK
        with single_cpu_thread(z0.device.type == "cpu" and small):
            result = run_schedule(
                self,
                z0,
                objective,
                max_iter=max_iter,
                momenta=(0.0, 0.0),
                lr=lr,
                sync=ctx.sync if ctx.active else None,
            )
        self.execution_path_ = objective.path
        return result

    def _sampled_objective(
        self, P: SparseAffinity, ctx: DistContext, options: dict[str, Any], n_epochs: int
    ) -> Any:
        """The objective of the fit (:func:`~torchdr_sc.objective.make_objective`)."""
        return make_objective("negative_sampling", P, **options)


@lru_cache(maxsize=64)
def find_ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """Fit UMAP's ``a, b`` so that ``1 / (1 + a x^{2b})`` matches the target curve.

    The target is 1 for ``x < min_dist`` and ``exp(-(x - min_dist) / spread)`` beyond, on
    ``x`` in ``[0, 3 spread]`` (McInnes et al. 2018, section 4).
    """
    from scipy.optimize import curve_fit

    x = np.linspace(0, spread * 3, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))

    def curve(x: np.ndarray, a: float, b: float) -> np.ndarray:
        return 1.0 / (1.0 + a * x ** (2 * b))

    (a, b), _ = curve_fit(curve, x, y, p0=(1.0, 1.0), maxfev=10_000)
    return float(a), float(b)


@dataclass(kw_only=True, eq=False, repr=False)
class UMAP(DensMAPOptions, _SampledEmbedder):
    """UMAP (McInnes, Healy & Melville 2018).

    Input affinity: :class:`~torchdr_sc.affinity.UMAPAffinity` (fuzzy simplicial set on the
    ``n_neighbors`` graph, fuzzy union). Embedding kernel ``q = 1 / (1 + a d^{2b})``; loss
    ``-sum P log q - sum_{neg} log(1 - q)`` with ``n_negatives`` negatives per sampled edge.

    Parameters
    ----------
    n_neighbors
        Size of the neighbourhood, counting the point itself (umap-learn's convention).
    min_dist, spread
        Shape of the embedding kernel; ``a`` and ``b`` are fitted from them unless given.
    a, b
        Embedding kernel parameters.
    n_negatives
        Negative samples per sampled edge (umap-learn's ``negative_sample_rate``).
    repulsion_strength
        Weight of the repulsive term (umap-learn's ``repulsion_strength``).
    densmap
        Add densMAP's density-preservation term (Narayan, Berger & Cho, Nat. Biotechnol.
        2021) to the loss: the embedding then keeps which populations are tight and which
        diffuse (200 more epochs by default, as umap-learn). Needs ``X`` in memory (the
        local radii are measured in it).
    dens_lambda
        Weight of the density term (umap-learn's default 2.0).
    dens_frac
        Fraction of the epochs, at the end, with the density term (0.3).
    dens_var_shift
        Added to the variance of the embedding's log radii in the term (0.1).
    output_dens
        Also compute every point's log local radius in the data and in the embedding
        (``rad_orig_``, ``rad_emb_``), with or without ``densmap``.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.

    Attributes
    ----------
    rad_orig_, rad_emb_
        With ``output_dens``: every point's log local radius in the data and in the
        embedding (umap-learn's ``rad_orig_`` and ``rad_emb_``).
    """

    #: Hubs of a 15-neighbour graph legitimately expect up to ~65 terms per epoch (pbmc68k),
    #: against 76 at most on duplicated rows, where UMAP stays within 4x of its normal scale.
    _crowded_terms: ClassVar[int] = 128

    n_neighbors: int = 15
    min_dist: float = 0.1
    spread: float = 1.0
    a: float | None = None
    b: float | None = None
    repulsion_strength: float = 1.0

    def _check_method_params(self) -> None:
        self._umap_affinity()  # validates n_neighbors (UMAPAffinity owns that rule)
        check_number("spread", self.spread, low=0)
        check_number("min_dist", self.min_dist, low=0, high=self.spread, closed="both")
        for name in ("a", "b"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), low=0)
        check_number("repulsion_strength", self.repulsion_strength, low=0, closed="left")
        self._check_sampled_params()
        self._check_density_params()

    def _default_max_iter(self, n: int) -> int:
        extra = EXTRA_EPOCHS if self.densmap else 0
        return super()._default_max_iter(n) + extra

    def data_needed(self) -> tuple[str, str] | None:
        """densMAP's radii are measured in the data: ``X`` in memory with ``densmap`` or
        ``output_dens``."""
        if not self.needs_data_distances():
            return None
        why = "densmap / output_dens measure local radii in the data"
        return why, " or set densmap=False, output_dens=False"

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        if not self.needs_data_distances():
            return super()._optimize(z0, P, ctx, gen)
        data = self._fit_data
        if data is None:
            require_data_in_memory(self, None)
        result = super()._optimize(z0, P, ctx, gen)
        if self.output_dens:
            record_radii(self, P, data, result.embedding)
        return result

    def per_cell_outputs(self) -> dict[str, Any]:
        """Per-point results beside the embedding: ``rad_orig`` and ``rad_emb`` after a fit
        with ``output_dens`` (written to ``obs`` by ``tl.umap``), else nothing."""
        if not self.output_dens or getattr(self, "rad_emb_", None) is None:
            return {}
        return {"rad_orig": self.rad_orig_, "rad_emb": self.rad_emb_}

    def _sampled_objective(
        self, P: SparseAffinity, ctx: DistContext, options: dict[str, Any], n_epochs: int
    ) -> Any:
        if not self.densmap:
            return super()._sampled_objective(P, ctx, options, n_epochs)
        extra = density_options(self, self._fit_data, ctx, n_epochs)
        return make_objective("densmap", P, **options, **extra)

    def _base_neighbours(self) -> int:
        return int(self.n_neighbors) - 1

    def _min_samples_text(self) -> str:
        return f"n_neighbors ({self.n_neighbors})"

    def _umap_affinity(self) -> UMAPAffinity:
        return UMAPAffinity(n_neighbors=self.n_neighbors, metric=self.metric_in)

    def check_n_samples(self, n: int) -> None:
        """Check that ``n_neighbors`` fits ``n`` samples, then the shared checks."""
        self._umap_affinity().check_n_neighbors_fit(n)
        super().check_n_samples(n)

    def neighbours_needed(self, n: int) -> int:
        """``n_neighbors - 1`` (the point itself is not a neighbour), at most ``n - 1``."""
        return self._umap_affinity().required_k(n)

    def derived_params(self) -> dict[str, Any]:
        """UMAP's ``a`` and ``b`` as used (fitted from ``min_dist`` and ``spread`` if unset)."""
        a, b = self.ab()
        return {"a": a, "b": b}

    def ab(self) -> tuple[float, float]:
        """The embedding kernel's ``(a, b)``."""
        if self.a is not None and self.b is not None:
            return float(self.a), float(self.b)
        a, b = find_ab_params(float(self.spread), float(self.min_dist))
        return (
            float(self.a) if self.a is not None else a,
            float(self.b) if self.b is not None else b,
        )

    def _kernel(self) -> SampledKernel:
        a, b = self.ab()
        return SampledKernel("umap", a=a, b=b, repulsion=self.repulsion_strength, clip=4.0)

    def affinity_params(self) -> dict[str, Any]:
        """Parameters that determine P."""
        metric = "euclidean" if self.metric_in in ("sqeuclidean", "euclidean") else self.metric_in
        return {"affinity": "UMAPAffinity", "n_neighbors": int(self.n_neighbors), "metric": metric}

    def _affinity_from_knn(self, knn: KNNGraph) -> SparseAffinity:
        affinity = self._umap_affinity()
        return affinity.from_knn(knn.truncate(min(knn.k, affinity.required_k(knn.n_samples))))


@dataclass(kw_only=True, eq=False, repr=False)
class LargeVis(PerplexityMixin, _SampledEmbedder):
    """LargeVis (Tang et al. 2016).

    Input affinity: symmetrised :class:`~torchdr_sc.affinity.EntropicAffinity`; embedding
    kernel ``q = 1 / (1 + d^2)``; loss ``-sum P log q - gamma sum_{neg} log(1 - q)`` with
    ``n_negatives`` negatives per sampled edge.

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the entropic affinity.
    repulsion_strength
        ``gamma``, the weight of the negative term: 1 (TorchDR's); Tang et al. use 7, which
        tightens neighbourhoods and loosens the global layout (measured on the simulated
        atlas in ``benchmarks/README.md``).
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    repulsion_strength: float = 1.0

    def _check_method_params(self) -> None:
        self._check_perplexity()
        check_number("repulsion_strength", self.repulsion_strength, low=0, closed="left")
        self._check_sampled_params()

    def _kernel(self) -> SampledKernel:
        return SampledKernel("largevis", repulsion=self.repulsion_strength, clip=5.0)
