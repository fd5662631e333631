"""One negative-sampling epoch's pair terms in a small C kernel, compiled once per machine.

The default CPU path of :class:`~torchdr_sc.objective.epoch.SampledEpoch` (UMAP, LargeVis):
for a chunk of active edges it computes what
:func:`~torchdr_sc.objective.pairs.epoch_pair_terms` computes, every edge's clipped
attraction and its head's total gradient, in one pass over the edges that keeps the
negatives' terms in registers. Edges are taken :data:`LANES` at a time, each step written as
a loop over the lanes, which the compiler turns into vector instructions (gathers, 64-bit
multiplies of the hash).

**The same bits as the eager and compiled forms.** The kernel draws the negatives with
:func:`~torchdr_sc.objective.pairs.edge_negatives`' hash of ``(key, head, tail, draw)`` and
spells out :func:`~torchdr_sc.objective.pairs.pair_terms`' operations in their order, with no
fused multiply-add (``-ffp-contract=off``) and the power ``d^{2b}`` from the same polynomial
(its coefficients are written into the source from :mod:`~torchdr_sc.objective.pairs`, as
exact float32 hexadecimal literals). Edges are independent, so splitting them between
threads cannot change a bit; the terms are then summed into the gradient by
:func:`~torchdr_sc.objective.sampled.add_pair_terms` on every path.

Built like the t-SNE attraction's kernel (:func:`~torchdr_sc.objective.native.load_library`:
the system's C compiler, the kernel cache, a failure said once and not retried); without a
compiler the epoch runs eagerly with the same numbers.

References
----------
- L. McInnes, J. Healy, J. Melville. UMAP. arXiv:1802.03426, 2018.
- J. Tang, J. Liu, M. Zhang, Q. Mei. Visualizing Large-scale and High-dimensional Data. WWW 2016.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch

from . import native, native_ranges, pairs

#: Edges evaluated together (one vector register of float32 lanes with AVX-512).
LANES = 16
#: Most coordinates the kernel takes.
MAX_DIM = 16
#: Edges below which one thread computes a chunk (a thread hand-off costs more).
PARALLEL_MIN_EDGES = 1 << 14
#: ``kind`` of :func:`~torchdr_sc.objective.pairs.pair_terms` -> the kernel's function.
KINDS = ("umap", "cauchy")


def _hex32(value: float) -> str:
    """``value`` rounded to float32 (as PyTorch rounds a Python float against a float32
    tensor), as an exact C float literal (hexadecimal, ``f``: the arithmetic stays float)."""
    return float(np.float32(value)).hex() + "f"


def _horner(name: str, coeffs: tuple[float, ...]) -> str:
    """A C function evaluating :func:`~torchdr_sc.objective.pairs._horner`'s polynomial in
    its order: ``((x c0 + c1) x + c2) x + ...``."""
    lines = [f"static inline float {name}(const float x) {{"]
    lines.append(f"    float p = x * {_hex32(coeffs[0])};")
    lines.append(f"    p = p + {_hex32(coeffs[1])};")
    for c in coeffs[2:]:
        lines += ["    p = p * x;", f"    p = p + {_hex32(c)};"]
    return "\n".join([*lines, "    return p;", "}"])


_CONSTANTS = f"""
#define LANES {LANES}
#define MAX_DIM {MAX_DIM}
#define POW_FLOOR {_hex32(pairs.POW_FLOOR)}
#define REPULSION_EPS {_hex32(pairs.REPULSION_EPS)}
#define MIX1 {pairs._MIX1:#x}ULL
#define MIX2 {pairs._MIX2:#x}ULL
{_horner("log2_poly", pairs._LOG2_COEFFS)}
{_horner("exp2_poly", pairs._EXP2_COEFFS)}
"""

_BODY = r"""
typedef union { float f; int32_t i; } bits32;

static inline uint64_t mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * MIX1;
    x = (x ^ (x >> 27)) * MIX2;
    return x ^ (x >> 31);
}

static inline float fast_log2(const float x) {          /* pairs._fast_log2 */
    bits32 v, m;
    v.f = x;
    const int32_t e = ((v.i >> 23) & 0xFF) - 127;
    m.i = (v.i & 0x7FFFFF) | 0x3F800000;
    const float t = m.f - 1.0f;
    const float tp = t * log2_poly(t);
    return (float)e + tp;
}

static inline float fast_exp2(float y) {                 /* pairs._fast_exp2 */
    y = y < -126.0f ? -126.0f : y;
    y = y > 126.0f ? 126.0f : y;
    const float w = __builtin_floorf(y);
    bits32 r;
    r.f = exp2_poly(y - w);
    r.i = (int32_t)((uint32_t)r.i + ((uint32_t)(int32_t)w << 23));
    return r.f;
}

