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
runs ranges of rows on PyTorch's OpenMP threads, :mod:`~torchdr_sc.objective.native_ranges`)
cannot change a bit either.

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
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from .._logging import get_logger, notice
from . import kernel_cache, native_ranges

logger = get_logger(__name__)

SOURCE = (
    native_ranges.PRELUDE
    + r"""

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
#define ATTRACTION_PARAMS(REAL) (const REAL *coords, int64_t n, int64_t d,               \
    const int32_t *crow, const int32_t *cols, const REAL *weights, REAL factor, REAL *out)
#define ATTRACTION_ARGS (coords, n, d, crow, cols, weights, factor, out)
RANGES(student_attraction_f32, ATTRACTION_PARAMS(float), ATTRACTION_ARGS)
RANGES(student_attraction_f64, ATTRACTION_PARAMS(double), ATTRACTION_ARGS)

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
#define ATTRACTION_2D_PARAMS(REAL) (const REAL *x, const REAL *y, const int32_t *crow,     \
    const int32_t *cols, const REAL *weights, REAL factor, REAL *out)
#define ATTRACTION_2D_ARGS (x, y, crow, cols, weights, factor, out)
RANGES(student_attraction_2d_f32, ATTRACTION_2D_PARAMS(float), ATTRACTION_2D_ARGS)
RANGES(student_attraction_2d_f64, ATTRACTION_2D_PARAMS(double), ATTRACTION_2D_ARGS)
"""
)  #: Compiler flags: optimised for this CPU, every operation rounded on its own.
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
_BUILDING = threading.Lock()
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
        "flags": [*CFLAGS, *native_ranges.OPENMP_FLAGS],
        "compiler": _compiler_version(cc),
        "cpu": kernel_cache.cpu_signature(),
    }


def _build(cc: str, path: Path, source: str) -> None:
    """Compile ``source`` into ``path``: with OpenMP (:mod:`~torchdr_sc.objective.native_ranges`),
    else, where the compiler refuses it, without (the same results, parts on a thread pool)."""
    source_file = Path(tempfile.mkdtemp()) / "kernel.c"  # inside the private build folder
    source_file.write_text(source)
    tail = ["-o", str(path), str(source_file)]
    run = subprocess.run(
        [cc, *CFLAGS, *native_ranges.OPENMP_FLAGS, *tail],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0:
        logger.info("%s: no OpenMP (%s); building without it", Path(cc).name, run.stderr[:200])
        run = subprocess.run([cc, *CFLAGS, *tail], capture_output=True, text=True, timeout=300)
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
    with _BUILDING:  # one build at a time; a caller that waited finds the library loaded
        if name not in libraries:  # type: ignore[operator]
            libraries[name] = _load(name, source, runs)  # type: ignore[index]
    return libraries[name]  # type: ignore[index]


def build_in_background(*loaders: Callable[[], object]) -> threading.Thread | None:
    """Start building (or loading) kernel libraries on a thread of their own.

    A fit calls this before its kNN search with the library functions its objective will
    call (e.g. :func:`library`): the compiler then runs beside the search instead of after
    it, and the objective's own call waits for the build if it is not done yet
    (:func:`load_library` builds each library once). Returns the thread, or ``None`` where
    every library is loaded already.

    Parameters
    ----------
    loaders
        Functions that return a loaded library (``None`` where it cannot be built).
    """
    if not loaders:
        return None

    def build() -> None:
        for load in loaders:
            try:
                load()
            except Exception as err:  # said by the caller's own call, which raises it again
                logger.debug("background build failed: %s", err)

    thread = threading.Thread(target=build, name="torchdr_sc-kernel-build", daemon=True)
    thread.start()
    return thread


def _load(name: str, source: str, runs: str) -> ctypes.CDLL | None:
    """:func:`load_library`'s work, under its lock."""
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
    return lib


def supports(coords: torch.Tensor, crow: torch.Tensor, cols: torch.Tensor) -> bool:
    """Whether the kernel takes these inputs: float32 / float64 on the CPU, int32 ids, at most
    :data:`MAX_DIM` coordinates."""
    cpu = coords.device.type == "cpu" and cols.device.type == "cpu"
    ids = crow.dtype == torch.int32 and cols.dtype == torch.int32
    return cpu and ids and coords.dtype in _TYPES and coords.shape[0] <= MAX_DIM


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
        name = f"student_attraction_2d_{tag}"
        lead = [ptr(coords[0].data_ptr()), ptr(coords[1].data_ptr())]
    else:
        name = f"student_attraction_{tag}"
        lead = [ptr(coords.data_ptr()), ctypes.c_int64(n), ctypes.c_int64(d)]
    args = [*lead, ptr(crow.data_ptr()), ptr(cols.data_ptr()), ptr(weights.data_ptr())]
    args += [real(factor), ptr(out.data_ptr())]

    edges = int(cols.numel())
    threads = max(1, min(torch.get_num_threads(), edges // PARALLEL_MIN_EDGES))
    # row ranges of about equal edge counts; each row is summed by one thread, in order
    targets = torch.tensor([edges * t // threads for t in range(1, threads)], dtype=crow.dtype)
    bounds = [0, *torch.searchsorted(crow, targets).tolist(), n]
    native_ranges.run_ranges(lib, name, args, bounds)
    return out
