"""t-SNE's attraction over P's edges in a small C kernel, compiled once per machine.

Every iteration of the t-SNE family evaluates ``sum_j c_ij (z_i - z_j)`` with ``c_ij = f P_ij
/ (1 + |z_i - z_j|^2)`` over every edge of P (tens of millions at 100,000 cells): the
attraction, the main cost of an iteration. Its arithmetic is light, so its speed is the
memory it moves: computing the coefficients in one pass and summing the rows in another reads
and writes every edge several times. Here one loop walks each row's edges (P in CSR form) and
accumulates the row's sum as it goes, reading an edge's column and weight once. The loop is
plain C, built once per machine with the system's C compiler (``$CC``, else ``cc`` / ``gcc``
/ ``clang``) into the kernel cache (:mod:`~torchdr_sc.objective.kernel_cache`: the same
trust, digest and lock rules as the compiled epoch) and loaded with :mod:`ctypes`. The build
takes about a second, so it pays for itself at every size: there is no size threshold.

**The same bits on every path.** For each edge in CSR order the kernel computes, with no
fused multiply-add (``-ffp-contract=off``, no fast-math), ``d = z_i - z_j``, ``denom = (1 +
d_1^2) + d_2^2 + ...``, ``c = (f * P) / denom`` and adds ``c * d`` to the row's sum. The
eager and the ``torch.compile`` forms in :mod:`~torchdr_sc.objective.exact` compute the same
correctly rounded products and sum each row with :func:`torch.segment_reduce`, which adds a
segment's elements one after the other from zero: the same bits (tested). Every row is summed
by one thread, in order, so splitting the rows between threads (:func:`student_attraction`
runs ranges of rows on a thread pool; :mod:`ctypes` releases the GIL) cannot change a bit
either.

Without a working compiler the attraction runs eagerly (the same numbers, more slowly); the
failure is said once, with the fix, and recorded so that later processes do not try again
(:func:`library`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .._logging import get_logger, notice
from . import kernel_cache

logger = get_logger(__name__)

SOURCE = r"""
#include <stdint.h>

/* Rows [start, stop) of sum_j c_ij (z_i - z_j), c_ij = factor P_ij / (1 + |z_i - z_j|^2),
   over each row's edges in CSR order; coords is (d, n), out is (n, d) row-major. */
#define ATTRACTION(NAME, REAL)                                                          \
void NAME(const REAL *coords, int64_t n, int64_t d, const int32_t *crow,                \
          const int32_t *cols, const REAL *weights, REAL factor, REAL *out,             \
          int64_t start, int64_t stop) {                                                \
    REAL diff[16];                                                                      \
    for (int64_t i = start; i < stop; ++i) {                                            \
        for (int64_t c = 0; c < d; ++c) out[i * d + c] = (REAL)0;                       \
        for (int64_t e = crow[i]; e < crow[i + 1]; ++e) {                               \
            const int64_t j = cols[e];                                                  \
            REAL denom = (REAL)1;                                                       \
            for (int64_t c = 0; c < d; ++c) {                                           \
                diff[c] = coords[c * n + i] - coords[c * n + j];                        \
                const REAL square = diff[c] * diff[c];                                  \
                denom = denom + square;                                                 \
            }                                                                           \
            const REAL num = factor * weights[e];                                       \
            const REAL coef = num / denom;                                              \
            for (int64_t c = 0; c < d; ++c) {                                           \
                const REAL term = coef * diff[c];                                       \
                out[i * d + c] = out[i * d + c] + term;                                 \
            }                                                                           \
        }                                                                               \
    }                                                                                   \
}

ATTRACTION(student_attraction_f32, float)
ATTRACTION(student_attraction_f64, double)

