"""One negative-sampling epoch end to end: edge schedule, pair terms, scatter.

:class:`SampledEpoch` is what the UMAP and LargeVis estimators call once per iteration. The
per-pair arithmetic and the negative sampler live in :mod:`~torchdr_sc.objective.pairs`;
this module chooses how to run them (:func:`resolve_epoch_path`):

- ``'native'``, the default on CPU: the pair terms of every chunk of active edges in one C
  loop, and their sums into the gradient in another (:mod:`~torchdr_sc.objective.native_epoch`,
  built once per machine in about a second), at every size;
- ``'triton'``, the default on CUDA when Triton imports: the whole epoch (activity test,
  negatives, clipped terms, scatter) in one kernel launch
  (:mod:`~torchdr_sc.objective.triton_epoch`);
- ``'compiled'`` (``compile=True``): :func:`torch.compile` of
  :func:`~torchdr_sc.objective.pairs.epoch_pair_terms` (traced in every process);
- ``'eager'``: the same function run by PyTorch, a few dozen kernels per negative.

**Same seed, same epoch, on every CPU path.** Every path draws the same negatives
(:func:`~torchdr_sc.objective.pairs.edge_negatives`: a hash of the epoch and the edge), fires
the same edges (:class:`~torchdr_sc.objective.sampled.EdgeSchedule`) and computes the same
correctly rounded operations, and the terms are summed into the gradient in the edges'
order (:func:`~torchdr_sc.objective.sampled.add_pair_terms`): the native, compiled and
eager paths give the same bits whatever the thread count, and a missing compiler only
costs time. Triton on CUDA draws the same negatives and differs by float rounding (atomic
sums). A failure of a compiler is said once and the epoch runs eagerly instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._logging import get_logger, notice
from ..affinity import SparseAffinity
from . import native_epoch
from .pairs import epoch_pair_terms, hash_key
from .sampled import (
    CROWDED_TERMS,
    EdgeSchedule,
    SampledKernel,
    add_pair_terms,
    crowding_scale,
    kernel_kind,
)

logger = get_logger(__name__)

#: On CPU the active edges of an epoch are found and evaluated in chunks of this many
#: (:meth:`~torchdr_sc.objective.sampled.EdgeSchedule.active_chunks`): the buffers of the
#: pair terms then stay below glibc's mmap threshold and are reused, where edge-sized ones
#: were faulted in afresh every epoch. Smaller chunks are slower: each costs a pass over the
#: embedding. The chunking changes no bit: negatives depend on the edge, not its chunk.
CPU_CHUNK_EDGES = 2**20
#: The paths of :func:`resolve_epoch_path`.
EPOCH_PATHS = ("native", "triton", "compiled", "eager")

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


def triton_available(device: torch.device) -> bool:
    """:func:`~torchdr_sc.objective.triton_epoch.triton_available`, imported on first use
    (that module imports Triton: only CUDA fits with ``compile='auto'`` load it)."""
    from . import triton_epoch

    return triton_epoch.triton_available(device)


def resolve_epoch_path(compile: bool | str, device: torch.device) -> str:
    """How :class:`SampledEpoch` runs: one of :data:`EPOCH_PATHS`.

    ``compile=True``: ``'compiled'``; ``False``: ``'eager'``. ``'auto'``: on CUDA the Triton
    kernel when Triton is available (eagerly otherwise: :func:`torch.compile`'s first
    compilation costs more than a whole eager fit there); on CPU the C loop, at every size
    (it is built once per machine in about a second; where it cannot be built the epoch
    falls back to ``'eager'``, which gives the same numbers).
    """
    if compile == "auto":
        if device.type == "cuda":
            return "triton" if triton_available(device) else "eager"
        return "native" if device.type == "cpu" else "eager"
    return "compiled" if compile else "eager"


class SampledEpoch:
    """Gradient of one epoch of a negative-sampling objective.

    Every path draws the same negatives (:func:`~torchdr_sc.objective.pairs.edge_negatives`)
    and computes the same terms; the paths are :func:`resolve_epoch_path`'s. The C and
    Triton kernels take float32 embeddings of at most 16 dimensions; others run eagerly
    (or compiled, with ``compile=True``).

    Parameters
    ----------
    P
        Input affinity (directed edges; pass the symmetrised one).
    kernel
        The objective and its constants.
    n_negatives
        Negatives per active edge.
    seed
        Seeds the negatives (same seed, same negatives on every process and path).
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
        self._path = resolve_epoch_path(compile, self.device)
        self._must_compile = compile is True

    @property
    def path(self) -> str:
        """The path the epochs ran on (so far), one of :data:`EPOCH_PATHS`; a fallback after
        a failed compiler shows."""
        return self._path

    def _consts(self, z: torch.Tensor, exaggeration: float) -> torch.Tensor:
        k = self.kernel
        values = [k.a, k.b, k.repulsion, k.clip, exaggeration]
        return torch.tensor(values, dtype=z.dtype, device=z.device)

    def _options(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_negatives": self.n_negatives,
            "discard_tails": self.discard_tails,
        }

    def _fall_back(self, what: str, err: Exception) -> None:
        """Say once that ``what`` failed and run the epochs eagerly from now on."""
        first_line = str(err).splitlines()[0] if str(err) else ""
        notice(
            logger,
            "%s failed (%s: %s); running the epoch eagerly (the same numbers, more slowly). "
            "Pass compile=False to skip the attempt.",
            what,
            type(err).__name__,
            first_line,
        )
        self._path = "eager"

    def _pair_terms(self, z: torch.Tensor, heads, tails, key, consts):
        """The chunk's ``(g_att, g_head)`` on this epoch's path."""
        if self._path == "native":
            lib = native_epoch.library()
            if lib is not None and native_epoch.supports(z, heads, self.kind):
                return native_epoch.epoch_terms(
                    lib, z, heads, tails, key, consts, **self._options()
                )
            self._path = "eager"  # no compiler (said once by the library), or float64
        coords = list(z.unbind(1))
        if self._path == "compiled":
            try:
                return compiled_pair_terms()(coords, heads, tails, key, consts, **self._options())
            except Exception as err:  # the compiler (not the arithmetic) failed
                if self._must_compile:
                    raise
                self._fall_back("torch.compile of the epoch", err)
        return epoch_pair_terms(coords, heads, tails, key, consts, **self._options())

    def _fused_gradient(
        self, z: torch.Tensor, epoch: int, exaggeration: float
    ) -> torch.Tensor | None:
        """The epoch's gradient from the Triton kernel; ``None`` where it does not apply
        (dtype, dimension) or failed to compile (then said once, and never tried again)."""
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
                **self._options(),
            )
        except Exception as err:  # the Triton compiler (not the arithmetic) failed
            self._fall_back("the Triton epoch kernel", err)
            return None

    def _blockwise_gradient(self, z: torch.Tensor, epoch: int, exaggeration: float) -> torch.Tensor:
        """The epoch's gradient from its active edges, in chunks of
        :data:`CPU_CHUNK_EDGES` on CPU (all at once on other devices)."""
        # the paths read the (n, d) embedding, not contiguous copies per coordinate: a
        # point's coordinates share a cache line, so each random gather of a negative misses
        # once instead of d times
        consts = self._consts(z, exaggeration)
        key = hash_key(self.seed, epoch, z.device)
        sums = torch.zeros((2, z.shape[1], z.shape[0]), dtype=z.dtype, device=z.device)
        if z.device.type == "cpu":
            chunks = self.schedule.active_chunks(epoch, CPU_CHUNK_EDGES)
        else:
            chunks = iter([self.schedule.active(epoch)])
        for heads, tails in chunks:
            g_att, g_head = self._pair_terms(z, heads, tails, key, consts)
            if self._path == "native":  # the same sums, in C and on every thread
                native_epoch.add_terms(native_epoch.library(), sums, heads, tails, g_att, g_head)
            else:
                add_pair_terms(sums, heads, tails, g_att, g_head)
        return (sums[0] - sums[1]).T

    def gradient(self, z: torch.Tensor, epoch: int, exaggeration: float = 1.0) -> torch.Tensor:
        """This process's gradient ``(n, d)`` of epoch ``epoch`` (descend along ``-grad``)."""
        grad = None
        if self._path == "triton":
            grad = self._fused_gradient(z, epoch, exaggeration)
        if grad is None:
            grad = self._blockwise_gradient(z, epoch, exaggeration)
        if self.step_scale is not None:
            grad = grad.mul_(self.step_scale.to(grad)[:, None])
        return grad
