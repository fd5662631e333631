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
float64, other devices' reference) gives the same bits: a sum over ``k`` (a row's) keeps
:data:`LANES` partial sums, lane ``l`` adding the entries ``k = l, l + LANES, ...`` in
increasing ``k``, and then adds the lanes in order; a sum over ``i`` (a column's) does the
same over ``i``. Every sum starts from ``+0``; every product and quotient is rounded on its
own (``-ffp-contract=off``). The lanes also let the compiler use vector registers for the
sums. Pairs are independent and each writes only its own outputs, so splitting them between
threads changes no bit.
"""

from __future__ import annotations

import ctypes

import torch

from . import native, native_ranges

__all__ = ["LANES", "MAX_DIM", "ORDER", "block_pair_terms", "library", "supports"]

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

/* Pairs [start, stop) of blocks: left[p], right[p] index blocks of B rows of zp (n_blocks, B,
   d) and cp (n_blocks, B); drops[drop_start[p]:drop_start[p + 1]] are i * B + k of entries
   that do not count; ga, gb are (pairs, B, d). */
static inline __attribute__((always_inline)) void block_pairs(
        const float *zp, const float *cp, const int64_t B, const int64_t d,
        const int64_t *left, const int64_t *right, const float *mutual,
        const int64_t *drop_start, const int64_t *drops, const float tiny,
        float *ga, float *gb, const int64_t start, const int64_t stop) {
    const int64_t L = (B + LANES - 1) / LANES * LANES;
    float *W = malloc(sizeof(float) * (size_t)(B * L));
    float *zk = calloc((size_t)(L * d), sizeof(float));        /* block b, (d, L), 0-padded */
    float *cb = calloc((size_t)L, sizeof(float));
    float *col = malloc(sizeof(float) * (size_t)(LANES * L));   /* column sums' lanes */
    float *gcol = malloc(sizeof(float) * (size_t)(LANES * L * d));
    for (int64_t p = start; p < stop; ++p) {
        const float *za = zp + left[p] * B * d, *zbk = zp + right[p] * B * d;
        const float *pa = cp + left[p] * B, *pb = cp + right[p] * B;
        for (int64_t k = 0; k < B; ++k)
            for (int64_t c = 0; c < d; ++c) zk[c * L + k] = zbk[k * d + c];
        memset(col, 0, sizeof(float) * (size_t)(LANES * L));
        int64_t next = drop_start[p];
        float *ca = ga + p * B * d;                 /* c_i kept in ga's first column a while */
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
            float lane[LANES] = {0};
            for (int64_t j = 0; j < L; j += LANES)
                for (int l = 0; l < LANES; ++l) lane[l] = lane[l] + w[j + l];
            float s = 0.0f;
            for (int l = 0; l < LANES; ++l) s = s + lane[l];
            ca[i * d] = pa[i] / (s > tiny ? s : tiny);
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
            const float ci = ca[i * d];
            float lane[MAX_DIM][LANES];
            for (int64_t c = 0; c < d; ++c)
                for (int l = 0; l < LANES; ++l) lane[c][l] = 0.0f;
            float *gl = gcol + (i % LANES) * L * d;
            for (int64_t j = 0; j < L; j += LANES)
                for (int l = 0; l < LANES; ++l) {
                    const int64_t k = j + l;
                    const float w2 = w[k] * w[k];
                    const float coef = (ci + cb[k]) * w2;
                    for (int64_t c = 0; c < d; ++c) {
                        const float diff = za[i * d + c] - zk[c * L + k];
                        const float term = coef * diff;
                        lane[c][l] = lane[c][l] + term;
                        gl[c * L + k] = gl[c * L + k] - term;
                    }
                }
            for (int64_t c = 0; c < d; ++c) {
                float s = 0.0f;
                for (int l = 0; l < LANES; ++l) s = s + lane[c][l];
                ga[(p * B + i) * d + c] = s;
            }
        }
        for (int64_t k = 0; k < B; ++k)
            for (int64_t c = 0; c < d; ++c) {
                float s = 0.0f;
                for (int l = 0; l < LANES; ++l) s = s + gcol[(l * d + c) * L + k];
                gb[(p * B + k) * d + c] = s;
            }
    }
    free(W); free(zk); free(cb); free(col); free(gcol);
}

#define BLOCKS(NAME, DIM)                                                               \
void NAME(const float *zp, const float *cp, int64_t B, int64_t d, const int64_t *left,  \
          const int64_t *right, const float *mutual, const int64_t *drop_start,         \
          const int64_t *drops, float tiny, float *ga, float *gb, int64_t start,        \
          int64_t stop) {                                                               \
    block_pairs(zp, cp, B, DIM, left, right, mutual, drop_start, drops, tiny, ga, gb,   \
                start, stop);                                                           \
}                                                                                       \
RANGES(NAME, (const float *zp, const float *cp, int64_t B, int64_t d,                   \
              const int64_t *left, const int64_t *right, const float *mutual,           \
              const int64_t *drop_start, const int64_t *drops, float tiny, float *ga,   \
              float *gb),                                                               \
       (zp, cp, B, d, left, right, mutual, drop_start, drops, tiny, ga, gb))

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


def block_pair_terms(
    lib: ctypes.CDLL,
    zp: torch.Tensor,
    cp: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    mutual: torch.Tensor,
    drop_start: torch.Tensor,
    drops: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both blocks' repulsion terms of every pair, ``(pairs, B, d)`` each (module notes).

    Parameters
    ----------
    lib
        :func:`library`'s result.
    zp, cp
        ``(n_blocks, B, d)`` rows and ``(n_blocks, B)`` masses, float32.
    left, right
        ``(pairs,)`` int64 blocks of each pair.
    mutual
        ``(pairs,)`` float32: 1 where the right block's own terms count, else 0.
    drop_start, drops
        int64: entries ``i * B + k`` of pair ``p`` that do not count are
        ``drops[drop_start[p]:drop_start[p + 1]]``, increasing.
    """
    zp, cp = zp.contiguous(), cp.contiguous()
    _, B, d = zp.shape
    pairs = int(left.shape[0])
    ga = torch.empty(pairs, B, d, dtype=torch.float32)
    gb = torch.empty(pairs, B, d, dtype=torch.float32)
    if pairs == 0:
        return ga, gb
    held = [t.contiguous() for t in (left, right, mutual, drop_start, drops)]
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    args = [ptr(zp.data_ptr()), ptr(cp.data_ptr()), i64(B), i64(d)]
    args += [ptr(t.data_ptr()) for t in held]
    args += [ctypes.c_float(torch.finfo(torch.float32).tiny)]
    args += [ptr(ga.data_ptr()), ptr(gb.data_ptr())]
    threads = max(1, min(torch.get_num_threads(), pairs))
    bounds = [pairs * t // threads for t in range(threads + 1)]
    name = "infonce_blocks_2d" if d == 2 else "infonce_blocks_nd"
    native_ranges.run_ranges(lib, name, args, bounds)
    return ga, gb
