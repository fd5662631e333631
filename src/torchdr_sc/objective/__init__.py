"""The objectives: every method's gradient, behind one entry point.

:func:`make_objective` builds a method's objective (one of :data:`OBJECTIVES`) from its
input affinity and options; the result follows the :class:`Objective` protocol the
optimisation loop calls. Estimators only choose a method and configure it; new points on a
fixed reference (``transform``) are the same objectives with ``reference=``.

The modules behind them:

- :mod:`~torchdr_sc.objective.methods`: the objectives and :func:`make_objective`;
  :mod:`~torchdr_sc.objective.matching`: the autograd objective and its losses.
- :mod:`~torchdr_sc.objective.exact`: exact all-pairs gradients of SNE, t-SNE and
  TSNEkhorn, computed in row blocks (no ``n x n`` matrix), and t-SNE's attraction over P's
  edges.
- :mod:`~torchdr_sc.objective.interpolated`: the t-SNE / SNE repulsion in ``O(n)`` by FFT;
  :mod:`~torchdr_sc.objective.interpolated_weighted` with weighted charges (TSNEkhorn).
- :mod:`~torchdr_sc.objective.tsnekhorn`: TSNEkhorn's gradient (doubly stochastic output
  similarity from Sinkhorn potentials), dense or with the FFT grid's kernel sums.
- :mod:`~torchdr_sc.objective.infonce`: InfoTSNE's InfoNC-t-SNE repulsion, the negatives
  shared by blocks of rows (the attraction is t-SNE's), and its transform version.
- :mod:`~torchdr_sc.objective.sampled`: negative-sampled gradients with edge sampling (UMAP,
  LargeVis): the edge schedule, the kernels and the scatter of the pair terms.
- :mod:`~torchdr_sc.objective.pairs`: the per-pair arithmetic of the negative-sampling
  epoch and its one negative sampler (a hash of the epoch and the edge).
- :mod:`~torchdr_sc.objective.epoch`: one negative-sampling epoch as a gradient function
  for the loop (a C loop on CPU, one Triton kernel on CUDA, compiled or eager PyTorch: the
  same negatives on every path, the same bits on CPU);
  :mod:`~torchdr_sc.objective.native_epoch` is its C loop, and
  :mod:`~torchdr_sc.objective.schedule_sorted` finds an epoch's edges without a mask.
- :mod:`~torchdr_sc.objective.native` and :mod:`~torchdr_sc.objective.attraction`: t-SNE's
  attraction as a C loop (and the build of the C kernels into
  :mod:`~torchdr_sc.objective.kernel_cache`).
- :mod:`~torchdr_sc.objective.partial`: the arithmetic of new points on a fixed reference.
- :mod:`~torchdr_sc.objective.density`: densMAP's density term on UMAP's epoch;
  :mod:`~torchdr_sc.objective.densne`: den-SNE's on t-SNE's gradient (Narayan, Berger &
  Cho 2021).
- :mod:`~torchdr_sc.objective.pacmap`: PaCMAP's objective (near, mid-near and further pairs
  on a weight schedule), its pairs drawn by :mod:`~torchdr_sc.objective.pacmap_pairs`, its
  C loop in :mod:`~torchdr_sc.objective.native_pacmap`.
- :mod:`~torchdr_sc.objective.cosne`: CO-SNE's objective in the Poincaré ball (exact
  repulsion in row blocks, the h-loss), the ball's geometry in
  :mod:`~torchdr_sc.objective.poincare`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

__all__ = [
    "DENSITY_METRICS",
    "MATCHING_LOSSES",
    "OBJECTIVES",
    "Objective",
    "ReferenceRows",
    "make_objective",
    "prepare_objective",
]


class Objective(Protocol):
    """What the optimisation loop calls at every iteration.

    Attributes
    ----------
    path
        How the gradient runs (e.g. ``'attraction compiled, repulsion fft'``), recorded as
        the estimator's ``execution_path_``.
    """

    path: str

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient of the loss at ``z`` (``phase.exaggeration`` multiplies the
        attraction); descend along its negative."""
        ...


def __getattr__(name: str) -> Any:
    """The names of :mod:`~torchdr_sc.objective.methods` above, imported on first use (that
    module imports every kernel)."""
    if name in ("make_objective", "prepare_objective", "OBJECTIVES", "ReferenceRows"):
        from . import methods

        return getattr(methods, name)
    if name == "DENSITY_METRICS":
        from .density import DENSITY_METRICS

        return DENSITY_METRICS
    if name == "MATCHING_LOSSES":
        from .matching import MATCHING_LOSSES

        return MATCHING_LOSSES
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
