"""InfoNC-t-SNE's repulsion over pairs of blocks in one C loop, compiled once per machine.

:class:`~torchdr_sc.objective.infonce.InfoNCERepulsion` pairs blocks of ``B`` shuffled rows
and, for each pair ``(a, b)``, needs the kernel ``w_ik = 1 / (1 + |z_i - z_k|^2)`` of every
row ``i`` of ``a`` against every row ``k`` of ``b``, the row sums ``S_i = sum_k w_ik`` and
column sums ``S_k = sum_i w_ik``, then ``c_i = p_i / S_i``, ``c_k = p_k / S_k`` (the rows'
masses over their normalisers) and the terms ``sum_k (c_i + c_k) w_ik^2 (z_i - z_k)`` of
``a``'s rows and ``-sum_i (c_i + c_k) w_ik^2 (z_i - z_k)`` of ``b``'s. With matrix products
that is seven passes over each ``B x B`` matrix; here one C loop keeps the matrix in the
core's cache and makes two.

**Sums in a fixed order** (:data:`ORDER`), so that the PyTorch form
(:func:`~torchdr_sc.objective.infonce_exact.block_pair_terms`, the path without a compiler,
float64) gives the same bits: a sum over ``k`` (a row's) keeps
:data:`LANES` partial sums, lane ``l`` adding the entries ``k = l, l + LANES, ...`` in
increasing ``k``, and then adds the lanes in order; a sum over ``i`` (a column's) does the
same over ``i``. Every sum starts from ``+0``; every product and quotient is rounded on its
own (``-ffp-contract=off``). The row sums are written with the compilers' vector
extension (GCC and Clang): a vector of :data:`LANES` partial sums stays in a register, and
vector additions are lane by lane, so the order is the one stated. Pairs are independent and
each writes only its own blocks' rows (the odd pair's right block, also the first pair's
left block, goes to a separate buffer), so splitting them between threads changes no bit.

The kernel reads the blocks' rows through the shuffle and writes their gradient back through
it, so that no shuffled copy of the embedding is made.
"""

from __future__ import annotations

import ctypes

import torch

from . import native, native_ranges

__all__ = ["LANES", "MAX_DIM", "ORDER", "library", "repulsion", "supports"]

#: Partial sums per row or column sum (one vector register of float32 with AVX-512).
LANES = 16
#: Most coordinates the kernel takes.
MAX_DIM = 16
#: How the kernel sums, for the docs of the PyTorch form.
ORDER = "lanes of every 16th entry, then the lanes in order, from +0"

