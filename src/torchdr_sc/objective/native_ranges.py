"""Ranges of a C kernel's work run in parallel on PyTorch's own OpenMP threads.

The package's C kernels (:mod:`~torchdr_sc.objective.native`,
:mod:`~torchdr_sc.objective.native_epoch`) take their work as ranges ``[start, stop)`` of
rows or edges, each range computed by one thread in order, so that how the work is split
never changes a bit. Who runs the ranges matters for speed, though. PyTorch's CPU operations
run on an OpenMP team whose threads keep spinning for a while after each operation, waiting
for the next one; threads of another pool started right after a PyTorch operation (a Python
:class:`~concurrent.futures.ThreadPoolExecutor` calling the kernel through :mod:`ctypes`)
share the cores with those spinning threads and run up to twice as slowly. A kernel built with
``-fopenmp`` links ``libgomp.so.1``; loaded into a process where PyTorch has loaded its own
``libgomp.so.1``, the dynamic linker binds it to that library, so the kernel's parallel region
runs on the very threads that were spinning (``benchmarks/README.md`` has the measurement).

:data:`PRELUDE` is the C each kernel source starts with: ``tdr_openmp()`` (whether the
library was built with OpenMP) and ``RANGES(NAME, (params), (args))``, which defines
``NAME_ranges(params, bounds, parts)``: ``NAME(args, bounds[p], bounds[p + 1])`` for every
``p < parts``, one part per thread of an OpenMP team of ``parts`` threads. Without OpenMP
(a compiler that does not support it) the library still builds, and :func:`run_ranges` runs
the parts on a thread pool instead: the same bits either way, only the speed differs.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["OPENMP_FLAGS", "PRELUDE", "has_openmp", "run_ranges", "thread_pool"]

#: The compiler flag that turns the ``omp`` pragma of :data:`PRELUDE` on (tried first; the
#: library is built without it where the compiler refuses it).
OPENMP_FLAGS = ("-fopenmp",)

PRELUDE = r"""
#include <stdint.h>

int tdr_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#define TDR_UNPAREN(...) __VA_ARGS__
/* NAME_ranges(PARAMS, bounds, parts): NAME(ARGS, bounds[p], bounds[p + 1]) for p < parts,
   one part per thread of an OpenMP team (PyTorch's, when both use one libgomp) */
#define RANGES(NAME, PARAMS, ARGS)                                                      \
void NAME##_ranges(TDR_UNPAREN PARAMS, const int64_t *bounds, int64_t parts) {          \
    _Pragma("omp parallel for schedule(static, 1) num_threads(parts)")                  \
    for (int64_t p = 0; p < parts; ++p) NAME(TDR_UNPAREN ARGS, bounds[p], bounds[p + 1]); \
}
"""

_POOL: dict[str, object] = {}


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``workers`` threads, kept for the process (the runner of
    libraries built without OpenMP)."""
    if int(_POOL.get("size", 0)) < workers:  # type: ignore[call-overload]
        _POOL["pool"] = ThreadPoolExecutor(max_workers=workers)
        _POOL["size"] = workers
    return _POOL["pool"]  # type: ignore[return-value]


def has_openmp(lib: ctypes.CDLL) -> bool:
    """Whether ``lib`` (a source that starts with :data:`PRELUDE`) was built with OpenMP."""
    return bool(lib.tdr_openmp())


def run_ranges(lib: ctypes.CDLL, name: str, args: Sequence[object], bounds: list[int]) -> None:
    """``name(*args, start, stop)`` over every range ``bounds[p]:bounds[p + 1]``, in parallel.

    One range runs on the calling thread; several run on an OpenMP team through
    ``name_ranges`` (:data:`PRELUDE`'s ``RANGES``), or on :func:`thread_pool` where ``lib``
    has no OpenMP. The kernel computes each range on one thread, so the result does not depend
    on the runner.

    Parameters
    ----------
    lib
        The kernel library.
    name
        The kernel's C name; ``name + '_ranges'`` must be defined with ``RANGES``.
    args
        Its :mod:`ctypes` arguments before ``start, stop``.
    bounds
        ``parts + 1`` increasing offsets.
    """
    parts = len(bounds) - 1
    i64 = ctypes.c_int64
    if parts == 1:
        getattr(lib, name)(*args, i64(bounds[0]), i64(bounds[1]))
        return
    if has_openmp(lib):
        array = (ctypes.c_int64 * len(bounds))(*bounds)
        getattr(lib, f"{name}_ranges")(*args, array, i64(parts))
        return
    fn = getattr(lib, name)

    def run(start: int, stop: int) -> None:
        fn(*args, i64(start), i64(stop))

    list(thread_pool(parts).map(run, bounds[:-1], bounds[1:]))
