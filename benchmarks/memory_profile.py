"""Resident memory of one fit, stage by stage: the measurements behind the memory model.

One fit runs in this process (run it once per process: the peak of a process never falls).
A thread samples the resident set size (``VmRSS`` of ``/proc/self/status``) every few
milliseconds, and a :class:`torchdr_sc.progress.Progress` that records when each stage of
the pipeline starts and ends (the same lines a user sees with ``progress_bar=True``) splits
the samples by stage. For each stage the record holds the resident memory when it starts,
its peak and what it leaves when it ends, all above the *baseline* (the process after its
imports, before the data is read), in bytes and in bytes per cell::

    python -m benchmarks.memory_profile --method umap --n 1000000 --out mem-umap-1m.json

``--data`` reads the atlas of :mod:`benchmarks.datasets` (``.npy`` in ``benchmarks/.cache``,
generated there first if missing); the input is loaded whole, as an in-memory AnnData
would hold it (stage ``data``). :mod:`benchmarks.memory_model` fits the model to these
records. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

PAGE_POLL_S = 0.005


def rss_bytes() -> int:
    """Resident set size of this process now (``VmRSS``), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (Linux only)")


class RSSSampler:
    """Samples :func:`rss_bytes` on a thread until :meth:`stop`; ``samples`` = ``(t, rss)``."""

    def __init__(self, period_s: float = PAGE_POLL_S) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.perf_counter(), rss_bytes()))
            self._done.wait(self.period_s)
        self.samples.append((time.perf_counter(), rss_bytes()))

    def window(self, t0: float, t1: float) -> list[int]:
        """RSS samples taken in ``[t0, t1]``."""
        return [rss for t, rss in self.samples if t0 <= t <= t1]


def stage_records(
    sampler: RSSSampler, stages: list[tuple[str, float, float]], baseline: int, n: int
) -> list[dict[str, Any]]:
    """Per stage: RSS at its start, peak and end, above ``baseline``, and per cell."""
    out = []
    for name, t0, t1 in stages:
        window = sampler.window(t0, t1) or [rss_bytes()]
        start, peak, end = window[0] - baseline, max(window) - baseline, window[-1] - baseline
        out.append(
            {
                "stage": name,
                "seconds": round(t1 - t0, 3),
                "start_bytes": start,
                "peak_bytes": peak,
                "end_bytes": end,
                "peak_bytes_per_cell": round(peak / n, 1),
                "end_bytes_per_cell": round(end / n, 1),
            }
        )
    return out


class StageLines:
    """A text stream that timestamps the stage lines :class:`~torchdr_sc.progress.Progress`
    writes (``'<label>: <stage> (...)...'`` when a stage starts, ``'<label>: <stage> done
    in ...'`` when it ends) and keeps ``(stage, start, end)`` of each; other text is dropped."""

    def __init__(self, label: str) -> None:
        self.prefix = f"{label}: "
        self.open: dict[str, float] = {}
        self.stages: list[tuple[str, float, float]] = []

    def write(self, text: str) -> int:
        now = time.perf_counter()
        for line in text.splitlines():
            if not line.startswith(self.prefix):
                continue
            body = line[len(self.prefix) :]
            if " done in " in body or " stopped after " in body:
                name = body.split(" done in ")[0].split(" stopped after ")[0]
                if name in self.open:
                    self.stages.append((name, self.open.pop(name), now))
            elif body.endswith("..."):
                self.open[body[:-3].split(" (")[0]] = now
        return len(text)

    def flush(self) -> None:
        return None


def profile(method: str, n: int, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """Fit ``method`` on the atlas of ``n`` cells; the stage-by-stage memory record."""
    import contextlib

    import numpy as np
    import torch

    import torchdr_sc as tdr
    from benchmarks.datasets import prepare

    classes = {"umap": tdr.UMAP, "tsne": tdr.TSNE, "infotsne": tdr.InfoTSNE}
    dataset = prepare("atlas", n, seed)
    lines = StageLines(classes[method].__name__)
    with RSSSampler() as sampler:
        baseline = rss_bytes()
        t0 = time.perf_counter()
        X = np.load(dataset.x_path)
        x = torch.from_numpy(X)
        lines.stages.append(("data", t0, time.perf_counter()))
        estimator = classes[method](random_state=seed, progress_bar=True, **options)
        t_fit = time.perf_counter()
        with contextlib.redirect_stderr(lines):  # type: ignore[type-var]
            z = estimator.fit_transform(x)
        t_end = time.perf_counter()
    del z
    records = stage_records(sampler, lines.stages, baseline, n)
    fit_peak = max(sampler.window(t_fit, t_end)) - baseline
    return {
        "method": method,
        "n": n,
        "d": int(X.shape[1]),
        "seed": seed,
        "options": options,
        "torchdr_sc": tdr.__version__,
        "threads": torch.get_num_threads(),
        "baseline_bytes": baseline,
        "fit_seconds": round(t_end - t_fit, 2),
        "timings": {k: round(float(v), 2) for k, v in getattr(estimator, "timings_", {}).items()},
        "peak_bytes": fit_peak,
        "peak_bytes_per_cell": round(fit_peak / n, 1),
        "stages": records,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: one profile, printed and optionally appended to ``--out`` (JSON lines)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="umap", choices=("umap", "tsne", "infotsne"))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    options = {} if args.max_iter is None else {"max_iter": args.max_iter}
    record = profile(args.method, args.n, args.seed, options)
    text = json.dumps(record)
    print(text)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
