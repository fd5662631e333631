"""Every method's objective, built by one function: :func:`make_objective`.

An objective is what the optimisation loop calls at every iteration: ``objective(z,
iteration, phase)`` returns the gradient of the method's loss at ``z`` (``phase.exaggeration``
multiplies the attraction), and ``objective.path`` says how it runs (the estimator records
it as ``execution_path_``). Estimators choose a method and configure it; the arithmetic is
in the modules the package notes list, and this module only assembles it.

With ``reference=`` the same objective moves new points only, against a reference embedding
held fixed (``transform``): ``P`` is then :class:`ReferenceRows`, the new points' affinity
rows over their reference neighbours, and the gradient is that of the new points' terms.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import torch

from .._random import make_generator
from .._reduce import fixed_order_sum
from .._validation import check_option
from ..affinity import SparseAffinity
from ..distributed import RowShard
from . import native, native_epoch, native_infonce, native_pacmap
from .attraction import StudentAttraction
from .cosne import COSNEObjective
from .density import DensMAPObjective
from .densne import DenSNEObjective
from .epoch import SampledEpoch
from .exact import sne_attraction, sne_gradient, tsne_gradient
from .infonce import InfoNCERepulsion, SampledStudentRepulsion
from .interpolated import sne_repulsion_fft, student_repulsion_terms_fft
from .matching import AutogradObjective
from .pacmap import PACMAPObjective
from .partial import (
    GridStudentRepulsion,
    SampledPartialEpoch,
    StudentRepulsion,
    clip_rows,
    sne_partial_gradient,
    tsne_partial_gradient,
)
from .sampled import CROWDED_TERMS, SampledKernel
from .tsnekhorn import dense_gradient, fft_gradient

__all__ = [
    "OBJECTIVES",
    "AutogradObjective",
    "COSNEObjective",
    "InfoTSNEObjective",
    "NegativeSamplingObjective",
    "PACMAPObjective",
    "ReferenceRows",
    "SNEObjective",
    "TSNEObjective",
    "TSNEkhornObjective",
    "make_objective",
    "prepare_objective",
]


class ReferenceRows(NamedTuple):
    """The new points' affinity rows over their reference neighbours (``transform``).

    Attributes
    ----------
    indices
        ``(m, k)`` reference neighbours of the ``m`` new points.
    weights
        ``(m, k)`` their affinities.
    """

    indices: torch.Tensor
    weights: torch.Tensor


def _scale_to_one(
    P: SparseAffinity, reduce_scalar: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> float:
    """``1 / sum P`` (summed in a fixed order), applied in the kernels instead of a copy of P.

    A block of rows of a row-sharded P (``P.row_range``) adds the other processes' sums
    with ``reduce_scalar``."""
    total = fixed_order_sum(P.weights, torch.float64)
    if not P.holds_all_rows:
        if reduce_scalar is None:
            msg = "P holds one block of rows: its total needs `reduce_scalar` (torchrun)."
            raise ValueError(msg)
        total = reduce_scalar(total.reshape(()))
    return 1.0 / float(total)


class _OnReference:
    """The KL-type gradient of new points on a fixed reference (openTSNE's ``transform``):
    attraction to their neighbours, repulsion from the reference (``None``: SNE's), every
    row clipped at ``clip``."""

    def __init__(self, y: torch.Tensor, rows: ReferenceRows, repulsion: Any, clip: float | None):
        self.y, self.rows, self.repulsion, self.clip = y, rows, repulsion, clip

    def __call__(self, z: torch.Tensor, exaggeration: float) -> torch.Tensor:
        idx, p = self.rows
        if self.repulsion is None:
            g = sne_partial_gradient(z, self.y, idx, p, exaggeration)
        else:
            g = tsne_partial_gradient(z, self.y, idx, p, exaggeration, self.repulsion)
        return clip_rows(g, self.clip)


class TSNEObjective:
    """t-SNE (van der Maaten & Hinton 2008): attraction over P's edges, repulsion over all
    pairs, exact or interpolated on a grid by FFT (Linderman et al. 2019).

    Parameters
    ----------
    P
        The input affinity (any total: it is scaled to 1 in the kernels), or the new points'
        rows with ``reference``.
    shard
        Rows this process owns (default: all).
    reference
        ``(n, d)`` reference embedding held fixed; the objective then moves new points only.
    repulsion
        ``'exact'`` (row blocks, ``O(n^2)``) or ``'fft'``.
    grid
        The FFT grid's options (``n_interpolation_points``, ``min_num_intervals``,
        ``ints_in_interval``).
    compile
        How the attraction runs (:func:`~torchdr_sc.objective.attraction.attraction_path`).
    reduce_scalar
        All-reduces the normaliser across processes (``torchrun``).
    clip
        Largest gradient norm of a new point's row (with ``reference``).
    """

    def __init__(
        self,
        P: SparseAffinity | ReferenceRows,
        *,
        shard: RowShard | None = None,
        reference: torch.Tensor | None = None,
        repulsion: str = "exact",
        grid: dict[str, Any] | None = None,
        compile: bool | str = "auto",
        reduce_scalar: Callable[[torch.Tensor], torch.Tensor] | None = None,
        clip: float | None = None,
    ) -> None:
        self.repulsion = repulsion
        self._attraction: StudentAttraction | None = None
        if reference is not None:
            terms = (
                GridStudentRepulsion(reference, **(grid or {}))
                if repulsion == "fft"
                else StudentRepulsion(reference)
            )
            self._on_reference = _OnReference(reference, P, terms, clip)
            return
        self._on_reference = None
        self.P, self.shard = P, shard or RowShard.full(P.n)
        self._reduce = reduce_scalar or (lambda v: v)
        self._workspace: dict = {}
        self._terms = None
        if repulsion == "fft":
            self._terms = partial(student_repulsion_terms_fft, **(grid or {}))
        scale = _scale_to_one(P, reduce_scalar)
        self._attraction = StudentAttraction(P, self.shard, compile=compile, scale=scale)

    @property
    def path(self) -> str:
        """``'attraction native|compiled|eager, repulsion exact|fft'``, or ``'reference
        fixed, repulsion ...'``."""
        if self._attraction is None:
            return f"reference fixed, repulsion {self.repulsion}"
        return f"attraction {self._attraction.path}, repulsion {self.repulsion}"

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient at ``z`` (``(n, d)``, or the new points' ``(m, d)``)."""
        if self._on_reference is not None:
            return self._on_reference(z, phase.exaggeration)
        return tsne_gradient(
            z,
            self.P,
            phase.exaggeration,
            self.shard,
            self._reduce,
            self._workspace,
            repulsion_terms=self._terms,
            attraction=self._attraction,
        )


class SNEObjective:
    """SNE (Hinton & Roweis 2002): row-normalised Gaussian output kernel, the repulsion exact
    or by FFT; the loss divided by ``n``.

    Parameters
    ----------
    P
        Row-stochastic input affinity, or the new points' rows with ``reference``.
    shard, reference, repulsion, grid, clip
        As for :class:`TSNEObjective`.
    """

    def __init__(
        self,
        P: SparseAffinity | ReferenceRows,
        *,
        shard: RowShard | None = None,
        reference: torch.Tensor | None = None,
        repulsion: str = "exact",
        grid: dict[str, Any] | None = None,
        clip: float | None = None,
    ) -> None:
        self.repulsion = repulsion
        if reference is not None:
            self._on_reference = _OnReference(reference, P, None, clip)
            return
        self._on_reference = None
        self.P, self.shard, self.grid = P, shard or RowShard.full(P.n), grid or {}
        self._inv_n = 1.0 / P.n

    @property
    def path(self) -> str:
        """``'repulsion exact|fft'`` (``'reference fixed'``)."""
        return "reference fixed" if self._on_reference else f"repulsion {self.repulsion}"

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient at ``z``."""
        if self._on_reference is not None:
            return self._on_reference(z, phase.exaggeration)
        if self.repulsion == "exact":
            return sne_gradient(z, self.P, phase.exaggeration, self.shard) * self._inv_n
        attraction = sne_attraction(z, self.P, phase.exaggeration, self.shard)
        repulsion = sne_repulsion_fft(z, self.shard, **self.grid)
        return (attraction - 2.0 * repulsion) * self._inv_n


class InfoTSNEObjective:
    """InfoNC-t-SNE (Damrich et al., ICLR 2023): t-SNE's attraction over P's edges, each
    row's repulsion normalised by its own sum over ``n_negatives`` sampled points
    (:mod:`~torchdr_sc.objective.infonce`).

    Parameters
    ----------
    P
        The symmetric input affinity, or the new points' rows with ``reference``.
    n_negatives
        Negatives per row and iteration.
    seed
        Seeds the draws of negatives (the same on every process).
    shard, reference, compile, clip
        As for :class:`TSNEObjective`.
    exclude_neighbours
        A negative that is one of the row's neighbours in P does not count.
    rank, world_size
        This process's share of the repulsion's pairs of blocks (``torchrun``).
    """

    def __init__(
        self,
        P: SparseAffinity | ReferenceRows,
        *,
        n_negatives: int,
        seed: int,
        shard: RowShard | None = None,
        reference: torch.Tensor | None = None,
        compile: bool | str = "auto",
        exclude_neighbours: bool = False,
        rank: int = 0,
        world_size: int = 1,
        clip: float | None = None,
    ) -> None:
        self._attraction: StudentAttraction | None = None
        if reference is not None:
            terms = SampledStudentRepulsion(reference, int(n_negatives), seed=int(seed))
            self._on_reference = _OnReference(reference, P, terms, clip)
            return
        self._on_reference = None
        scale = _scale_to_one(P)
        shard = shard or RowShard.full(P.n)
        self._attraction = StudentAttraction(P, shard, compile=compile, scale=scale)
        generator = make_generator(int(seed), P.rows.device)
        self._repulsion = InfoNCERepulsion(
            P,
            int(n_negatives),
            generator=generator,
            scale=scale,
            exclude_neighbours=bool(exclude_neighbours),
            rank=rank,
            world_size=world_size,
            use_kernel=compile is not False,
        )

    @property
    def path(self) -> str:
        """``'attraction native|compiled|eager, repulsion shared negatives (C kernel|eager|
        matrix products)'``."""
        if self._attraction is None:
            return "reference fixed, repulsion sampled negatives"
        rep = self._repulsion.path
        return f"attraction {self._attraction.path}, repulsion shared negatives ({rep})"

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient at ``z``."""
        if self._on_reference is not None:
            return self._on_reference(z, phase.exaggeration)
        return self._attraction(z).mul_(phase.exaggeration).add_(self._repulsion(z))


class NegativeSamplingObjective:
    """UMAP's and LargeVis's loss: edges sampled at their ``epochs_per_sample`` rate, each
    with ``n_negatives`` uniform negatives, one epoch per call
    (:class:`~torchdr_sc.objective.epoch.SampledEpoch`; with ``reference``,
    :class:`~torchdr_sc.objective.partial.SampledPartialEpoch`, negatives among the
    reference points).

    Parameters
    ----------
    P
        The input affinity, or the new points' rows with ``reference``.
    kernel
        The output kernel and its constants.
    n_negatives
        Negatives per sampled edge.
    seed
        Seeds the negatives.
    shard
        Rows this process owns under ``torchrun`` (only their edges are sampled); ``None``:
        all.
    reference
        ``(n, d)`` reference embedding held fixed.
    discard_tails
        Redraw a negative equal to the edge's tail.
    compile, device, crowded_terms
        As for :class:`~torchdr_sc.objective.epoch.SampledEpoch`.
    """

    def __init__(
        self,
        P: SparseAffinity | ReferenceRows,
        *,
        kernel: SampledKernel,
        n_negatives: int,
        seed: int,
        shard: RowShard | None = None,
        reference: torch.Tensor | None = None,
        discard_tails: bool = False,
        compile: bool | str = "auto",
        device: torch.device | None = None,
        crowded_terms: int | None = CROWDED_TERMS,
    ) -> None:
        if reference is not None:
            idx, w = P
            self.epoch = SampledPartialEpoch(
                reference, idx, w, kernel, n_negatives, seed=seed, discard_tails=discard_tails
            )
            self._path = "reference fixed"
        else:
            rows_of = None if shard is None else (shard.start, shard.stop)
            self.epoch = SampledEpoch(
                P,
                kernel,
                int(n_negatives),
                seed=int(seed),
                rows_of=rows_of,
                discard_tails=discard_tails,
                compile=compile,
                device=device,
                crowded_terms=crowded_terms,
            )
            self._path = None
        #: Expected pair terms per epoch (small epochs run on one CPU thread).
        self.work = self.epoch.work

    @property
    def path(self) -> str:
        """``'epoch native|triton|compiled|eager'`` (``'reference fixed'``)."""
        return self._path or f"epoch {self.epoch.path}"

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient of epoch ``iteration`` at ``z``."""
        return self.epoch.gradient(z, iteration, phase.exaggeration)


class TSNEkhornObjective:
    """TSNEkhorn (Van Assel et al., NeurIPS 2023): t-SNE with a doubly stochastic output
    similarity (:mod:`~torchdr_sc.objective.tsnekhorn`), on all pairs or with the FFT grid.

    Parameters
    ----------
    P
        The doubly stochastic input affinity.
    z0
        The initial embedding (device, dtype and size of the computation).
    sinkhorn_iter
        Sinkhorn iterations per step.
    repulsion
        ``'exact'`` (dense ``n x n``) or ``'fft'``.
    grid, compile
        The FFT grid's options and how the attraction runs (``'fft'``).
    """

    def __init__(
        self,
        P: SparseAffinity,
        *,
        z0: torch.Tensor,
        sinkhorn_iter: int,
        repulsion: str = "exact",
        grid: dict[str, Any] | None = None,
        compile: bool | str = "auto",
    ) -> None:
        self.repulsion = repulsion
        if repulsion == "fft":
            P = P.to(dtype=z0.dtype)
            self._grad = fft_gradient(P, z0.shape[0], sinkhorn_iter, grid or {}, compile=compile)
        else:
            self._grad = dense_gradient(P, z0, sinkhorn_iter)

    @property
    def path(self) -> str:
        """``'repulsion exact|fft'``."""
        return f"repulsion {self.repulsion}"

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient at ``z``."""
        return self._grad(z, iteration, phase)


_CLASSES: dict[str, type] = {
    "tsne": TSNEObjective,
    "sne": SNEObjective,
    "infotsne": InfoTSNEObjective,
    "negative_sampling": NegativeSamplingObjective,
    "densmap": DensMAPObjective,
    "densne": DenSNEObjective,
    "tsnekhorn": TSNEkhornObjective,
    "autograd": AutogradObjective,
    "pacmap": PACMAPObjective,
    "cosne": COSNEObjective,
}
#: The methods :func:`make_objective` builds.
OBJECTIVES = tuple(_CLASSES)


#: The C kernel libraries each method's objective calls on the CPU.
KERNELS: dict[str, tuple[Callable[[], Any], ...]] = {
    "tsne": (native.library,),
    "infotsne": (native.library, native_infonce.library),
    "negative_sampling": (native_epoch.library,),
    "densmap": (native_epoch.library,),
    "densne": (native.library,),
    "tsnekhorn": (native.library,),
    "pacmap": (native_pacmap.library,),
}


def prepare_objective(method: str, device: torch.device | str) -> threading.Thread | None:
    """Start building the C kernels the objective of ``method`` calls on ``device`` (CPU),
    on a thread of their own (:func:`~torchdr_sc.objective.native.build_in_background`).

    An estimator calls this at the start of a fit: on a machine where the kernels are not
    built yet, the compiler then runs beside the kNN search rather than after it. Where they
    are built (every later process) it only loads them. Returns the building thread
    (``None``: nothing to build on this device).
    """
    if torch.device(device).type != "cpu":
        return None
    return native.build_in_background(*KERNELS.get(method, ()))


def make_objective(method: str, P: SparseAffinity | ReferenceRows, **options: Any) -> Any:
    """The objective of ``method`` on ``P``, configured by ``options`` (the keyword arguments
    of the method's class above; ``reference=`` for new points on a fixed embedding).

    Parameters
    ----------
    method
        One of :data:`OBJECTIVES`.
    P
        The input affinity, or :class:`ReferenceRows` with ``reference``.
    **options
        The class's keyword arguments.

    Returns
    -------
    An :class:`~torchdr_sc.objective.Objective`.
    """
    check_option("method", method, OBJECTIVES)
    return _CLASSES[method](P, **options)