_BODY = r"""
#include <stdlib.h>
#include <string.h>
#define LANES 16

/* LANES floats; vector additions are lane by lane, so a vector of partial sums adds each
   lane's entries in order (unaligned loads allowed) */
typedef float lanes_t __attribute__((vector_size(4 * LANES), aligned(4), may_alias));

static inline float sum_lanes(const lanes_t v) {
    float s = 0.0f;
    for (int l = 0; l < LANES; ++l) s = s + v[l];
    return s;
}

/* Pairs [start, stop) of blocks. Block b's row i is the embedding's row order[b * B + i]
   (none, a padding row, from n on); drops[drop_start[p]:drop_start[p + 1]] are i * B + k of
   pair p's entries that do not count. Each row of a left block gets out[row] = -(its terms);
   a right block's rows likewise where mutual[p] (a block paired with itself: none), else
   its terms go to extra (B, d), for the caller to subtract (that block is also a left one). */
static inline __attribute__((always_inline)) void block_pairs(
        const float *z, const int64_t *order, const float *mass, const int64_t n,
        const int64_t B, const int64_t d, const int64_t *left, const int64_t *right,
        const float *mutual, const int64_t *drop_start, const int64_t *drops,
        const float tiny, float *out, float *extra, const int64_t start, const int64_t stop) {
    const int64_t L = (B + LANES - 1) / LANES * LANES;
    float *W = malloc(sizeof(float) * (size_t)(B * L));
    float *za = malloc(sizeof(float) * (size_t)(B * d));      /* block a, (B, d) */
    float *zk = calloc((size_t)(L * d), sizeof(float));        /* block b, (d, L), 0-padded */
    float *pa = malloc(sizeof(float) * (size_t)B), *pb = malloc(sizeof(float) * (size_t)B);
    float *ca = malloc(sizeof(float) * (size_t)B);
    float *cb = calloc((size_t)L, sizeof(float));
    float *col = malloc(sizeof(float) * (size_t)(LANES * L));   /* column sums' lanes */
    float *gcol = malloc(sizeof(float) * (size_t)(LANES * L * d));
    for (int64_t p = start; p < stop; ++p) {
        const int64_t a0 = left[p] * B, b0 = right[p] * B;
        for (int64_t i = 0; i < B; ++i) {
            const int64_t q = a0 + i, r = q < n ? order[q] : -1;
            pa[i] = r < 0 ? 0.0f : mass[r];
            for (int64_t c = 0; c < d; ++c) za[i * d + c] = r < 0 ? 0.0f : z[r * d + c];
        }
        for (int64_t k = 0; k < B; ++k) {
            const int64_t q = b0 + k, r = q < n ? order[q] : -1;
            pb[k] = r < 0 ? 0.0f : mass[r];
            for (int64_t c = 0; c < d; ++c) zk[c * L + k] = r < 0 ? 0.0f : z[r * d + c];
        }
        memset(col, 0, sizeof(float) * (size_t)(LANES * L));
        int64_t next = drop_start[p];
        for (int64_t i = 0; i < B; ++i) {
            float *w = W + i * L;
            for (int64_t k = 0; k < L; ++k) {
                float den = 1.0f;
                for (int64_t c = 0; c < d; ++c) {
                    const float diff = za[i * d + c] - zk[c * L + k];
                    const float sq = diff * diff;
                    den = den + sq;
                }
                w[k] = k < B ? 1.0f / den : 0.0f;
            }
            for (; next < drop_start[p + 1] && drops[next] < (i + 1) * B; ++next)
                w[drops[next] - i * B] = 0.0f;
            lanes_t lane = {0};
            for (int64_t j = 0; j < L; j += LANES) lane = lane + *(const lanes_t *)(w + j);
            const float s = sum_lanes(lane);
            ca[i] = pa[i] / (s > tiny ? s : tiny);
            float *cl = col + (i % LANES) * L;
            for (int64_t k = 0; k < L; ++k) cl[k] = cl[k] + w[k];
        }
        for (int64_t k = 0; k < B; ++k) {
            float s = 0.0f;
            for (int l = 0; l < LANES; ++l) s = s + col[l * L + k];
            cb[k] = pb[k] / (s > tiny ? s : tiny) * mutual[p];
        }
        memset(gcol, 0, sizeof(float) * (size_t)(LANES * L * d));
        for (int64_t i = 0; i < B; ++i) {
            const float *w = W + i * L;
            const float ci = ca[i];
            lanes_t lane[MAX_DIM];
            for (int64_t c = 0; c < d; ++c) lane[c] = (lanes_t){0};
            float *gl = gcol + (i % LANES) * L * d;
            for (int64_t j = 0; j < L; j += LANES) {
                const lanes_t wj = *(const lanes_t *)(w + j);
                const lanes_t w2 = wj * wj;
                const lanes_t coef = (ci + *(const lanes_t *)(cb + j)) * w2;
                for (int64_t c = 0; c < d; ++c) {
                    const lanes_t diff = za[i * d + c] - *(const lanes_t *)(zk + c * L + j);
                    const lanes_t term = coef * diff;
                    lane[c] = lane[c] + term;
                    lanes_t *g = (lanes_t *)(gl + c * L + j);
                    *g = *g - term;
                }
            }
            const int64_t q = a0 + i;
            if (q < n)
                for (int64_t c = 0; c < d; ++c) out[order[q] * d + c] = -sum_lanes(lane[c]);
        }
        if (left[p] == right[p]) continue;  /* one block paired with itself: done */
        for (int64_t k = 0; k < B; ++k) {
            const int64_t q = b0 + k;
            for (int64_t c = 0; c < d; ++c) {
                float s = 0.0f;
                for (int l = 0; l < LANES; ++l) s = s + gcol[(l * d + c) * L + k];
                if (mutual[p] == 0.0f) extra[k * d + c] = s;
                else if (q < n) out[order[q] * d + c] = -s;
            }
        }
    }
    free(W); free(za); free(zk); free(pa); free(pb); free(ca); free(cb); free(col); free(gcol);
}

#define BLOCKS(NAME, DIM)                                                               \
void NAME(const float *z, const int64_t *order, const float *mass, int64_t n, int64_t B,  \
          int64_t d, const int64_t *left, const int64_t *right, const float *mutual,      \
          const int64_t *drop_start, const int64_t *drops, float tiny, float *out,        \
          float *extra, int64_t start, int64_t stop) {                                    \
    block_pairs(z, order, mass, n, B, DIM, left, right, mutual, drop_start, drops, tiny,  \
                out, extra, start, stop);                                                 \
}                                                                                         \
RANGES(NAME, (const float *z, const int64_t *order, const float *mass, int64_t n,         \
              int64_t B, int64_t d, const int64_t *left, const int64_t *right,            \
              const float *mutual, const int64_t *drop_start, const int64_t *drops,       \
              float tiny, float *out, float *extra),                                      \
       (z, order, mass, n, B, d, left, right, mutual, drop_start, drops, tiny, out, extra))

BLOCKS(infonce_blocks_2d, 2)
BLOCKS(infonce_blocks_nd, d)
"""

