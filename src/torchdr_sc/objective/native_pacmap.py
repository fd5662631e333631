"""PaCMAP's gradient as one C loop over each row's pairs, compiled once per machine.

Every iteration of :class:`~torchdr_sc.objective.pacmap.PACMAPObjective` sums, for every
row, the terms of its near, mid-near and further pairs (70 per point with the default
counts, each pair stored in both of its rows). Written with PyTorch that is a dozen passes
over those entries; here one loop walks each row's entries of the three kinds and keeps the
row's sums in registers. The library is built like the t-SNE attraction's
(:func:`~torchdr_sc.objective.native.load_library`: the system's C compiler, the kernel
cache, no fused multiply-add), and its ranges of rows run on PyTorch's OpenMP threads
(:mod:`~torchdr_sc.objective.native_ranges`).

**The same bits as the PyTorch form.** For each entry, in CSR order, the kernel computes
``diff = y_i - y_j`` per coordinate, ``d = (1 + diff_1^2) + diff_2^2 ...``, ``den = d + a``,
``c = num / (den den)`` with ``num = f w`` (or ``f`` without weights) and adds ``c diff`` to
the kind's sum of the row, which starts from zero; the row's gradient is then the near sum,
plus the mid-near sum, plus the further sum, in that order
(:func:`~torchdr_sc.objective.pacmap.eager_gradient` does the same with
:func:`torch.segment_reduce`). A row is summed by one thread, so the split of the rows
between threads changes no bit.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import torch

from . import native, native_ranges

__all__ = ["MAX_DIM", "gradient", "library", "row_bounds", "supports"]

#: Most coordinates the kernel takes.
MAX_DIM = 16
#: Entries below which one thread computes the gradient (a thread hand-off costs more).
PARALLEL_MIN_ENTRIES = 1 << 15

SOURCE = (
    native_ranges.PRELUDE
    + r"""
#include <stddef.h>

/* The sum over one kind's entries of row i: acc[c] = sum_e coef_e * diff_e[c]. */
#define KIND_SUM(REAL, crow, cols, w, factor, offset)                                   \
    for (int64_t c = 0; c < d; ++c) acc[c] = (REAL)0;                                   \
    for (int64_t e = crow[i]; e < crow[i + 1]; ++e) {                                   \
        const int64_t j = cols[e];                                                      \
        REAL dist = (REAL)1;                                                            \
        for (int64_t c = 0; c < d; ++c) {                                               \
            diff[c] = coords[c * n + i] - coords[c * n + j];                            \
            const REAL square = diff[c] * diff[c];                                      \
            dist = dist + square;                                                       \
        }                                                                               \
        const REAL den = dist + offset;                                                 \
        const REAL den2 = den * den;                                                    \
        const REAL num = w != NULL ? factor * w[e] : factor;                            \
        const REAL coef = num / den2;                                                   \
        for (int64_t c = 0; c < d; ++c) {                                               \
            const REAL term = coef * diff[c];                                           \
            acc[c] = acc[c] + term;                                                     \
        }                                                                               \
    }

/* Rows [start, stop) of the gradient; kind k is used where use[k] (its sum added after
   the earlier kinds'); coords is (d, n), out is (n, d) row-major. */
#define PACMAP_ROWS(NAME, REAL)                                                         \
void NAME(const REAL *coords, int64_t n, int64_t d,                                     \
          const int32_t *crow0, const int32_t *cols0, const REAL *w0,                   \
          const int32_t *crow1, const int32_t *cols1, const REAL *w1,                   \
          const int32_t *crow2, const int32_t *cols2, const REAL *w2,                   \
          const REAL *factors, const REAL *offsets, const int32_t *use,                 \
          REAL *out, int64_t start, int64_t stop) {                                     \
    REAL diff[16], acc[16], g[16];                                                      \
    for (int64_t i = start; i < stop; ++i) {                                            \
        int started = 0;                                                                \
        for (int64_t c = 0; c < d; ++c) g[c] = (REAL)0;                                 \
        if (use[0]) {                                                                   \
            KIND_SUM(REAL, crow0, cols0, w0, factors[0], offsets[0])                    \
            for (int64_t c = 0; c < d; ++c) g[c] = acc[c];                              \
            started = 1;                                                                \
        }                                                                               \
        if (use[1]) {                                                                   \
            KIND_SUM(REAL, crow1, cols1, w1, factors[1], offsets[1])                    \
            for (int64_t c = 0; c < d; ++c) g[c] = started ? g[c] + acc[c] : acc[c];    \
            started = 1;                                                                \
        }                                                                               \
        if (use[2]) {                                                                   \
            KIND_SUM(REAL, crow2, cols2, w2, factors[2], offsets[2])                    \
            for (int64_t c = 0; c < d; ++c) g[c] = started ? g[c] + acc[c] : acc[c];    \
        }                                                                               \
        for (int64_t c = 0; c < d; ++c) out[i * d + c] = g[c];                          \
    }                                                                                   \
}

