"""t-SNE and SNE, each with an exact or an FFT-interpolated repulsion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._logging import get_logger
from .._validation import check_number, check_option
from ..affinity import SparseAffinity
from ..distributed import DistContext
from ..objective import Objective, make_objective
from ..objective.interpolated import SUPPORTED_DIMS
from ..optimize import OptimizeResult
from ._base import Embedder
from ._schedule import run_schedule
from ._stages import require_data_in_memory
from .densne import DenSNEOptions, densne_options, record_radii
from .perplexity import PerplexityMixin

logger = get_logger(__name__)

#: With ``repulsion='auto'``, the exact repulsion is used up to this many samples and the
#: FFT-interpolated one above: the exact repulsion costs n^2 per iteration, the FFT one a
#: grid of fixed cost plus n, and they cross near this size (``benchmarks/README.md``,
#: "t-SNE's repulsion: exact or FFT").
AUTO_FFT_MIN_SAMPLES = 2_500
REPULSIONS = ("auto", "exact", "fft")
#: TSNE's iterations when ``max_iter`` is ``None``: 250 with early exaggeration, then 500
#: (openTSNE's and FIt-SNE's schedule; Belkina et al. 2019). With the gains optimiser the KL
#: divergence reached on digits and pbmc68k_reduced is within 5 % of openTSNE's (tested).
DEFAULT_MAX_ITER = 750


@dataclass(kw_only=True, eq=False, repr=False)
class _ExactEmbedder(PerplexityMixin, Embedder):
    """t-SNE-style schedule: exaggeration phase with momentum 0.5, then momentum 0.8."""

    early_exaggeration_coeff: float | None = 12.0
    early_exaggeration_iter: int | None = 250
    max_step_norm: float | None = None

    def _check_method_params(self) -> None:
        self._check_perplexity()
        self._check_step_norm()

    def _check_step_norm(self) -> None:
        if self.max_step_norm is not None:
            check_number("max_step_norm", self.max_step_norm, low=0)

    def _auto_lr(self, n: int) -> float:
        coeff = self.early_exaggeration_coeff or 1.0
        return max(n / (4.0 * coeff), 50.0)

    def _auto_main_lr_scale(self, n: int) -> float:
        """Factor on ``lr='auto'`` after the exaggeration phase (1: one rate throughout)."""
        return 1.0

    def _objective(self, P: SparseAffinity, ctx: DistContext) -> Objective:
        """The method's objective (:func:`~torchdr_sc.objective.make_objective`)."""
        raise NotImplementedError

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        max_iter = self.planned_iterations(z0.shape[0])
        lr = self._auto_lr(z0.shape[0]) if self.lr == "auto" else float(self.lr)
        objective = self._objective(P.to(dtype=z0.dtype), ctx)
        sync = ctx.sync if ctx.active else None
        main_scale = self._auto_main_lr_scale(z0.shape[0]) if self.lr == "auto" else 1.0
        result = run_schedule(
            self,
            z0,
            objective,
            max_iter=max_iter,
            momenta=(0.5, 0.8),
            lr=lr,
            sync=sync,
            main_lr_scale=main_scale,
            max_step_norm=self.max_step_norm,
        )
        self.execution_path_ = objective.path
        return result


@dataclass(kw_only=True, eq=False, repr=False)
class _Repulsion:
    """``repulsion`` ('auto', 'exact', 'fft') and the interpolation grid, for TSNE and SNE."""

    repulsion: str = "auto"
    n_interpolation_points: int = 3
    min_num_intervals: int = 50
    ints_in_interval: float = 1.0

    def _check_repulsion(self) -> None:
        check_option("repulsion", self.repulsion, REPULSIONS)
        check_number(
            "n_interpolation_points",
            self.n_interpolation_points,
            kind=int,
            low=1,
            high=10,
            closed="both",
        )
        check_number("min_num_intervals", self.min_num_intervals, kind=int, low=1, closed="left")
        check_number("ints_in_interval", self.ints_in_interval, low=0)
        if self.repulsion == "fft" and self.n_components not in SUPPORTED_DIMS:
            msg = (
                f"repulsion='fft' supports n_components 1 or 2; got {self.n_components}: use "
                "repulsion='exact' (or 'auto')."
            )
            raise ValueError(msg)

    def repulsion_for(self, n: int) -> str:
        """The repulsion used for ``n`` samples (``'exact'`` or ``'fft'``)."""
        if self.repulsion != "auto":
            return self.repulsion
        if self.n_components in SUPPORTED_DIMS and n > AUTO_FFT_MIN_SAMPLES:
            return "fft"
        return "exact"

    def derived_params(self) -> dict[str, Any]:
        """The repulsion used (``'exact'`` or ``'fft'``), once fitted."""
        used = getattr(self, "repulsion_used_", None)
        return {} if used is None else {"repulsion_used": used}

    def _grid_options(self) -> dict[str, Any]:
        return {
            "n_interpolation_points": self.n_interpolation_points,
            "min_num_intervals": self.min_num_intervals,
            "ints_in_interval": self.ints_in_interval,
        }

    def _choose_repulsion(self, n: int) -> str:
        self.repulsion_used_ = self.repulsion_for(n)
        why = "" if self.repulsion != "auto" else f" (auto: {n} samples)"
        logger.info("%s repulsion: %s%s", type(self).__name__, self.repulsion_used_, why)
        return self.repulsion_used_