#: The kernel's C source.
SOURCE = native_ranges.PRELUDE + f"#define MAX_DIM {MAX_DIM}\n" + _BODY


def library() -> ctypes.CDLL | None:
    """The kernel library (:func:`~torchdr_sc.objective.native.load_library`)."""
    return native.load_library("infonce", SOURCE, "InfoTSNE's repulsion")


def supports(z: torch.Tensor) -> bool:
    """Whether the kernel takes this embedding: float32 on the CPU, at most :data:`MAX_DIM`
    coordinates."""
    return z.device.type == "cpu" and z.dtype == torch.float32 and 1 <= z.shape[1] <= MAX_DIM


def repulsion(
    lib: ctypes.CDLL,
    z: torch.Tensor,
    order: torch.Tensor,
    mass: torch.Tensor,
    block: int,
    left: torch.Tensor,
    right: torch.Tensor,
    mutual: torch.Tensor,
    drop_start: torch.Tensor,
    drops: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The repulsion's gradient of this process's pairs of blocks (module notes), and the
    terms of an odd pair's right block, for the caller to subtract (``None``: no such pair).

    Parameters
    ----------
    lib
        :func:`library`'s result.
    z, order, mass
        ``(n, d)`` float32 embedding; the shuffle (block ``b``'s row ``i`` is ``z[order[b
        * block + i]]``, none from ``n`` on); ``(n,)`` float32 row masses.
    block
        Rows per block.
    left, right
        ``(pairs,)`` int64 blocks of each pair.
    mutual
        ``(pairs,)`` float32: 1 where the right block's own terms count, else 0 (the odd
        pair, whose right block's terms go to the second result).
    drop_start, drops
        int64: entries ``i * block + k`` of pair ``p`` that do not count are
        ``drops[drop_start[p]:drop_start[p + 1]]``, increasing.

    Returns
    -------
    ``(out, extra)``: ``(n, d)``, zero on the rows of other processes' blocks, and ``(block,
    d)`` or ``None``.
    """
    n, d = z.shape
    held = [t.contiguous() for t in (z, order, mass, left, right, mutual, drop_start, drops)]
    out = torch.zeros(n, d, dtype=torch.float32)
    extra = torch.zeros(block, d, dtype=torch.float32)
    pairs = int(left.shape[0])
    if pairs == 0:
        return out, None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    args = [ptr(t.data_ptr()) for t in held[:3]] + [i64(n), i64(block), i64(d)]
    args += [ptr(t.data_ptr()) for t in held[3:]]
    args += [ctypes.c_float(torch.finfo(torch.float32).tiny)]
    args += [ptr(out.data_ptr()), ptr(extra.data_ptr())]
    threads = max(1, min(torch.get_num_threads(), pairs))
    bounds = [pairs * t // threads for t in range(threads + 1)]
    name = "infonce_blocks_2d" if d == 2 else "infonce_blocks_nd"
    native_ranges.run_ranges(lib, name, args, bounds)
    return out, (extra if bool((held[5] == 0).any()) else None)
