"""kNN searches side by side: time and recall of the k nearest neighbours, one process each.

The methods, all on the benchmark's synthetic data (:mod:`benchmarks.datasets`, a 50-D
Gaussian mixture of full intrinsic dimension: the hard case for approximate search):

- ``torch-ivf``: ``torchdr_sc.knn.knn(X, k, backend='torch', index='ivf')`` (on CPU the IVF
  probed per query, ``torchdr_sc.knn.probed_ivf``), defaults;
- ``faiss-ivf``: ``torchdr_sc.knn.knn(X, k, backend='faiss', index='ivf')``, defaults;
  ``faiss-ivf@P`` visits ``P`` lists per query instead (``nprobe=P``: faiss's way to a
  higher recall);
- ``pynndescent``: ``pynndescent.NNDescent(X, n_neighbors=k + 1)`` with umap-learn's
  settings for ``n_trees`` / ``n_iters`` and ``n_jobs=-1``, its graph read back (what
  ``umap.UMAP`` searches); a 2,000-point fit first compiles numba's code, untimed;
  ``pynndescent@M`` builds a graph of ``M`` neighbours instead and keeps its ``k`` nearest
  (pynndescent's way to a higher recall: more candidates per point);
- ``auto``: ``torchdr_sc.knn.knn(X, k)``, what the estimators use.

Every method runs in a process of its own (``python -m benchmarks.knn_methods --worker``), so
one method's memory and compiled code do not help another; the wall time of the search and
the process's peak RSS at the end of the search are recorded. Recall: the share of the exact
``k`` nearest neighbours (self excluded, exact search with ``torch.cdist`` on a seeded sample
of 2,000 points, in blocks) found.

Run from the repository root::

    python -m benchmarks.knn_methods --n 200000 1000000 --k 15 90

It prints a markdown table and writes ``benchmarks/results/knn-methods.json`` (or ``--out``)
with every row and the machine (:func:`benchmarks.machine.describe`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.datasets import prepare
from benchmarks.machine import describe

METHODS = ("torch-ivf", "faiss-ivf", "pynndescent", "auto")
RESULTS = Path(__file__).resolve().parent / "results"
N_QUERIES = 2000


def _search(method: str, X: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """``(n, k)`` neighbours (self excluded) and the seconds the search took."""
    if method.startswith("pynndescent"):
        import pynndescent

        width = int(method.split("@")[1]) if "@" in method else k + 1
        settings = {
            "n_trees": min(64, 5 + round(X.shape[0] ** 0.5 / 20.0)),
            "n_iters": max(5, round(np.log2(X.shape[0]))),
        }
        pynndescent.NNDescent(X[:2000], n_neighbors=width, n_jobs=-1)  # numba warm-up
        t = time.perf_counter()
        index = pynndescent.NNDescent(
            X, n_neighbors=width, n_jobs=-1, random_state=0, low_memory=True, **settings
        )
        found = index.neighbor_graph[0]
        seconds = time.perf_counter() - t
        rows = np.arange(X.shape[0])[:, None]
        keep = found != rows  # drop self, then keep the k nearest others (sorted by distance)
        keep &= np.cumsum(keep, axis=1) <= k
        return found[keep].reshape(X.shape[0], k), seconds
    import torch

    from torchdr_sc.knn import knn

    base, _, probes = method.partition("@")
    options = {
        "torch-ivf": {"backend": "torch", "index": "ivf"},
        "faiss-ivf": {"backend": "faiss", "index": "ivf"},
        "auto": {},
    }[base]
    if probes:
        options = {**options, "nprobe": int(probes)}
    Xt = torch.from_numpy(X)
    t = time.perf_counter()
    graph = knn(Xt, k, **options)
    return graph.indices.numpy(), time.perf_counter() - t


def _exact(X: np.ndarray, k: int, queries: np.ndarray) -> np.ndarray:
    import torch

    Xt = torch.from_numpy(X)
    d = torch.cdist(Xt[torch.from_numpy(queries)], Xt).square_()
    d[torch.arange(queries.shape[0]), torch.from_numpy(queries)] = float("inf")
    return d.topk(k, 1, largest=False).indices.numpy()


def worker(method: str, n: int, k: int) -> dict:
    """One search in this process: the row of the table."""
    X, _ = prepare("synthetic", n).load()
    X = np.ascontiguousarray(X, dtype=np.float32)
    found, seconds = _search(method, X, k)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    queries = np.random.default_rng(0).choice(n, min(n, N_QUERIES), replace=False)
    truth = np.concatenate([_exact(X, k, q) for q in np.array_split(queries, 20)])
    hits = (found[queries][:, :, None] == truth[:, None, :]).any(-1).mean()
    row = {"method": method, "n": n, "k": k, "seconds": seconds, "recall": float(hits)}
    return {**row, "peak_rss_gb": peak * 1.073741824}


def _method(name: str) -> str:
    """A method name of :data:`METHODS`, ``pynndescent@M`` or ``faiss-ivf@P`` (integers)."""
    base, _, width = name.partition("@")
    if name in METHODS or (base in ("pynndescent", "faiss-ivf") and width.isdigit()):
        return name
    raise argparse.ArgumentTypeError(
        f"unknown method {name!r}: one of {METHODS}, pynndescent@M or faiss-ivf@P"
    )


def main(argv: list[str] | None = None) -> int:
    """Run every (n, k, method) in its own process; print and save the table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.knn_methods", description=__doc__)
    p.add_argument("--n", type=int, nargs="+", default=[200_000])
    p.add_argument("--k", type=int, nargs="+", default=[15])
    names = f"{', '.join(METHODS)}, pynndescent@M or faiss-ivf@P"
    p.add_argument("--methods", nargs="+", type=_method, default=list(METHODS), help=names)
    p.add_argument("--worker", nargs=3, metavar=("METHOD", "N", "K"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS / "knn-methods.json"))
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), int(a.worker[2]))))
        return 0
    rows = []
    print("| n | k | method | search (s) | recall@k | peak RSS (GB) |\n|---|---|---|---|---|---|")
    for n in a.n:
        for k in a.k:
            for method in a.methods:
                cmd = [sys.executable, "-m", "benchmarks.knn_methods", "--worker", method]
                done = subprocess.run(
                    [*cmd, str(n), str(k)], capture_output=True, text=True, check=False
                )
                if done.returncode != 0:
                    tail = done.stderr.strip().splitlines()[-1:] or ["failed"]
                    row = {"method": method, "n": n, "k": k, "error": tail[0]}
                    print(f"| {n:,} | {k} | {method} | failed: {tail[0]} | | |", flush=True)
                else:
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    print(
                        f"| {n:,} | {k} | {method} | {row['seconds']:.2f} | "
                        f"{row['recall']:.3f} | {row['peak_rss_gb']:.2f} |",
                        flush=True,
                    )
                rows.append(row)
    out = {"command": " ".join(["python -m benchmarks.knn_methods", *(argv or sys.argv[1:])])}
    out |= {"machine": describe(), "rows": rows}
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
