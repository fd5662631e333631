"""One negative-sampling epoch end to end: edge schedule, pair terms, scatter.

:class:`SampledEpoch` is what the UMAP, LargeVis and InfoTSNE estimators call once per
iteration. The per-pair arithmetic lives in :mod:`~torchdr_sc.objective.pairs`; this module
chooses between running it eagerly and through :func:`torch.compile` (TorchInductor fuses
the gathers, the hashed negatives, the kernel and the sum over negatives into one loop), and
scatters the per-edge results into the gradient.

Measured on 2 CPU cores (synthetic 200k x 50, 4.66M edges, 1.4M active per epoch, 5
negatives, UMAP kernel): the pair terms take ~100 ms per epoch eagerly and ~60 ms compiled
(~35 ms for the Cauchy kernel, which has no power); the first compilation takes ~10 s and
is cached on disk by PyTorch (~4 s in later processes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._logging import get_logger
from ..affinity import SparseAffinity
from .pairs import epoch_pair_terms, hash_key, pair_terms
from .sampled import (
    CROWDED_TERMS,
    EdgeSchedule,
    SampledKernel,
    crowding_scale,
    kernel_kind,
    scatter_pair_terms,
)

logger = get_logger(__name__)

#: ``compile='auto'`` compiles the epoch on CPU from this many pair evaluations per epoch
#: (active edges x (1 + negatives); ~8M at 200k points with umap's defaults): below it the
#: saving does not repay a cold compilation (~10 s on 2 cores).
COMPILE_MIN_WORK = 2**22

_COMPILED: dict[str, Callable[..., Any]] = {}


def compiled_pair_terms() -> Callable[..., Any]:
    """The process-wide compiled :func:`epoch_pair_terms` (shape-generic: compiled once)."""
    if "pair_terms" not in _COMPILED:
        _COMPILED["pair_terms"] = torch.compile(epoch_pair_terms, dynamic=True)
    return _COMPILED["pair_terms"]


def resolve_compile(compile: bool | str, device: torch.device, work: float) -> bool:
    """Whether to compile: ``True``/``False`` as given; ``'auto'``: on CPU for large epochs.

    ``'auto'`` leaves CUDA eager: on an H100 at 1M points the compiled epoch takes 2.55 ms
    against 5.0 ms eagerly, but its first compilation takes 11.4 s, more than a whole
    eager fit (2.2 s); ``compile=True`` pays off for repeated fits in one process.
    """
    if compile == "auto":
        return device.type == "cpu" and work >= COMPILE_MIN_WORK
    return bool(compile)


class SampledEpoch:
    """Gradient of one epoch of a negative-sampling objective.

    Compiled, the epoch draws its negatives from a counter-based hash inside the fused
    kernel (:func:`~torchdr_sc.objective.pairs.epoch_pair_terms`); eagerly, from a seeded
    :class:`torch.Generator` (one ``random_`` call, far cheaper than the hash's ~15 integer
    passes). Both are uniform; the two paths therefore draw different negatives.

    Parameters
    ----------
    P
        Input affinity (directed edges; pass the symmetrised one).
    kernel
        The objective and its constants.
    n_negatives
        Negatives per active edge.
    seed
        Seeds the negatives (same seed, same negatives on every process).
    rows_of
        ``(start, stop)``: keep only edges whose head this process owns (``torchrun``).
    discard_tails
        Redraw a negative equal to the edge's tail (as the next index).
    compile
        ``True``, ``False`` or ``'auto'`` (see :func:`resolve_compile`).
    device
        Device of the embedding.
    crowded_terms
        The summed step of a cell expecting more pair terms than this per epoch is scaled
        down (:func:`~torchdr_sc.objective.sampled.crowding_scale`); ``None``: never.
    """

    def __init__(
        self,
        P: SparseAffinity,
        kernel: SampledKernel,
        n_negatives: int,
        *,
        seed: int,
        rows_of: tuple[int, int] | None = None,
        discard_tails: bool = False,
        compile: bool | str = False,
        device: torch.device | None = None,
        crowded_terms: int | None = CROWDED_TERMS,
    ) -> None:
        self.schedule = EdgeSchedule(P, rows_of)
        self.crowded_terms = crowded_terms
        self.step_scale = None
        if crowded_terms is not None:
            self.step_scale = crowding_scale(P, crowded_terms)
        self.kernel, self.n_negatives, self.seed = kernel, int(n_negatives), int(seed)
        self.discard_tails = bool(discard_tails)
        self.kind = kernel_kind(kernel)
        self.work = self.schedule.mean_active * (self.n_negatives + 1)
        self.n = P.n
        self.device = torch.device(device if device is not None else P.rows.device)
        self.compiled = resolve_compile(compile, self.device, self.work)
        self._must_compile = compile is True
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def _consts(self, z: torch.Tensor, exaggeration: float) -> torch.Tensor:
        k = self.kernel
        values = [k.a, k.b, k.repulsion, k.clip, exaggeration]
        return torch.tensor(values, dtype=z.dtype, device=z.device)

    def _compiled_terms(self, coords, heads, tails, consts, epoch):
        key = hash_key(self.seed, epoch, heads.device)
        options = {
            "kind": self.kind,
            "n_negatives": self.n_negatives,
            "discard_tails": self.discard_tails,
        }
        return compiled_pair_terms()(coords, heads, tails, key, consts, **options)

    def _eager_terms(self, coords, heads, tails, consts, epoch):
        negatives = draw_negatives(
            self.n, heads.shape[0], self.n_negatives, self._generator, heads.device
        )
        if self.discard_tails:
            same = negatives == tails
            negatives = torch.where(same, (negatives + 1) % self.n, negatives)
        return pair_terms(coords, heads, tails, negatives, consts, self.kind)

    def _pair_terms(self, *args: Any):
        if not self.compiled:
            return self._eager_terms(*args)
        try:
            return self._compiled_terms(*args)
        except Exception as err:  # the compiler (not the arithmetic) failed: run eagerly
            if self._must_compile:
                raise
            first_line = str(err).splitlines()[0] if str(err) else ""
            logger.warning(
                "torch.compile of the epoch failed (%s: %s); running it eagerly. Pass "
                "compile=False to skip the attempt.",
                type(err).__name__,
                first_line,
            )
            self.compiled = False
            return self._eager_terms(*args)

    def gradient(self, z: torch.Tensor, epoch: int, exaggeration: float = 1.0) -> torch.Tensor:
        """This process's gradient ``(n, d)`` of epoch ``epoch`` (descend along ``-grad``)."""
        heads, tails = self.schedule.active(epoch)
        # strided views of the (n, d) embedding, not contiguous copies per coordinate: a
        # point's coordinates share a cache line, so each random gather of a negative misses
        # once instead of d times (83 -> 71 ms per compiled epoch, 200k points, 2 CPU cores)
        coords = list(z.unbind(1))
        consts = self._consts(z, exaggeration)
        g_att, g_head = self._pair_terms(coords, heads, tails, consts, epoch)
        grad = scatter_pair_terms(z, heads, tails, g_att, g_head)
        if self.step_scale is not None:
            grad = grad.mul_(self.step_scale.to(grad)[:, None])
        return grad


def draw_negatives(
    n: int, n_active: int, n_negatives: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Uniform negatives ``(n_negatives, n_active)`` in ``[0, n)`` from ``generator``.

    Drawn as int32 when ``n`` allows it (about twice as fast on CPU as int64, and half the
    memory traffic in the gathers that use them).
    """
    dtype = torch.int32 if n < 2**31 - 1 else torch.int64
    out = torch.empty((n_negatives, n_active), dtype=dtype, device=device)
    return out.random_(0, n, generator=generator)