/* the same for two coordinates, the common case, with the loops over them unrolled */
#define ATTRACTION_2D(NAME, REAL)                                                       \
void NAME(const REAL *x, const REAL *y, const int32_t *crow, const int32_t *cols,       \
          const REAL *weights, REAL factor, REAL *out, int64_t start, int64_t stop) {   \
    for (int64_t i = start; i < stop; ++i) {                                            \
        const REAL xi = x[i], yi = y[i];                                                \
        REAL sx = (REAL)0, sy = (REAL)0;                                                \
        for (int64_t e = crow[i]; e < crow[i + 1]; ++e) {                               \
            const int64_t j = cols[e];                                                  \
            const REAL dx = xi - x[j];                                                  \
            const REAL dy = yi - y[j];                                                  \
            const REAL sqx = dx * dx;                                                   \
            const REAL sqy = dy * dy;                                                   \
            const REAL denom = ((REAL)1 + sqx) + sqy;                                   \
            const REAL num = factor * weights[e];                                       \
            const REAL coef = num / denom;                                              \
            const REAL tx = coef * dx;                                                  \
            const REAL ty = coef * dy;                                                  \
            sx = sx + tx;                                                               \
            sy = sy + ty;                                                               \
        }                                                                               \
        out[2 * i] = sx;                                                                \
        out[2 * i + 1] = sy;                                                            \
    }                                                                                   \
}

ATTRACTION_2D(student_attraction_2d_f32, float)
ATTRACTION_2D(student_attraction_2d_f64, double)
"""  #: Compiler flags: optimised for this CPU, every operation rounded on its own.
CFLAGS = (
    "-O3",
    "-march=native",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fno-trapping-math",  # no FP traps: branches become selects (vectorised); same values
    "-fPIC",
    "-shared",
)
#: Edges below which one thread computes the attraction (a thread hand-off costs more).
PARALLEL_MIN_EDGES = 1 << 16
#: Most coordinates the general kernel takes (its per-edge buffer).
MAX_DIM = 16

_STATE: dict[str, object] = {}
_TYPES = {torch.float32: (ctypes.c_float, "f32"), torch.float64: (ctypes.c_double, "f64")}


def compiler() -> str | None:
    """The C compiler to build with: ``$CC``, else the first of ``cc``, ``gcc``, ``clang``."""
    given = os.environ.get("CC")
    if given:
        return shutil.which(given) or given
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _compiler_version(cc: str) -> str:
    try:
        run = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"unavailable ({type(err).__name__})"
    return (run.stdout or run.stderr).splitlines()[0] if (run.stdout or run.stderr) else ""


def build_key(cc: str, source: str = SOURCE) -> dict:
    """Everything the machine code depends on: source, flags, compiler, CPU."""
    return {
        "source": hashlib.sha256(source.encode()).hexdigest(),
        "flags": list(CFLAGS),
        "compiler": _compiler_version(cc),
        "cpu": kernel_cache.cpu_signature(),
    }


def _build(cc: str, path: Path, source: str) -> None:
    source_file = Path(tempfile.mkdtemp()) / "kernel.c"  # inside the private build folder
    source_file.write_text(source)
    run = subprocess.run(
        [cc, *CFLAGS, "-o", str(path), str(source_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0:
        msg = f"{Path(cc).name} failed: {(run.stderr or run.stdout).strip()[:500]}"
        raise RuntimeError(msg)


def library() -> ctypes.CDLL | None:
    """The attraction's kernel library (:func:`load_library` of :data:`SOURCE`)."""
    return load_library("attraction", SOURCE, "t-SNE's attraction")