@dataclass(kw_only=True, eq=False, repr=False)
class TSNE(DenSNEOptions, _Repulsion, _ExactEmbedder):
    """t-SNE (van der Maaten & Hinton 2008), exact or with FFT-interpolated repulsion.

    Input affinity: :class:`~torchdr_sc.affinity.EntropicAffinity` on the ``3 * perplexity``
    nearest neighbours, symmetrised ``(P + P^T) / 2n``. Embedding kernel
    ``Q_ij = (1 + |z_i - z_j|^2)^{-1}``; loss ``-sum P log Q + log sum Q``. The attraction
    runs over P's edges; the repulsion over all pairs is either exact (row blocks,
    ``O(n^2)`` per iteration, no ``n x n`` matrix) or interpolated on a grid and convolved
    by FFT (``O(n)``; Linderman et al., Nature Methods 2019; 1-D and 2-D embeddings).

    Under ``torchrun`` P stays sharded by rows: each process holds the neighbours and the
    rows of P of its own block only (``affinity_in_.row_range``), unless ``init='spectral'``
    or den-SNE (``densne`` / ``output_dens``) needs the whole P.

    The default optimiser is SGD with momentum and per-coordinate gains
    (:class:`~torchdr_sc.optimize.DeltaBarDelta`, as openTSNE and FIt-SNE): on digits it
    reaches openTSNE's KL(P || Q) (0.757 vs 0.756) where plain SGD stops at 1.09.

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the entropic affinity.
    optimizer
        ``'DeltaBarDelta'`` (default), or any ``torch.optim`` name / class (TorchDR's
        default is ``'SGD'``).
    max_iter
        Iterations; ``None`` (default): ``DEFAULT_MAX_ITER`` = 750, 250 of them with
        early exaggeration (openTSNE's schedule; TorchDR runs 1,000).
    compile
        How the attraction over P's edges runs on CPU: ``'auto'`` (default) a small C kernel
        built once per machine (``objective.native``; eager PyTorch without a C compiler),
        ``True`` :func:`torch.compile`, ``False`` eager PyTorch. All three give the same
        embedding to the bit; they differ in speed only.
    repulsion
        ``'exact'``, ``'fft'`` or ``'auto'``: exact up to ``AUTO_FFT_MIN_SAMPLES``
        samples (or for ``n_components > 2``), FFT above; the choice is logged and kept in
        ``repulsion_used_``.
    n_interpolation_points
        FFT: interpolation nodes per box and dimension.
    min_num_intervals
        FFT: fewest boxes per dimension of the grid.
    ints_in_interval
        FFT: widest box, in embedding units. The defaults are openTSNE's (3 nodes, width
        1): a gradient with relative error about 1.2 % on 5,000 points in 2-D; 4 nodes give
        0.3 % with FFTs 1.8 times larger, and embeddings of the same quality.
    max_step_norm
        With the default optimiser, the longest step a point takes in one iteration
        (``None``: no limit; openTSNE's option of the same name).
    densne
        Add den-SNE's density-preservation term (Narayan, Berger & Cho, Nat. Biotechnol.
        2021; ``torchdr_sc.objective.densne``) over the last ``dens_frac`` of the
        iterations: the loss gains ``-2 dens_lambda`` times the correlation between every
        point's log local radius in the data (P-weighted mean squared distance over its
        edges of P) and in the embedding (the same with t-SNE's Cauchy kernel), so that
        tight populations stay tight and diffuse ones diffuse. The embedding's radii run
        over P's edges, as in the ``densne`` program. Needs ``X`` in memory (the radii are
        measured in it). The term should start once the embedding has expanded (at the
        defaults, at iteration 525 of 750): in a compact embedding it outweighs t-SNE's
        loss (a warning says so when it runs during early exaggeration). ``transform``
        places new points with t-SNE's own objective.
    dens_lambda
        Weight of the density term (den-SNE's default 0.1; the factor 2 above makes its
        balance against the KL gradient the ``densne`` program's).
    dens_frac
        Fraction of the iterations, at the end, with the density term (0.3).
    dens_var_shift
        Added to the variance of the embedding's log radii in the term (0.1, den-SNE's
        ``var_shift``).
    output_dens
        Also compute every point's log local radius in the data (on P) and in the embedding
        (on the embedding's own entropic P of the same perplexity, as ``densne`` reports
        them): ``rad_orig_``, ``rad_emb_``, with or without ``densne``.
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.

    Attributes
    ----------
    rad_orig_, rad_emb_
        With ``output_dens``: every point's log local radius in the data and in the
        embedding (numpy ``(n,)``).
    """

    optimizer: Any = "DeltaBarDelta"

    _objective_method: ClassVar[str | None] = "tsne"
    keeps_row_blocks: ClassVar[bool] = True

    def holds_row_blocks(self, ctx: DistContext | None) -> bool:
        """P sharded by rows under ``torchrun``, except with den-SNE's term or radii (their
        radii in the data are measured on every row of P)."""
        return super().holds_row_blocks(ctx) and not self.needs_data_distances()

    def _check_method_params(self) -> None:
        super()._check_method_params()
        self._check_repulsion()
        self._check_density_params()

    def data_needed(self) -> tuple[str, str] | None:
        """den-SNE's radii are measured in the data: ``X`` in memory with ``densne`` or
        ``output_dens``."""
        if not self.needs_data_distances():
            return None
        return "densne / output_dens measure local radii in the data", (
            " or set densne=False, output_dens=False"
        )

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
        with ``output_dens`` (written to ``obs`` by ``tl.tsne``), else nothing."""
        if not self.output_dens or getattr(self, "rad_emb_", None) is None:
            return {}
        return {"rad_orig": self.rad_orig_, "rad_emb": self.rad_emb_}

    def _default_max_iter(self, n: int) -> int:
        """openTSNE's schedule: 250 exaggerated iterations, then 500 (750 in all)."""
        return DEFAULT_MAX_ITER

    def _auto_main_lr_scale(self, n: int) -> float:
        """``lr='auto'`` after the exaggeration phase: ``n / 4`` (floor 50), i.e. ``n /
        exaggeration`` in each phase with our gradient's factor 4, as openTSNE (Belkina et
        al. 2019, Nat. Commun. 10:5415). One rate ``n / (4 coeff)`` throughout left the main
        phase converging many times more slowly, and neighbourhood preservation fell behind
        openTSNE's as n grew (``benchmarks/README.md``)."""
        return max(n / 4.0, 50.0) / self._auto_lr(n)

    def _objective(self, P: SparseAffinity, ctx: DistContext) -> Objective:
        options = {
            "shard": ctx.shard,
            "repulsion": self._choose_repulsion(P.n),
            "grid": self._grid_options(),
            "compile": self.compile,
            "reduce_scalar": ctx.reduce_scalar if ctx.active else None,
        }
        if not self.densne:
            return make_objective("tsne", P, **options)
        extra = densne_options(self, self._fit_data, ctx, self.planned_iterations(P.n))
        return make_objective("densne", P, **options, **extra)