PACMAP_ROWS(pacmap_rows_f32, float)
PACMAP_ROWS(pacmap_rows_f64, double)

/* The same for two coordinates, the common case, with the loops over them unrolled. */
#define KIND_SUM_2D(REAL, crow, cols, w, factor, offset)                                \
    ax = (REAL)0; ay = (REAL)0;                                                         \
    for (int64_t e = crow[i]; e < crow[i + 1]; ++e) {                                   \
        const int64_t j = cols[e];                                                      \
        const REAL dx = xi - x[j];                                                      \
        const REAL dy = yi - y[j];                                                      \
        const REAL sqx = dx * dx;                                                       \
        const REAL sqy = dy * dy;                                                       \
        const REAL dist = ((REAL)1 + sqx) + sqy;                                        \
        const REAL den = dist + offset;                                                 \
        const REAL den2 = den * den;                                                    \
        const REAL num = w != NULL ? factor * w[e] : factor;                            \
        const REAL coef = num / den2;                                                   \
        const REAL tx = coef * dx;                                                      \
        const REAL ty = coef * dy;                                                      \
        ax = ax + tx;                                                                   \
        ay = ay + ty;                                                                   \
    }

#define PACMAP_ROWS_2D(NAME, REAL)                                                      \
void NAME(const REAL *x, const REAL *y,                                                 \
          const int32_t *crow0, const int32_t *cols0, const REAL *w0,                   \
          const int32_t *crow1, const int32_t *cols1, const REAL *w1,                   \
          const int32_t *crow2, const int32_t *cols2, const REAL *w2,                   \
          const REAL *factors, const REAL *offsets, const int32_t *use,                 \
          REAL *out, int64_t start, int64_t stop) {                                     \
    for (int64_t i = start; i < stop; ++i) {                                            \
        const REAL xi = x[i], yi = y[i];                                                \
        REAL gx = (REAL)0, gy = (REAL)0, ax, ay;                                        \
        int started = 0;                                                                \
        if (use[0]) {                                                                   \
            KIND_SUM_2D(REAL, crow0, cols0, w0, factors[0], offsets[0])                 \
            gx = ax; gy = ay; started = 1;                                              \
        }                                                                               \
        if (use[1]) {                                                                   \
            KIND_SUM_2D(REAL, crow1, cols1, w1, factors[1], offsets[1])                 \
            gx = started ? gx + ax : ax; gy = started ? gy + ay : ay; started = 1;      \
        }                                                                               \
        if (use[2]) {                                                                   \
            KIND_SUM_2D(REAL, crow2, cols2, w2, factors[2], offsets[2])                 \
            gx = started ? gx + ax : ax; gy = started ? gy + ay : ay;                   \
        }                                                                               \
        out[2 * i] = gx;                                                                \
        out[2 * i + 1] = gy;                                                            \
    }                                                                                   \
}

PACMAP_ROWS_2D(pacmap_rows_2d_f32, float)
PACMAP_ROWS_2D(pacmap_rows_2d_f64, double)
#define PACMAP_2D_PARAMS(REAL) (const REAL *x, const REAL *y,                            \
    const int32_t *crow0, const int32_t *cols0, const REAL *w0,                         \
    const int32_t *crow1, const int32_t *cols1, const REAL *w1,                         \
    const int32_t *crow2, const int32_t *cols2, const REAL *w2,                         \
    const REAL *factors, const REAL *offsets, const int32_t *use, REAL *out)
#define PACMAP_2D_ARGS (x, y, crow0, cols0, w0, crow1, cols1, w1, crow2, cols2, w2,       \
    factors, offsets, use, out)
RANGES(pacmap_rows_2d_f32, PACMAP_2D_PARAMS(float), PACMAP_2D_ARGS)
RANGES(pacmap_rows_2d_f64, PACMAP_2D_PARAMS(double), PACMAP_2D_ARGS)
#define PACMAP_PARAMS(REAL) (const REAL *coords, int64_t n, int64_t d,                   \
    const int32_t *crow0, const int32_t *cols0, const REAL *w0,                         \
    const int32_t *crow1, const int32_t *cols1, const REAL *w1,                         \
    const int32_t *crow2, const int32_t *cols2, const REAL *w2,                         \
    const REAL *factors, const REAL *offsets, const int32_t *use, REAL *out)
