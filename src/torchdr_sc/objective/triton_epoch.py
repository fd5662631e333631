"""One negative-sampling epoch in one Triton kernel launch (the default CUDA path).

:func:`fused_epoch_gradient` computes the gradient of a whole epoch of the UMAP or LargeVis
objective (:mod:`~torchdr_sc.objective.pairs`) in a single kernel. Each program
instance takes a block of :data:`BLOCK_EDGES` edges of the edge schedule
(:class:`~torchdr_sc.objective.sampled.EdgeSchedule`; all of its edges, active or not) and

1. tests which of them are active at this epoch with the schedule's integer rule
   (:meth:`~torchdr_sc.objective.sampled.EdgeSchedule.active_mask`): no per-epoch mask,
   ``nonzero``, gather of the active edges or host synchronisation;
2. loads the head and tail rows of the embedding and computes the clipped attraction
   exactly as :func:`~torchdr_sc.objective.pairs.pair_terms` does;
3. draws the negatives of every active edge with the CPU paths' sampler
   (:func:`~torchdr_sc.objective.pairs.edge_negatives`: the hash of the epoch's key, the
   edge's two ends and the draw's number), and sums their clipped repulsion into the head's
   gradient;
4. adds the head's gradient to its row and the opposite of the attraction to the tail's
   row of a zeroed ``(n, d)`` gradient with atomic additions (as
   :func:`~torchdr_sc.objective.sampled.scatter_pair_terms`).

Why: the eager CUDA epoch is ~40 small kernels over ``active edges x negatives``
temporaries; :func:`torch.compile` fuses them but compiles in every new process, for longer
than a whole eager fit. The kernel here is written once, its compiled form is cached on disk
by Triton, and its memory traffic is the edge list plus the gathered rows; 128 edges per
program was the fastest block of 64 / 128 / 256 / 512. The measured epoch times (H100,
H200) are in ``benchmarks/README.md``.

Triton is optional: it is imported when this module is (which
:mod:`~torchdr_sc.objective.epoch` does only on CUDA), and its absence leaves the functions
plain (:func:`triton_available` is then ``False``). With ``TRITON_INTERPRET=1`` in the
environment before Triton is imported, the kernel runs on CPU tensors through Triton's
interpreter (how the tests check it without a GPU).

References
----------
- L. McInnes, J. Healy, J. Melville. UMAP: Uniform Manifold Approximation and Projection
  for Dimension Reduction. arXiv:1802.03426, 2018 (the objective, edge sampling, clipping).
- P. Tillet, H. T. Kung, D. Cox. Triton: an intermediate language and compiler for tiled
  neural network computations. MAPL 2019.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from .pairs import _MIX1, _MIX2, REPULSION_EPS, _signed
from .sampled import RATE_BITS, EdgeSchedule

try:  # optional dependency: only the CUDA fast path needs it
    import triton
    import triton.language as tl
except Exception:  # ImportError, or an install that fails to load
    triton = None
    tl = None

#: Edges per program instance (one edge per thread with the 4 warps launched).
BLOCK_EDGES = 128
#: Warps per program instance.
NUM_WARPS = 4
#: Largest embedding dimension the kernel handles (rows are padded to a power of two).
MAX_DIM = 16
#: ``kind`` of :func:`~torchdr_sc.objective.pairs.pair_terms` -> the kernel's constant.
KINDS = {"umap": 0, "cauchy": 1}

_MIX_CONSTANTS: dict[torch.device, torch.Tensor] = {}


def _jit(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``triton.jit`` when Triton is importable; otherwise the plain function."""
    if triton is not None:
        return triton.jit(fn, **options) if fn is not None else triton.jit(**options)
    return fn if fn is not None else (lambda f: f)


def triton_available(device: torch.device | str) -> bool:
    """Whether :func:`fused_epoch_gradient` can run on ``device``.

    ``True`` when Triton imports and ``device`` is CUDA, or when ``TRITON_INTERPRET=1``
    is set (the interpreter then runs the kernel on CPU tensors too).
    """
    if triton is None:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return torch.device(device).type == "cuda"


def fused_supported(z: torch.Tensor) -> bool:
    """Whether the kernel takes embedding ``z``: float32 ``(n, d)`` with ``d <= 16``."""
    return z.dtype == torch.float32 and z.ndim == 2 and 1 <= z.shape[1] <= MAX_DIM


def _mix_constants(device: torch.device) -> torch.Tensor:
    """SplitMix64's two multipliers as int64 data on ``device`` (cached)."""
    if device not in _MIX_CONSTANTS:
        values = [_signed(_MIX1), _signed(_MIX2)]
        _MIX_CONSTANTS[device] = torch.tensor(values, dtype=torch.int64, device=device)
    return _MIX_CONSTANTS[device]