@dataclass(kw_only=True, eq=False, repr=False)
class SNE(_Repulsion, _ExactEmbedder):
    """Stochastic Neighbor Embedding (Hinton & Roweis 2002), exact or FFT repulsion.

    Input affinity: row-stochastic :class:`~torchdr_sc.affinity.EntropicAffinity` (not
    symmetrised); embedding kernel ``exp(-|z_i - z_j|^2)`` normalised per row; loss
    ``sum_i KL(P_i || Q_i)`` (divided by n). The repulsion is exact (``O(n^2)``) or, with
    ``repulsion='fft'`` (``'auto'``: above ``AUTO_FFT_MIN_SAMPLES`` samples in 1-D and
    2-D), two Gaussian kernel sums interpolated on a grid and convolved by FFT
    (``torchdr_sc.objective.interpolated.sne_repulsion_fft``; relative error about
    1e-4 at the defaults).

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the entropic affinity.
    repulsion, n_interpolation_points, min_num_intervals, ints_in_interval, max_step_norm
        As for :class:`TSNE` (4 nodes per box by default: the Gaussian kernel's sums were
        checked on that grid only).
    **kwargs
        See :class:`~torchdr_sc.estimators.Embedder` for the shared parameters.
    """

    early_exaggeration_coeff: float | None = 4.0
    n_interpolation_points: int = 4
    p_symmetrization: ClassVar[str] = "none"

    def _check_method_params(self) -> None:
        super()._check_method_params()
        self._check_repulsion()

    def _auto_lr(self, n: int) -> float:
        # the Gaussian kernel's gradient is steeper than the Student one: n / 40 is stable
        # on digits where t-SNE's n / 4 diverges
        return max(n / 40.0, 1.0)

    def _objective(self, P: SparseAffinity, ctx: DistContext) -> Objective:
        repulsion = self._choose_repulsion(P.n)
        return make_objective(
            "sne", P, shard=ctx.shard, repulsion=repulsion, grid=self._grid_options()
        )