#define PACMAP_ARGS (coords, n, d, crow0, cols0, w0, crow1, cols1, w1, crow2, cols2, w2,  \
    factors, offsets, use, out)
RANGES(pacmap_rows_f32, PACMAP_PARAMS(float), PACMAP_ARGS)
RANGES(pacmap_rows_f64, PACMAP_PARAMS(double), PACMAP_ARGS)
"""
)

_TAGS = {torch.float32: "f32", torch.float64: "f64"}


def library() -> ctypes.CDLL | None:
    """The kernel library (built once per machine), or ``None`` where it cannot be built."""
    return native.load_library("pacmap", SOURCE, "PaCMAP's gradient")


def supports(coords: torch.Tensor, kinds: Sequence[Any]) -> bool:
    """Whether the kernel takes these inputs: float32 / float64 on the CPU, at most
    :data:`MAX_DIM` coordinates, weights in the coordinates' dtype."""
    if coords.device.type != "cpu" or coords.dtype not in _TAGS or coords.shape[0] > MAX_DIM:
        return False
    return all(k is None or k.weights is None or k.weights.dtype == coords.dtype for k in kinds)


def gradient(
    lib: ctypes.CDLL,
    coords: torch.Tensor,
    kinds: Sequence[Any],
    factors: Sequence[float],
    bounds: list[int] | None = None,
) -> torch.Tensor | None:
    """The ``(n, d)`` gradient of the kinds used (``None`` entries are left out), or
    ``None`` where the kernel does not take the inputs (:func:`supports`).

    Parameters
    ----------
    lib
        :func:`library`'s result.
    coords
        ``(d, n)`` contiguous coordinates.
    kinds
        The near, mid-near and further :class:`~torchdr_sc.objective.pacmap.PairKind`, or
        ``None`` for one left out.
    factors
        ``f`` of each kind.
    bounds
        The ranges of rows of the threads (:func:`row_bounds`, computed when ``None``).
    """
    if not supports(coords, kinds):
        return None
    d, n = coords.shape
    dtype = coords.dtype
    ptr = ctypes.c_void_p
    if d == 2:
        name = f"pacmap_rows_2d_{_TAGS[dtype]}"
        args: list[object] = [ptr(coords[0].data_ptr()), ptr(coords[1].data_ptr())]
    else:
        name = f"pacmap_rows_{_TAGS[dtype]}"
        args = [ptr(coords.data_ptr()), ctypes.c_int64(n), ctypes.c_int64(d)]
    dummy_crow = torch.zeros(1, dtype=torch.int32)
    for kind in kinds:
        if kind is None:
            args += [ptr(dummy_crow.data_ptr()), ptr(dummy_crow.data_ptr()), ptr(None)]
            continue
        weights = ptr(None) if kind.weights is None else ptr(kind.weights.data_ptr())
        args += [ptr(kind.crow.data_ptr()), ptr(kind.cols.data_ptr()), weights]
    factor_t = torch.tensor(list(factors), dtype=dtype)
    offset_t = torch.tensor([k.offset if k is not None else 0.0 for k in kinds], dtype=dtype)
    use = torch.tensor([k is not None for k in kinds], dtype=torch.int32)
    out = torch.empty(n, d, dtype=dtype)
    args += [ptr(factor_t.data_ptr()), ptr(offset_t.data_ptr()), ptr(use.data_ptr())]
    args.append(ptr(out.data_ptr()))
    bounds = row_bounds(kinds, n) if bounds is None else bounds
    native_ranges.run_ranges(lib, name, args, bounds)
    return out


def row_bounds(kinds: Sequence[Any], n: int) -> list[int]:
    """Ranges of rows with about equal entry counts (of the kinds used), one per thread, at
    least :data:`PARALLEL_MIN_ENTRIES` entries each."""
    used = [k for k in kinds if k is not None]
    crow = sum(k.crow.long() for k in used)
    entries = int(crow[-1])
    threads = max(1, min(torch.get_num_threads(), entries // PARALLEL_MIN_ENTRIES))
    if threads == 1:
        return [0, n]
    targets = torch.tensor([entries * t // threads for t in range(1, threads)])
    return [0, *torch.searchsorted(crow, targets).tolist(), n]
