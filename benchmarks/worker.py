"""Run one method on one dataset in this process: ``python -m benchmarks.worker SPEC.json``.

The harness starts one worker per run, so that peak memory is that run's alone (read by the
parent from the child's resource usage). The same module runs in our environment and in the
TorchDR virtual environment, so it imports only the standard library and numpy at module level.

The spec is a JSON object with keys ``tool``, ``method``, ``backend``, ``device``, ``x_path``,
``out_path`` (where the embedding goes, ``.npy``; with several seeds, ``{seed}`` in it is
replaced by each), ``result_path`` (where this worker's JSON result goes), ``seeds`` (the fits
to make, in order, in this one process), ``max_iter``, ``n_neighbors``, ``min_dist``,
``perplexity``, ``warmup``, ``slow_fit`` and ``min_seeds`` (after ``min_seeds`` fits, stop once
a fit has taken more than ``slow_fit`` seconds).

With several seeds the first fit is the process's first call (*cold*: with the harness's empty
cache folders, every compilation and cache fill is in it) and the later ones are *warm*.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback

import numpy as np

from benchmarks.runners import RunOutput, Unavailable, get_runner, sync

WARMUP_ROWS = 1000


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cuda(device: str):
    if not str(device).startswith("cuda"):
        return None
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def _fit_once(run, X: np.ndarray, spec: dict, seed: int, device: str) -> dict:
    """One timed fit; its embedding saved to the spec's ``out_path`` for this seed."""
    sync(device)
    t0 = time.perf_counter()
    out: RunOutput = run(X, dict(spec, seed=seed))
    sync(device)
    fit_s = time.perf_counter() - t0
    emb = np.asarray(out.embedding, dtype=np.float32)
    if emb.shape != (X.shape[0], 2):
        raise RuntimeError(f"embedding has shape {emb.shape}, expected {(X.shape[0], 2)}")
    np.save(spec["out_path"].format(seed=seed), emb)
    return {
        "seed": seed,
        "fit_s": fit_s,
        "timings": out.timings,
        "n_iter": out.n_iter,
        "notes": out.notes,
    }


def execute(spec: dict) -> dict:
    """Load the data, optionally warm up, then time one fit per seed and save the embeddings.

    Parameters
    ----------
    spec : dict
        The run spec.

    Returns
    -------
    dict
        ``fits`` (one dict per seed: ``seed``, ``fit_s`` wall seconds, ``timings`` per phase,
        ``n_iter``, ``notes``), ``warmup_s``, ``rss_data_mb`` (peak RSS after imports, data
        loading and warm-up, before the first fit), ``peak_gpu_mb`` (CUDA only).
    """
    runner = get_runner(spec["tool"])
    run = runner.run
    X = np.load(spec["x_path"])
    device = spec.get("device") or "cpu"
    warmup_s = None
    if hasattr(runner, "preload"):
        runner.preload(spec)
    needs_warmup = getattr(runner, "needs_warmup", lambda spec: True)
    if spec.get("warmup", True) and needs_warmup(spec):
        # First-call costs (JIT compilation, kernel caches, lazy imports) are paid here, so the
        # timed fit measures the steady state that a user pays on every call after the first.
        t = time.perf_counter()
        rows = getattr(runner, "WARMUP_ROWS", WARMUP_ROWS)
        small = X[: min(rows, X.shape[0])].copy()
        run(small, dict(spec, max_iter=min(spec.get("max_iter") or 50, 50)))
        warmup_s = time.perf_counter() - t
    cuda = _cuda(device)
    if cuda is not None:
        cuda.empty_cache()
        cuda.reset_peak_memory_stats()
    rss_data = _rss_mb()
    seeds = spec.get("seeds") or [spec.get("seed", 0)]
    fits = []
    slow, min_seeds = spec.get("slow_fit"), spec.get("min_seeds") or 1
    for seed in seeds:
        fits.append(_fit_once(run, X, spec, int(seed), device))
        if slow is not None and len(fits) >= min_seeds and fits[-1]["fit_s"] > slow:
            break  # slow fits: the cold one and one warm are enough
        if len(fits) < len(seeds):  # what is done survives a kill at the time limit
            _write(spec, {"status": "partial", "fits": fits, "rss_data_mb": rss_data})
    return {
        "fits": fits,
        "warmup_s": warmup_s,
        "rss_data_mb": rss_data,
        "self_peak_rss_mb": _rss_mb(),
        "peak_gpu_mb": None if cuda is None else cuda.max_memory_allocated() / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point.

    Parameters
    ----------
    argv : list of str, optional
        ``[SPEC.json]``; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 2 when the tool is unavailable, 1 on any other error. The result JSON is
        written in every case.
    """
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        spec = json.load(fh)
    try:
        result, code = {"status": "ok", **execute(spec)}, 0
    except Unavailable as exc:
        result, code = {"status": "unavailable", "error": str(exc)}, 2
    except Exception as exc:
        tb = traceback.format_exc()
        error = f"{type(exc).__name__}: {exc}"
        result, code = {"status": "failed", "error": error, "traceback": tb}, 1
        print(tb, file=sys.stderr)
    _write(spec, result)
    return code


def _write(spec: dict, result: dict) -> None:
    """Write the result JSON atomically (a reader never sees half of it)."""
    tmp = f"{spec['result_path']}.tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, default=str)
    os.replace(tmp, spec["result_path"])


if __name__ == "__main__":
    sys.exit(main())
