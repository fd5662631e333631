"""One negative-sampling epoch end to end: edge schedule, pair terms, scatter.

:class:`SampledEpoch` is what the UMAP and LargeVis estimators call once per
iteration. The per-pair arithmetic lives in :mod:`~torchdr_sc.objective.pairs`; this module
chooses how to run it (:func:`resolve_epoch_path`):

- ``'triton'``, the default on CUDA when Triton imports: the whole epoch (activity test,
  hashed negatives, clipped terms, scatter) is one hand-written kernel launch
  (:mod:`~torchdr_sc.objective.triton_epoch`); a failure of the Triton compiler is logged
  once and the epoch runs eagerly instead;
- ``'compiled'``: one fused loop over the active edges (gathers, hashed negatives,
  kernel, sum over negatives) compiled by TorchInductor, then a scatter. With
  ``compile='auto'`` on CPU the loop is the package compiled ahead of time and cached on
  disk (:mod:`~torchdr_sc.objective.aot_epoch`: loaded without tracing, where
  :func:`torch.compile` re-traces it in every process); with ``compile=True``, or when the
  package cannot be built, :func:`torch.compile`;
- ``'eager'``: a few dozen PyTorch kernels over ``active edges x negatives`` temporaries.

The compiled loop reads each edge's data once and keeps the negatives' terms in registers,
where the eager path writes and rereads ``edges x negatives`` temporaries, so it is several
times faster per epoch; :func:`torch.compile` pays its tracing in every process and the
ahead-of-time package once per machine. On CUDA the compiled loop's first compilation costs
more than a whole eager fit, which is why CUDA defaults to the Triton kernel (compiled once,
cached on disk by Triton). The measured figures are in ``benchmarks/README.md`` ("Why the
defaults are what they are").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._logging import get_logger, notice
from ..affinity import SparseAffinity
from .pairs import epoch_pair_terms, hash_key, pair_terms
from .sampled import (
    CROWDED_TERMS,
    EdgeSchedule,
    SampledKernel,
    add_pair_terms,
    crowding_scale,
    kernel_kind,
)

logger = get_logger(__name__)

#: ``compile='auto'`` compiles the epoch on CPU from this many pair evaluations per epoch
#: (active edges x (1 + negatives); about 8M at 200k points with umap's defaults): below it
#: the saving does not repay a cold compilation.
COMPILE_MIN_WORK = 2**22
#: On CPU the active edges of an epoch are found and evaluated in chunks of this many
#: (:meth:`~torchdr_sc.objective.sampled.EdgeSchedule.active_chunks`): the compiled
#: kernel's buffers (the hashed negatives among them) then stay below glibc's mmap threshold
#: and are reused, where edge-sized ones were faulted in afresh every epoch (page faults
#: vanish at 1M cells). Smaller chunks are slower: each costs a pass over the embedding.
CPU_CHUNK_EDGES = 2**20

_COMPILED: dict[str, Callable[..., Any]] = {}


#: TorchInductor options of the compiled epoch: always a parallel loop, with the thread count
#: read at run time. Without them the loop is parallel only if the call that compiled it
#: had enough edges, and that code is cached on disk for every later process: one small
#: fit with ``compile=True`` left every later large fit's epoch on one thread.
COMPILE_OPTIONS = {"cpp.dynamic_threads": True}


def compiled_pair_terms() -> Callable[..., Any]:
    """The process-wide compiled :func:`epoch_pair_terms` (shape-generic: compiled once)."""
    if "pair_terms" not in _COMPILED:
        _COMPILED["pair_terms"] = torch.compile(
            epoch_pair_terms, dynamic=True, options=dict(COMPILE_OPTIONS)
        )
    return _COMPILED["pair_terms"]


def resolve_compile(compile: bool | str, device: torch.device, work: float) -> bool:
    """Whether to use :func:`torch.compile`: ``True``/``False`` as given; ``'auto'``: on
    CPU for large epochs.

    ``'auto'`` never compiles on CUDA: the compiled epoch is faster than the eager one
    there, but its first compilation in a process takes longer than a whole eager fit; the
    sampled epoch runs its Triton kernel there instead
    (:func:`resolve_epoch_path`). ``compile=True`` pays off for repeated fits in one process.
    """
    if compile == "auto":
        return device.type == "cpu" and work >= COMPILE_MIN_WORK
    return bool(compile)


def triton_available(device: torch.device) -> bool:
    """:func:`~torchdr_sc.objective.triton_epoch.triton_available`, imported on first use
    (that module imports Triton: only CUDA fits with ``compile='auto'`` load it)."""
    from . import triton_epoch

    return triton_epoch.triton_available(device)


def resolve_epoch_path(compile: bool | str, device: torch.device, work: float) -> str:
    """How :class:`SampledEpoch` runs: ``'triton'``, ``'compiled'`` or ``'eager'``.

    ``'auto'`` on CUDA: the fused Triton kernel when Triton is available, eagerly otherwise.
    Everywhere else (and with ``compile=True`` or ``False`` on CUDA):
    :func:`resolve_compile` decides between ``'compiled'`` and ``'eager'``.
    """
    if compile == "auto" and device.type == "cuda" and triton_available(device):
        return "triton"
    return "compiled" if resolve_compile(compile, device, work) else "eager"


class SampledEpoch:
    """Gradient of one epoch of a negative-sampling objective.

    Compiled, the epoch draws its negatives from a counter-based hash inside the fused
    kernel (:func:`~torchdr_sc.objective.pairs.epoch_pair_terms`), counted by the rank of
    the edge among the active ones; with Triton
    (:func:`~torchdr_sc.objective.triton_epoch.fused_epoch_gradient`), from the same hash
    counted by the edge's position in the schedule; eagerly, from a seeded
    :class:`torch.Generator` (one ``random_`` call, far cheaper than the hash's ~15 integer
    passes). All are uniform; the three paths draw different negatives. The Triton kernel
    takes float32 embeddings of at most 16 dimensions; others run eagerly.

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
        ``True``, ``False`` or ``'auto'`` (see :func:`resolve_epoch_path`).
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
        path = resolve_epoch_path(compile, self.device, self.work)
        self.compiled, self.fused = path == "compiled", path == "triton"
        self._must_compile = compile is True
        # 'auto' on CPU: the kernel compiled ahead of time, loaded from disk (torch.compile
        # re-traces the epoch in every process); compile=True keeps torch.compile
        self._try_ahead_of_time = compile == "auto" and self.compiled
        self._aot_kernel: Callable[..., Any] | None = None
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    @property
    def path(self) -> str:
        """The path the epochs ran on (so far): ``'triton'``, ``'ahead-of-time'``,
        ``'compiled'`` (``torch.compile``) or ``'eager'``; a failed compiler's fallback shows."""
        if self.fused:
            return "triton"
        if self.compiled:
            return "ahead-of-time" if self._aot_kernel is not None else "compiled"
        return "eager"

    def _consts(self, z: torch.Tensor, exaggeration: float) -> torch.Tensor:
        k = self.kernel
        values = [k.a, k.b, k.repulsion, k.clip, exaggeration]
        return torch.tensor(values, dtype=z.dtype, device=z.device)

    def _compiled_terms(self, z, heads, tails, consts, epoch, chunk):
        key = hash_key(self.seed, epoch, heads.device, chunk)
        kernel = self._ahead_of_time_kernel(z, heads)
        if kernel is not None:
            return kernel(z, heads, tails, key, consts)
        options = {
            "kind": self.kind,
            "n_negatives": self.n_negatives,
            "discard_tails": self.discard_tails,
        }
        return compiled_pair_terms()(list(z.unbind(1)), heads, tails, key, consts, **options)

    def _ahead_of_time_kernel(self, z: torch.Tensor, heads: torch.Tensor):
        """The epoch kernel compiled ahead of time (:mod:`~torchdr_sc.objective.aot_epoch`)
        with ``compile='auto'`` where it applies; ``None`` otherwise, or once it failed to
        build or load (logged once; :func:`torch.compile` then runs the epoch)."""
        if not self._try_ahead_of_time:
            return None
        from . import aot_epoch

        if self._aot_kernel is None:
            if not (aot_epoch.available() and aot_epoch.supported(z, heads)):
                self._try_ahead_of_time = False
                return None
            try:
                self._aot_kernel = aot_epoch.epoch_kernel(
                    self.kind, self.n_negatives, self.discard_tails, z.shape[1]
                )
            except Exception as err:  # building or loading failed: torch.compile instead
                first_line = str(err).splitlines()[0] if str(err) else ""
                notice(
                    logger,
                    "the ahead-of-time epoch kernel failed (%s: %s); compiling the epoch "
                    "with torch.compile instead.",
                    type(err).__name__,
                    first_line,
                )
                self._try_ahead_of_time = False
                return None
        return self._aot_kernel if aot_epoch.supported(z, heads) else None

    def _eager_terms(self, z, heads, tails, consts, epoch, chunk):
        negatives = draw_negatives(
            self.n, heads.shape[0], self.n_negatives, self._generator, heads.device
        )
        if self.discard_tails:
            same = negatives == tails
            negatives = torch.where(same, (negatives + 1) % self.n, negatives)
        return pair_terms(list(z.unbind(1)), heads, tails, negatives, consts, self.kind)

    def _pair_terms(self, *args: Any):
        if not self.compiled:
            return self._eager_terms(*args)
        try:
            return self._compiled_terms(*args)
        except Exception as err:  # the compiler (not the arithmetic) failed: run eagerly
            if self._must_compile:
                raise
            first_line = str(err).splitlines()[0] if str(err) else ""
            notice(
                logger,
                "torch.compile of the epoch failed (%s: %s); running it eagerly. Pass "
                "compile=False to skip the attempt.",
                type(err).__name__,
                first_line,
            )
            self.compiled = False
            return self._eager_terms(*args)

    def _fused_gradient(
        self, z: torch.Tensor, epoch: int, exaggeration: float
    ) -> torch.Tensor | None:
        """The epoch's gradient from the Triton kernel; ``None`` where it does not apply
        (dtype, dimension) or failed to compile (then logged once, and never tried again)."""
        from . import triton_epoch

        if not triton_epoch.fused_supported(z):
            return None
        try:
            return triton_epoch.fused_epoch_gradient(
                z,
                self.schedule,
                hash_key(self.seed, epoch, z.device),
                self._consts(z, exaggeration),
                epoch=epoch,
                kind=self.kind,
                n_negatives=self.n_negatives,
                discard_tails=self.discard_tails,
            )
        except Exception as err:  # the Triton compiler (not the arithmetic) failed
            first_line = str(err).splitlines()[0] if str(err) else ""
            notice(
                logger,
                "the Triton epoch kernel failed (%s: %s); running the epoch eagerly. Pass "
                "compile=False to skip the attempt.",
                type(err).__name__,
                first_line,
            )
            self.fused = False
            return None

    def _blockwise_gradient(self, z: torch.Tensor, epoch: int, exaggeration: float) -> torch.Tensor:
        """The epoch's gradient from its active edges, in chunks of
        :data:`CPU_CHUNK_EDGES` on CPU (all at once on other devices)."""
        # the paths read strided views of the (n, d) embedding, not contiguous copies per
        # coordinate: a point's coordinates share a cache line, so each random gather of a
        # negative misses once instead of d times
        consts = self._consts(z, exaggeration)
        grad = torch.zeros((z.shape[1], z.shape[0]), dtype=z.dtype, device=z.device)
        if z.device.type == "cpu":
            chunks = self.schedule.active_chunks(epoch, CPU_CHUNK_EDGES)
        else:
            chunks = iter([self.schedule.active(epoch)])
        for chunk, (heads, tails) in enumerate(chunks):
            g_att, g_head = self._pair_terms(z, heads, tails, consts, epoch, chunk)
            add_pair_terms(grad, heads, tails, g_att, g_head)
        return grad.T

    def gradient(self, z: torch.Tensor, epoch: int, exaggeration: float = 1.0) -> torch.Tensor:
        """This process's gradient ``(n, d)`` of epoch ``epoch`` (descend along ``-grad``)."""
        grad = self._fused_gradient(z, epoch, exaggeration) if self.fused else None
        if grad is None:
            grad = self._blockwise_gradient(z, epoch, exaggeration)
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