def load_library(name: str, source: str, runs: str) -> ctypes.CDLL | None:
    """The C library ``name`` built from ``source``, loaded; ``None`` where it cannot be built.

    Built once per machine into the kernel cache (the build says so while it runs) and
    kept for the process. A failed build is said once (at the default verbosity, with the
    fix) and recorded in the kernel cache, so that later processes run eagerly without
    trying again.

    Parameters
    ----------
    name
        The library's name in the kernel cache (its build key is added).
    source
        Its C source.
    runs
        What runs without it, for the messages (e.g. ``"t-SNE's attraction"``).
    """
    libraries = _STATE.setdefault("libraries", {})
    if name in libraries:  # type: ignore[operator]
        return libraries[name]  # type: ignore[index]
    lib = None
    cc = compiler()
    if cc is None:
        notice(
            logger,
            "no C compiler found: %s runs without its compiled kernel (the same results, "
            "more slowly). Install gcc or clang, or set CC, to speed it up.",
            runs,
        )
    else:
        key = build_key(cc, source)
        try:
            lib = kernel_cache.cached_kernel(
                f"{name}-{kernel_cache.describe_key(key)}",
                key,
                lambda path: _build(cc, path, source),
                lambda path: ctypes.CDLL(str(path)),
                what=f"C kernel of {runs}",
                suffix=".so",
                expected="about a second",
            )
        except kernel_cache.KernelBuildError as err:
            logger.info("%s; %s runs eagerly", err, runs)
        except Exception as err:  # a compiler that does not work, a library that does not load
            notice(
                logger,
                "the C kernel of %s did not build (%s): it runs without it (the same "
                "results, more slowly). Check the C compiler (%s), or set CC.",
                runs,
                str(err).splitlines()[0][:200],
                cc,
            )
    libraries[name] = lib  # type: ignore[index]
    return lib


def supports(coords: torch.Tensor, crow: torch.Tensor, cols: torch.Tensor) -> bool:
    """Whether the kernel takes these inputs: float32 / float64 on the CPU, int32 ids, at most
    :data:`MAX_DIM` coordinates."""
    cpu = coords.device.type == "cpu" and cols.device.type == "cpu"
    ids = crow.dtype == torch.int32 and cols.dtype == torch.int32
    return cpu and ids and coords.dtype in _TYPES and coords.shape[0] <= MAX_DIM


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``workers`` threads, kept for the process."""
    if int(_STATE.get("pool_size", 0)) < workers:  # type: ignore[call-overload]
        _STATE["pool"] = ThreadPoolExecutor(max_workers=workers)
        _STATE["pool_size"] = workers
    return _STATE["pool"]  # type: ignore[return-value]


def student_attraction(
    lib: ctypes.CDLL,
    coords: torch.Tensor,
    crow: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor,
    factor: float,
) -> torch.Tensor:
    """``sum_j c_ij (z_i - z_j)`` of every row, ``c_ij = factor P_ij / (1 + |z_i - z_j|^2)``.

    Parameters
    ----------
    lib
        :func:`library`'s result.
    coords
        ``(d, n)`` contiguous coordinates (``d <= MAX_DIM``).
    crow, cols
        P's edges in CSR form (int32): row ``i``'s edges are ``crow[i]:crow[i + 1]``.
    weights
        P's weights, in ``coords``' dtype.
    factor
        Multiplies every weight (rounded to ``coords``' dtype first, as a 0-d tensor is).

    Returns
    -------
    ``(n, d)``; rows without edges are 0.
    """
    real, tag = _TYPES[coords.dtype]
    coords, weights = coords.contiguous(), weights.contiguous()
    d, n = coords.shape
    out = torch.empty(n, d, dtype=coords.dtype)
    ptr = ctypes.c_void_p
    if d == 2:
        fn = getattr(lib, f"student_attraction_2d_{tag}")
        lead = [ptr(coords[0].data_ptr()), ptr(coords[1].data_ptr())]
    else:
        fn = getattr(lib, f"student_attraction_{tag}")
        lead = [ptr(coords.data_ptr()), ctypes.c_int64(n), ctypes.c_int64(d)]
    args = [*lead, ptr(crow.data_ptr()), ptr(cols.data_ptr()), ptr(weights.data_ptr())]
    args += [real(factor), ptr(out.data_ptr())]

    def run(start: int, stop: int) -> None:
        fn(*args, ctypes.c_int64(start), ctypes.c_int64(stop))

    edges = int(cols.numel())
    threads = max(1, min(torch.get_num_threads(), edges // PARALLEL_MIN_EDGES))
    if threads == 1:
        run(0, n)
        return out
    # row ranges of about equal edge counts; each row is summed by one thread, in order
    targets = torch.tensor([edges * t // threads for t in range(1, threads)], dtype=crow.dtype)
    bounds = [0, *torch.searchsorted(crow, targets).tolist(), n]
    list(thread_pool(threads).map(run, bounds[:-1], bounds[1:]))
    return out