static inline float pow_b(float x, const float b) {      /* pairs._pow_b */
    x = x < POW_FLOOR ? POW_FLOOR : x;
    return fast_exp2(fast_log2(x) * b);
}

static inline float clamp(float v, const float lo, const float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* The factors of pairs._attraction and pairs._repulsion for LANES edges, each a function of
   its own: inlined into the epoch's loop nest, gcc does not vectorise their loops. */
static void __attribute__((noinline)) umap_attraction(
        const float *d2, float *att, const float a, const float b, const float c_att) {
    for (int l = 0; l < LANES; ++l) {
        const float d2b = pow_b(d2[l], b);
        const float d2c = d2[l] < POW_FLOOR ? POW_FLOOR : d2[l];
        const float num = c_att * d2b;
        const float ad2b = a * d2b;
        const float den = d2c * (1.0f + ad2b);
        const float q = num / den;  /* unconditional: the loop stays vectorisable */
        att[l] = d2[l] > 0.0f ? q : 0.0f;
    }
}

static void __attribute__((noinline)) cauchy_attraction(
        const float *d2, float *att, const float c_att) {
    for (int l = 0; l < LANES; ++l) att[l] = c_att / (1.0f + d2[l]);
}

static void __attribute__((noinline)) umap_repulsion(
        const float *nd2, float *rep, const float a, const float b, const float c_rep) {
    for (int l = 0; l < LANES; ++l) {
        const float shifted = nd2[l] + REPULSION_EPS;
        const float an = a * pow_b(nd2[l], b);
        const float kernel = 1.0f + an;
        rep[l] = c_rep / (shifted * kernel);
    }
}

static void __attribute__((noinline)) cauchy_repulsion(
        const float *nd2, float *rep, const float c_rep) {
    for (int l = 0; l < LANES; ++l) {
        const float shifted = nd2[l] + REPULSION_EPS;
        const float kernel = 1.0f + nd2[l];
        rep[l] = c_rep / (shifted * kernel);
    }
}

/* Edges [start, stop) of a chunk of A active edges: g_att and g_head are (d, A). */
static inline __attribute__((always_inline)) void epoch_terms(
        const float *z, const int64_t n, const int64_t d, const int32_t *heads,
        const int32_t *tails, const int64_t A, const int64_t start, const int64_t stop,
        const uint64_t key, const uint64_t golden, const float *consts, const int64_t m,
        const int discard, float *g_att, float *g_head, const int umap) {
    const float a = consts[0], b = consts[1], repulsion = consts[2], clip = consts[3];
    const float exaggeration = consts[4], low = -clip;
    const float c_att = umap ? ((2.0f * exaggeration) * a) * b : 2.0f * exaggeration;
    const float c_rep = umap ? (-2.0f * repulsion) * b : -2.0f * repulsion;
    for (int64_t e0 = start; e0 < stop; e0 += LANES) {
        const int64_t count = stop - e0 < LANES ? stop - e0 : LANES;
        int64_t h[LANES], t[LANES];
        uint64_t base[LANES];
        float zh[MAX_DIM][LANES], ga[MAX_DIM][LANES], gh[MAX_DIM][LANES];
        float d2[LANES], att[LANES];
        for (int l = 0; l < LANES; ++l) {   /* lanes past the end repeat the first edge */
            const int64_t e = e0 + (l < count ? l : 0);
            h[l] = heads[e];
            t[l] = tails[e];
            base[l] = ((uint64_t)h[l] * (uint64_t)n + (uint64_t)t[l]) * (uint64_t)m;
        }
        for (int64_t c = 0; c < d; ++c)
            for (int l = 0; l < LANES; ++l) {
                zh[c][l] = z[h[l] * d + c];
                ga[c][l] = zh[c][l] - z[t[l] * d + c];
            }
        for (int l = 0; l < LANES; ++l) d2[l] = ga[0][l] * ga[0][l];
        for (int64_t c = 1; c < d; ++c)
            for (int l = 0; l < LANES; ++l) {
                const float sq = ga[c][l] * ga[c][l];
                d2[l] = d2[l] + sq;
            }
        if (umap) umap_attraction(d2, att, a, b, c_att);
        else cauchy_attraction(d2, att, c_att);
        for (int64_t c = 0; c < d; ++c)
            for (int l = 0; l < LANES; ++l) {
                const float v = clamp(ga[c][l] * att[l], low, clip);
                ga[c][l] = v;
                gh[c][l] = v;
            }
        for (int64_t j = 0; j < m; ++j) {
            int64_t k[LANES];
            float nd[MAX_DIM][LANES], nd2[LANES], rep[LANES];
            for (int l = 0; l < LANES; ++l) {               /* pairs.edge_negatives */
                const uint64_t x = mix64((base[l] + (uint64_t)j) * golden + key);
                int64_t draw = (int64_t)(((x >> 32) * (uint64_t)n) >> 32);
                if (discard && draw == t[l]) draw = draw + 1 == n ? 0 : draw + 1;
                k[l] = draw;
            }
            for (int64_t c = 0; c < d; ++c)
                for (int l = 0; l < LANES; ++l) nd[c][l] = zh[c][l] - z[k[l] * d + c];
            for (int l = 0; l < LANES; ++l) nd2[l] = nd[0][l] * nd[0][l];
            for (int64_t c = 1; c < d; ++c)
                for (int l = 0; l < LANES; ++l) {
                    const float sq = nd[c][l] * nd[c][l];
                    nd2[l] = nd2[l] + sq;
                }
            if (umap) umap_repulsion(nd2, rep, a, b, c_rep);
            else cauchy_repulsion(nd2, rep, c_rep);
            for (int64_t c = 0; c < d; ++c)
                for (int l = 0; l < LANES; ++l) {
                    const float v = clamp(nd[c][l] * rep[l], low, clip);
                    gh[c][l] = gh[c][l] + v;
                }
        }
        for (int64_t c = 0; c < d; ++c)
            for (int l = 0; l < count; ++l) {
                g_att[c * A + e0 + l] = ga[c][l];
                g_head[c * A + e0 + l] = gh[c][l];
            }
    }
}

#define EPOCH(NAME, UMAP, DIM)                                                          \
void NAME(const float *z, int64_t n, int64_t d, const int32_t *heads,                   \
          const int32_t *tails, int64_t A, uint64_t key, uint64_t golden,                \
          const float *consts, int64_t m, int discard, float *g_att, float *g_head,      \
          int64_t start, int64_t stop) {                                                \
    epoch_terms(z, n, DIM, heads, tails, A, start, stop, key, golden, consts, m,        \
                discard, g_att, g_head, UMAP);                                          \
}                                                                                       \
RANGES(NAME, (const float *z, int64_t n, int64_t d, const int32_t *heads,               \
              const int32_t *tails, int64_t A, uint64_t key, uint64_t golden,            \
              const float *consts, int64_t m, int discard, float *g_att, float *g_head), \
       (z, n, d, heads, tails, A, key, golden, consts, m, discard, g_att, g_head))

EPOCH(epoch_umap_2d, 1, 2)
EPOCH(epoch_umap_nd, 1, d)
EPOCH(epoch_cauchy_2d, 0, 2)
EPOCH(epoch_cauchy_nd, 0, d)

/* Rows [first, last) of the 2 d sums of sampled.add_pair_terms: row r adds the terms of
   buffer r / d (0: g_head at the heads, 1: g_att at the tails), coordinate r % d, edge by
   edge in order - the additions of index_add_, so the same bits. */
void scatter_terms(float *sums, const int64_t n, const int64_t d, const int32_t *heads,
                   const int32_t *tails, const float *g_att, const float *g_head,
                   const int64_t A, const int64_t first, const int64_t last) {
    for (int64_t r = first; r < last; ++r) {
        const int64_t buffer = r / d, c = r % d;
        const int32_t *index = buffer == 0 ? heads : tails;
        const float *terms = (buffer == 0 ? g_head : g_att) + c * A;
        float *row = sums + r * n;
        for (int64_t e = 0; e < A; ++e) row[index[e]] += terms[e];
    }
}
RANGES(scatter_terms, (float *sums, const int64_t n, const int64_t d, const int32_t *heads,
                       const int32_t *tails, const float *g_att, const float *g_head,
                       const int64_t A), (sums, n, d, heads, tails, g_att, g_head, A))
"""

#: The kernel's C source: constants from :mod:`~torchdr_sc.objective.pairs`, then the loop.
SOURCE = native_ranges.PRELUDE + _CONSTANTS + _BODY


def library() -> ctypes.CDLL | None:
    """The epoch's kernel library (:func:`~torchdr_sc.objective.native.load_library`)."""
    return native.load_library("epoch", SOURCE, "the negative-sampling epoch")


def supports(z: torch.Tensor, heads: torch.Tensor, kind: str) -> bool:
    """Whether the kernel takes these inputs: a float32 ``(n, d)`` embedding on the CPU with
    ``d <= MAX_DIM``, int32 edge ids, a kind of :data:`KINDS`."""
    cpu = z.device.type == "cpu" and heads.device.type == "cpu"
    shape = z.ndim == 2 and 1 <= z.shape[1] <= MAX_DIM
    return (
        cpu and shape and z.dtype == torch.float32 and heads.dtype == torch.int32 and kind in KINDS
    )


def epoch_terms(
    lib: ctypes.CDLL,
    z: torch.Tensor,
    heads: torch.Tensor,
    tails: torch.Tensor,
    key: torch.Tensor,
    consts: torch.Tensor,
    *,
    kind: str,
    n_negatives: int,
    discard_tails: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~torchdr_sc.objective.pairs.epoch_pair_terms` of these edges, in C.

    Parameters
    ----------
    lib
        :func:`library`'s result.
    z
        The ``(n, d)`` float32 embedding (:func:`supports`).
    heads, tails
        ``(A,)`` int32 active edges.
    key
        ``[key, golden]`` (:func:`~torchdr_sc.objective.pairs.hash_key`).
    consts
        ``[a, b, repulsion, clip, exaggeration]`` (float32).
    kind, n_negatives, discard_tails
        As in :func:`~torchdr_sc.objective.pairs.epoch_pair_terms`.

    Returns
    -------
    g_att, g_head
        ``(d, A)`` each: row ``c`` is coordinate ``c`` of
        :func:`~torchdr_sc.objective.pairs.pair_terms`' vectors.
    """
    z, heads, tails = z.contiguous(), heads.contiguous(), tails.contiguous()
    consts = consts.to(torch.float32).contiguous()
    n, d = z.shape
    count = int(heads.shape[0])
    g_att = torch.empty(d, count, dtype=torch.float32)
    g_head = torch.empty(d, count, dtype=torch.float32)
    if count == 0:
        return g_att, g_head
    name = f"epoch_{kind}_{'2d' if d == 2 else 'nd'}"
    key_bits, golden = (int(v) & ((1 << 64) - 1) for v in key.tolist())
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    args = [ptr(z.data_ptr()), i64(n), i64(d), ptr(heads.data_ptr()), ptr(tails.data_ptr())]
    args += [i64(count), ctypes.c_uint64(key_bits), ctypes.c_uint64(golden)]
    args += [ptr(consts.data_ptr()), i64(n_negatives), ctypes.c_int(int(discard_tails))]
    args += [ptr(g_att.data_ptr()), ptr(g_head.data_ptr())]
    _split(lib, name, args, count, count)
    return g_att, g_head


def _split(lib: ctypes.CDLL, name: str, args: list, items: int, edges: int) -> None:
    """Kernel ``name`` over ``[0, items)``, cut into one range per thread (one range below
    :data:`PARALLEL_MIN_EDGES` edges per thread: a thread hand-off costs more)."""
    threads = max(1, min(torch.get_num_threads(), edges // PARALLEL_MIN_EDGES, items))
    bounds = [items * t // threads for t in range(threads + 1)]
    native_ranges.run_ranges(lib, name, args, bounds)


def add_terms(
    lib: ctypes.CDLL,
    sums: torch.Tensor,
    heads: torch.Tensor,
    tails: torch.Tensor,
    g_att: torch.Tensor,
    g_head: torch.Tensor,
) -> None:
    """:func:`~torchdr_sc.objective.sampled.add_pair_terms` in C, to the same bits.

    Each of the ``2 d`` rows of ``sums`` (heads' and tails' sums per coordinate) takes its
    terms in the edges' order, as ``index_add_`` does; rows are independent, so threads
    take whole rows and the result does not depend on their number.

    Parameters
    ----------
    lib
        :func:`library`'s result.
    sums
        ``(2, d, n)`` contiguous float32 sums, updated in place.
    heads, tails
        ``(A,)`` int32 edges.
    g_att, g_head
        ``(d, A)`` contiguous float32 terms (:func:`epoch_terms`).
    """
    _, d, n = sums.shape
    count = int(heads.shape[0])
    if count == 0:
        return
    if not sums.is_contiguous():
        msg = "add_terms needs contiguous (2, d, n) sums; pass sums.contiguous() and copy back."
        raise ValueError(msg)
    heads, tails = heads.contiguous(), tails.contiguous()
    g_att, g_head = g_att.contiguous(), g_head.contiguous()
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    args = [ptr(sums.data_ptr()), i64(n), i64(d), ptr(heads.data_ptr()), ptr(tails.data_ptr())]
    args += [ptr(g_att.data_ptr()), ptr(g_head.data_ptr()), i64(count)]
    _split(lib, "scatter_terms", args, 2 * d, count)
