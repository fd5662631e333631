"""Several seeds per run: empty cache folders for the cold first fit, and the per-seed summary.

A run's worker fits once per seed in one process. The first fit is *cold*: the process is new
and, with :func:`cold_caches`, every on-disk kernel cache it can use is an empty folder (ours,
PyTorch Inductor's and Triton's, numba's for umap-learn / pynndescent / scanpy, and anything
under ``XDG_CACHE_HOME``), as on a new user's first call. The later fits are *warm*.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

from benchmarks.metrics import FIGURES

#: Environment variable -> sub-folder of the run's cache folder.
CACHE_VARS = {
    "TORCHDR_SC_CACHE_DIR": "torchdr_sc",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "NUMBA_CACHE_DIR": "numba",
    "XDG_CACHE_HOME": "xdg",
}
PHASES = ("knn", "affinity", "knn_affinity", "optimize")


@contextlib.contextmanager
def cold_caches(folder: Path, enabled: bool = True) -> Iterator[dict]:
    """Yield the environment of a cold run (empty cache folders), removed afterwards.

    Parameters
    ----------
    folder : pathlib.Path
        Where the empty cache folders are made (deleted on exit).
    enabled : bool, default=True
        False: yield an empty environment (the user's own caches are used).

    Yields
    ------
    dict
        Environment variables for the worker.
    """
    if not enabled:
        yield {}
        return
    shutil.rmtree(folder, ignore_errors=True)
    env = {}
    for var, sub in CACHE_VARS.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(folder / sub)
    try:
        yield env
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_fits(fits: list[dict]) -> dict:
    """The record fields of a run from its per-seed fits (each already scored).

    Parameters
    ----------
    fits : list of dict
        In the order made: ``seed``, ``fit_s``, ``timings``, ``n_iter``, ``notes`` and one
        value per name of :data:`benchmarks.metrics.FIGURES`.

    Returns
    -------
    dict
        ``cold_s`` (first fit), ``warm_s`` (median of the later fits, None with one seed),
        ``fit_s`` (``warm_s``, else ``cold_s``), ``total_fit_s``; the phases (``knn_s``,
        ``affinity_s``, ``knn_affinity_s``, ``optimize_s``: median over the warm fits, else the
        cold one), ``n_iter``, ``epoch_ms``; per figure its mean over seeds and ``<figure>_sd``
        (None with one seed); ``seeds``; ``fits`` (the per-seed details); ``notes``.
    """
    cold, warm = fits[0], fits[1:]
    timed = warm or [cold]
    out: dict = {
        "seeds": [f["seed"] for f in fits],
        "cold_s": cold["fit_s"],
        "warm_s": _median([f["fit_s"] for f in warm]),
        "total_fit_s": sum(f["fit_s"] for f in fits),
        "n_iter": cold.get("n_iter"),
        "notes": cold.get("notes"),
        "fits": fits,
    }
    out["fit_s"] = out["warm_s"] if out["warm_s"] is not None else out["cold_s"]
    for phase in PHASES:
        out[f"{phase}_s"] = _median([(f.get("timings") or {}).get(phase) for f in timed])
    out["cold_timings"] = cold.get("timings")
    opt, n_iter = out["optimize_s"], out["n_iter"]
    out["epoch_ms"] = 1000.0 * opt / n_iter if opt and n_iter else None
    for fig in FIGURES:
        values = [f[fig] for f in fits if f.get(fig) is not None]
        finite = [v for v in values if v == v]  # NaN != NaN
        out[fig] = statistics.fmean(finite) if finite and len(finite) == len(values) else None
        out[f"{fig}_sd"] = statistics.stdev(finite) if len(finite) >= 2 else None
    return out
