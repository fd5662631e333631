"""UMAP on a CPU shared with another process: ours vs umap-learn, with and without a competitor.

torch's OpenMP threads wait on each other at the end of every parallel region, so a run with as
many threads as cores stalls when another process holds one of them. ``torchdr_sc`` limits its
threads to the cores other processes leave free (:mod:`torchdr_sc._threads`); this script
measures what that policy buys, with public tools only:

- data: a seeded Gaussian mixture, ``--n`` points (default 50,000) in 50 dimensions, 10
  clusters (the labels);
- tools: ``ours`` (``tdr.UMAP()``, defaults), ``ours-policy-off`` (the same with
  ``TORCHDR_SC_THREAD_POLICY=off``: torch's thread setting used as is) and ``umap-learn``
  (``umap.UMAP(n_jobs=2)``, ``random_state=None`` so that it runs in parallel);
- each with and without a competitor: one CPU-bound process (``python -c 'while True:
  pass'``) started before the fit and killed after it;
- ``--repeats`` fits per cell of the table (default 3); the median fit time is reported,
  with the 10-NN label accuracy (CONTRIBUTING.md, section 5: 5-fold cross-validated, on a seeded
  sample of at most 10,000 points) of the median run.

A small warm-up fit of each tool (numba compilation, first torch calls) runs first, untimed.
Run from the repository root::

    python -m benchmarks.contention                      # full size (several minutes)
    python -m benchmarks.contention --n 3000 --repeats 1 # smoke test

It prints a markdown table and writes ``benchmarks/results/contention-<n>.json`` (or ``--out``)
with every run, the machine (:func:`benchmarks.machine.describe`) and the policy's decisions
as logged by ``torchdr_sc._threads``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
RESULTS = ROOT / "benchmarks" / "results"
TOOLS = ("ours", "ours-policy-off", "umap-learn")
POLICY_ENV = "TORCHDR_SC_THREAD_POLICY"
SAMPLE = 10_000


def make_mixture(
    n: int, n_features: int = 50, n_clusters: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian mixture: ``n`` float32 points and their cluster labels.

    Parameters
    ----------
    n
        Number of points.
    n_features
        Dimensions.
    n_clusters
        Clusters, of equal expected size; unit-variance noise around centres drawn from
        ``N(0, 0.6^2 I)`` (clusters overlap a little: the input-space 10-NN accuracy is about 0.97).
    seed
        Seed of the mixture and the sample.

    Returns
    -------
    tuple of numpy.ndarray
        ``(x, labels)`` of shapes ``(n, n_features)`` and ``(n,)``.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.6, size=(n_clusters, n_features))
    labels = rng.integers(0, n_clusters, n)
    x = centres[labels] + rng.normal(size=(n, n_features))
    return x.astype(np.float32), labels


@contextmanager
def competitor(enabled: bool, after: float = 0.0) -> Iterator[None]:
    """Run the block alongside one CPU-bound Python process (killed on exit), started before
    the block, or ``after`` seconds into it (a competitor that arrives mid-fit)."""
    if not enabled:
        yield
        return
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))

    timer = None
    if after > 0:
        timer = threading.Timer(after, start)
        timer.start()
    else:
        start()
        time.sleep(0.5)  # let it start and take a core
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
        for proc in procs:
            proc.kill()
            proc.wait()


@contextmanager
def policy_env(off: bool) -> Iterator[None]:
    """Within the block, set ``TORCHDR_SC_THREAD_POLICY=off`` if ``off``."""
    before = os.environ.get(POLICY_ENV)
    if off:
        os.environ[POLICY_ENV] = "off"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(POLICY_ENV, None)
        else:
            os.environ[POLICY_ENV] = before


class _Records(logging.Handler):
    """Collects the messages of the thread-policy logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def policy_messages() -> Iterator[list[str]]:
    """Yield the list that collects ``torchdr_sc._threads`` log messages within the block."""
    logger = logging.getLogger("torchdr_sc._threads")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def fitter(tool: str, device: str, umap_jobs: int) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``fit(x) -> embedding`` for ``tool``."""
    if tool.startswith("ours"):
        import torchdr_sc as tdr

        def fit(x: np.ndarray) -> np.ndarray:
            kwargs = {} if device == "auto" else {"device": device}
            return np.asarray(tdr.UMAP(**kwargs).fit_transform(x))

        return fit
    import umap

    def fit_umap(x: np.ndarray) -> np.ndarray:
        return np.asarray(umap.UMAP(n_jobs=umap_jobs).fit_transform(x))

    return fit_umap


def run_one(
    tool: str, fit: Callable, x: np.ndarray, *, busy: bool, after: float = 0.0
) -> tuple[float, np.ndarray, list]:
    """Time one fit of ``tool`` (with a competitor if ``busy``, from ``after`` seconds into the
    fit); seconds, embedding, messages."""
    with policy_env(tool == "ours-policy-off"), policy_messages() as messages:
        with competitor(busy, after):
            t0 = time.perf_counter()
            z = fit(x)
            seconds = time.perf_counter() - t0
    return seconds, z, list(messages)


def accuracy(z: np.ndarray, labels: np.ndarray) -> float:
    """10-NN label accuracy on a seeded sample of at most 10,000 points."""
    from torchdr_sc.quality import knn_label_accuracy

    keep = np.arange(len(z))
    if len(keep) > SAMPLE:
        keep = np.sort(np.random.default_rng(0).choice(len(keep), SAMPLE, replace=False))
    if not np.isfinite(z[keep]).all():
        return float("nan")
    return knn_label_accuracy(z[keep], labels[keep], k=10, seed=0)


def policy_summary(messages: list[str]) -> str:
    """Torch threads the policy chose, from its log messages (``'-'`` if it did not run): the
    choice at the start of the fit, then every change by a later measurement (``-> 1``)."""
    if not messages:
        return "-"
    first, shown = messages[0], messages[0]
    match = re.search(r"using (\d+) torch thread", first)
    if match:
        shown = f"{match.group(1)} (contention)"
    elif first.startswith("torch threads: "):
        shown = first.removeprefix("torch threads: ")
    changes = [re.search(r"-> (\d+) torch threads", m) for m in messages[1:]]
    return " ".join([shown, *(f"-> {c.group(1)}" for c in changes if c)])


def _loadavg() -> str | None:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Run every tool with and without a competitor; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="points (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="fits per cell (default: 3)")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--device", default="auto", help="ours: 'auto' (default), 'cpu', 'cuda'")
    parser.add_argument("--umap-jobs", type=int, default=2, help="umap-learn n_jobs (default: 2)")
    parser.add_argument(
        "--competitor-after",
        type=float,
        default=None,
        help="also time fits with the competitor started this many seconds into the fit",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    try:
        import torchdr_sc  # noqa: F401
    except ImportError:  # a plain checkout
        sys.path.insert(0, str(SRC))
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import describe

    warnings.filterwarnings("ignore")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", POLICY_ENV):
        if os.environ.get(name):
            print(
                f"note: {name}={os.environ[name]} is set; the thread policy keeps torch's setting"
            )
    import torch

    x, labels = make_mixture(args.n)
    print(
        f"Gaussian mixture {args.n:,} x {x.shape[1]}, 10 clusters; "
        f"{args.repeats} repeat(s); torch threads {torch.get_num_threads()}; "
        f"load {_loadavg()}"
    )
    fits = {tool: fitter(tool, args.device, args.umap_jobs) for tool in args.tools}
    warm = x[: min(2000, len(x))]
    warmed = set()
    for tool in args.tools:  # untimed warm-up, once per package
        kind = tool.split("-policy")[0]
        if kind not in warmed:
            warmed.add(kind)
            fits[tool](warm)

    rows, runs = [], []
    conditions: list[bool | str] = [False, True]
    if args.competitor_after:
        conditions.append(f"after {args.competitor_after:g} s")
    for tool in args.tools:
        for busy in conditions:
            after = args.competitor_after if isinstance(busy, str) else 0.0
            cell = []
            for rep in range(args.repeats):
                seconds, z, messages = run_one(tool, fits[tool], x, busy=bool(busy), after=after)
                acc = accuracy(z, labels)
                cell.append((seconds, acc))
                runs.append(
                    {
                        "tool": tool,
                        "competitor": busy,
                        "repeat": rep,
                        "fit_s": seconds,
                        "knn_acc": acc,
                        "policy_log": messages,
                    }
                )
                shown = busy if isinstance(busy, str) else ("yes" if busy else "no")
                print(f"  {tool:<16} competitor={shown:<12} {seconds:8.2f} s")
            median = statistics.median(s for s, _ in cell)
            acc_of_median = min(cell, key=lambda c: abs(c[0] - median))[1]
            rows.append(
                {
                    "tool": tool,
                    "competitor": busy,
                    "fit_s_median": median,
                    "fit_s": [s for s, _ in cell],
                    "knn_acc": acc_of_median,
                    "threads": policy_summary(runs[-1]["policy_log"]) if "ours" in tool else "-",
                }
            )

    print()
    print("| tool | competitor | fit (s, median) | 10-NN acc. | torch threads |")
    print("|---|---|---:|---:|---|")
    for row in rows:
        busy = row["competitor"]
        busy = busy if isinstance(busy, str) else ("yes" if busy else "no")
        print(
            f"| {row['tool']} | {busy} | {row['fit_s_median']:.2f} | "
            f"{row['knn_acc']:.4f} | {row['threads']} |"
        )

    out = args.out or RESULTS / f"contention-{args.n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "contention",
        "n": args.n,
        "n_features": int(x.shape[1]),
        "n_clusters": 10,
        "repeats": args.repeats,
        "device": args.device,
        "umap_jobs": args.umap_jobs,
        "competitor_after_s": args.competitor_after,
        "torch_threads": torch.get_num_threads(),
        "machine": describe(),
        "rows": rows,
        "runs": runs,
    }
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