def fused_epoch_gradient(
    z: torch.Tensor,
    schedule: EdgeSchedule,
    key: torch.Tensor,
    consts: torch.Tensor,
    *,
    epoch: int,
    kind: str,
    n_negatives: int,
    discard_tails: bool,
    block: int = BLOCK_EDGES,
) -> torch.Tensor:
    """Gradient ``(n, d)`` of one epoch (descend along ``-grad``), in one kernel launch.

    Parameters
    ----------
    z
        Embedding ``(n, d)``, float32, ``d <= 16`` (:func:`fused_supported`).
    schedule
        The edges and their rates (on ``z``'s device).
    key
        ``[key, golden]`` int64 on ``z``'s device, seeds the negatives: the
        :func:`~torchdr_sc.objective.pairs.hash_key` of the seed and ``epoch``.
    consts
        ``[a, b, repulsion, clip, exaggeration]``, float32 on ``z``'s device.
    epoch
        The epoch (which edges are active).
    kind
        ``'umap'`` or ``'cauchy'``, as in
        :func:`~torchdr_sc.objective.pairs.pair_terms`.
    n_negatives
        Negatives per active edge.
    discard_tails
        Replace a negative equal to the edge's tail by the next index (modulo ``n``).
    block
        Edges per program instance (a power of two).

    Returns
    -------
    torch.Tensor
        The float32 gradient, contiguous like ``z``.
    """
    if triton is None:
        msg = "the fused epoch needs Triton (pip install triton)"
        raise RuntimeError(msg)
    if not fused_supported(z):
        msg = f"the fused epoch takes float32 (n, d<={MAX_DIM}) embeddings"
        raise ValueError(msg)
    n, d = z.shape
    z = z.contiguous()
    grad = torch.zeros_like(z)
    n_edges = schedule.fixed_rate.shape[0]
    if n_edges == 0 or n == 0:
        return grad
    has_phase = schedule.phase is not None
    _epoch_kernel[(triton.cdiv(n_edges, block),)](
        z,
        grad,
        schedule.heads,
        schedule.tails,
        schedule.fixed_rate,
        schedule.phase if has_phase else schedule.fixed_rate,
        key,
        _mix_constants(z.device),
        consts,
        n_edges,
        n,
        int(epoch) % (1 << RATE_BITS),
        D=d,
        DP=triton.next_power_of_2(d),
        M=int(n_negatives),
        KIND=KINDS[kind],
        HAS_PHASE=has_phase,
        DISCARD=bool(discard_tails),
        BLOCK=block,
        RATE_ONE=1 << RATE_BITS,
        EPS=REPULSION_EPS,
        num_warps=NUM_WARPS,
    )
    return grad


@_jit
def _active_edges(
    rate_ptr, phase_ptr, offs, n_edges, epoch, HAS_PHASE: tl.constexpr, RATE_ONE: tl.constexpr
):
    """Mask of the edges ``offs`` active at ``epoch`` (``EdgeSchedule.active_mask``)."""
    in_range = offs < n_edges
    rate = tl.load(rate_ptr + offs, mask=in_range, other=0).to(tl.int64)
    phase = (rate * epoch) & (RATE_ONE - 1)
    if HAS_PHASE:
        offset = tl.load(phase_ptr + offs, mask=in_range, other=0).to(tl.int64)
        phase = (phase + offset) & (RATE_ONE - 1)
    return in_range & (phase + rate >= RATE_ONE)


@_jit
def _rows(z_ptr, idx, row_mask, D: tl.constexpr, DP: tl.constexpr):
    """Rows ``idx`` (int64) of the ``(n, D)`` embedding as a ``(BLOCK, DP)`` tile, 0-padded."""
    cols = tl.arange(0, DP)
    mask = row_mask[:, None] & (cols < D)[None, :]
    return tl.load(z_ptr + idx[:, None] * D + cols[None, :], mask=mask, other=0.0)


@_jit
def _negatives(heads, tails, j, n, key_ptr, mix_ptr, M: tl.constexpr, DISCARD: tl.constexpr):
    """Negative ``j`` of the edges ``(heads, tails)``:
    :func:`~torchdr_sc.objective.pairs.edge_negatives`, SplitMix64 of
    ``key + ((h n + t) M + j) golden``."""
    key = tl.load(key_ptr).to(tl.uint64, bitcast=True)
    golden = tl.load(key_ptr + 1).to(tl.uint64, bitcast=True)
    mix1 = tl.load(mix_ptr).to(tl.uint64, bitcast=True)
    mix2 = tl.load(mix_ptr + 1).to(tl.uint64, bitcast=True)
    counter = ((heads * n.to(tl.int64) + tails) * M + j).to(tl.uint64, bitcast=True)
    x = key + counter * golden  # uint64: wraps modulo 2**64, logical shifts
    x = (x ^ (x >> 30)) * mix1
    x = (x ^ (x >> 27)) * mix2
    x = x ^ (x >> 31)
    k = (((x >> 32) * n.to(tl.uint64)) >> 32).to(tl.int64)
    if DISCARD:
        k = tl.where(k == tails, k + 1, k)
        k = tl.where(k == n, 0, k)
    return k


@_jit
def _pow(x, b):
    """``x ** b`` for ``x > 0``."""
    return tl.exp2(tl.log2(x) * b)


@_jit
def _attraction(d2, a, b, exaggeration, KIND: tl.constexpr):
    """Factor of ``z_i - z_j`` in the attractive gradient (``pairs._attraction``)."""
    if KIND == 0:
        d2c = tl.maximum(d2, 1e-12)
        d2b = _pow(d2c, b)
        att = (2.0 * exaggeration * a * b) * d2b / (d2c * (1.0 + a * d2b))
        att = tl.where(d2 > 0, att, 0.0)
    else:
        att = (2.0 * exaggeration) / (1.0 + d2)
    return att


@_jit
def _repulsion(nd2, a, b, repulsion, KIND: tl.constexpr, EPS: tl.constexpr):
    """Factor of ``z_i - z_k`` in a negative's repulsive gradient (``pairs._repulsion``)."""
    if KIND == 0:
        nd2b = _pow(tl.maximum(nd2, 1e-12), b)
        rep = (-2.0 * repulsion * b) / ((nd2 + EPS) * (1.0 + a * nd2b))
    else:
        rep = (-2.0 * repulsion) / ((nd2 + EPS) * (1.0 + nd2))
    return rep


@_jit
def _clip(x, clip):
    return tl.minimum(tl.maximum(x, -clip), clip)


@_jit(do_not_specialize=["n_edges", "n", "epoch"])
def _epoch_kernel(
    z_ptr,
    grad_ptr,
    heads_ptr,
    tails_ptr,
    rate_ptr,
    phase_ptr,
    key_ptr,
    mix_ptr,
    consts_ptr,
    n_edges,
    n,
    epoch,
    D: tl.constexpr,
    DP: tl.constexpr,
    M: tl.constexpr,
    KIND: tl.constexpr,
    HAS_PHASE: tl.constexpr,
    DISCARD: tl.constexpr,
    BLOCK: tl.constexpr,
    RATE_ONE: tl.constexpr,
    EPS: tl.constexpr,
):
    """One epoch over edges ``[pid BLOCK, (pid + 1) BLOCK)``; see the module docstring."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    active = _active_edges(rate_ptr, phase_ptr, offs, n_edges, epoch, HAS_PHASE, RATE_ONE)
    heads = tl.load(heads_ptr + offs, mask=active, other=0).to(tl.int64)
    tails = tl.load(tails_ptr + offs, mask=active, other=0).to(tl.int64)
    a = tl.load(consts_ptr)
    b = tl.load(consts_ptr + 1)
    repulsion = tl.load(consts_ptr + 2)
    clip = tl.load(consts_ptr + 3)
    exaggeration = tl.load(consts_ptr + 4)
    z_head = _rows(z_ptr, heads, active, D, DP)
    diff = z_head - _rows(z_ptr, tails, active, D, DP)
    d2 = tl.sum(diff * diff, axis=1)
    att = _attraction(d2, a, b, exaggeration, KIND)
    g_att = _clip(diff * att[:, None], clip)
    g_head = g_att
    for j in range(M):
        k = _negatives(heads, tails, j, n, key_ptr, mix_ptr, M, DISCARD)
        nd = z_head - _rows(z_ptr, k, active, D, DP)
        rep = _repulsion(tl.sum(nd * nd, axis=1), a, b, repulsion, KIND, EPS)
        g_head = g_head + _clip(nd * rep[:, None], clip)
    cols = tl.arange(0, DP)
    mask = active[:, None] & (cols < D)[None, :]
    tl.atomic_add(grad_ptr + heads[:, None] * D + cols[None, :], g_head, mask=mask, sem="relaxed")
    tl.atomic_add(grad_ptr + tails[:, None] * D + cols[None, :], -g_att, mask=mask, sem="relaxed")
