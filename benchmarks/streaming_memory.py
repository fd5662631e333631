"""Peak memory of an embedding with in-memory vs streamed (backed AnnData) input.

Writes a dense Gaussian-mixture matrix ``(n, d)`` float32 to an .h5ad file, then embeds it
with UMAP in separate processes, one per mode:

- ``memory``: ``read_h5ad(path)`` (X loaded) and ``fit_transform(adata.X)``;
- ``stream-faiss``: ``read_h5ad(path, backed='r')`` and ``fit_transform(adata.X)`` with
  ``backend='faiss'`` (X read in chunks into a flat faiss index);
- ``stream-torch``: the same with ``backend='torch'`` (exact blockwise search: only one
  block of rows and one chunk are held at a time).

Each process reports its peak resident memory (``ru_maxrss``), its resident memory after
the imports (baseline) and the 10-NN label accuracy of the embedding::

    python benchmarks/streaming_memory.py --n 20000 --d 500 --max-iter 100
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("memory", "stream-faiss", "stream-torch")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(path: Path, n: int, d: int, seed: int = 0) -> None:
    """Write ``n`` cells x ``d`` variables from 20 Gaussian clusters, labels in obs."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    # centres ~ as far apart as the spread of noise distances: a task neither trivial nor
    # hopeless, whatever d
    scale = float(np.sqrt(np.sqrt(8.0 * d) / (2.0 * d)))
    centers = rng.normal(scale=scale, size=(20, d)).astype(np.float32)
    labels = rng.integers(0, 20, n)
    x = centers[labels] + rng.normal(size=(n, d)).astype(np.float32)
    obs = pd.DataFrame({"label": labels.astype(str)}, index=[f"c{i}" for i in range(n)])
    ad.AnnData(x.astype(np.float32), obs=obs).write_h5ad(path)


def child(mode: str, path: str, max_iter: int, budget_mib: float | None) -> dict:
    """Embed the file in ``mode``; returns the measurements."""
    import anndata as ad
    import torch
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    import torchdr_sc as tdr
    import torchdr_sc.streaming as streaming

    if budget_mib is not None:  # chunk, query-block and score-block sizes of the stream
        budget = int(budget_mib * 2**20)
        streaming._constants.CHUNK_BYTES = streaming._constants.SCORE_BYTES = budget
        streaming._constants.QUERY_BYTES = 4 * budget

    torch.set_num_threads(1)
    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    if mode == "memory":
        adata = ad.read_h5ad(path)
        backend = "torch"
    else:
        adata = ad.read_h5ad(path, backed="r")
        backend = mode.split("-")[1]
    est = tdr.UMAP(random_state=0, max_iter=max_iter, init="pca", device="cpu", backend=backend)
    z = est.fit_transform(adata.X)
    seconds = time.perf_counter() - t0
    labels = adata.obs["label"].to_numpy()
    clf = KNeighborsClassifier(n_neighbors=10)
    acc = float(cross_val_score(clf, np.asarray(z), labels, cv=5).mean())
    return {
        "mode": mode,
        "peak_mb": peak_rss_mb(),
        "baseline_mb": baseline,
        "seconds": seconds,
        "accuracy": acc,
        "passes": getattr(est, "stream_info_", {}).get("passes", 0),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every mode in its own process and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="cells (default: %(default)s)")
    parser.add_argument("--d", type=int, default=500, help="variables (default: %(default)s)")
    parser.add_argument("--max-iter", type=int, default=100, help="UMAP epochs")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--budget-mib",
        type=float,
        default=None,
        help="streamed chunks and score blocks of this size, query blocks 4x (default: the "
        "library's 64 / 256 MiB)",
    )
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.file, args.max_iter, args.budget_mib)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.h5ad"
        make_data(path, args.n, args.d)
        size_mb = args.n * args.d * 4 / 2**20
        budget = f"{args.budget_mib:g} MiB" if args.budget_mib else "default"
        print(
            f"X: {args.n} x {args.d} float32 = {size_mb:.1f} MiB; UMAP, {args.max_iter} "
            f"epochs; stream budget {budget}"
        )
        print(f"{'mode':<14}{'peak MiB':>10}{'above baseline':>16}{'seconds':>9}{'10-NN acc':>11}")
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--child", mode, "--file", str(path)]
            cmd += ["--max-iter", str(args.max_iter)]
            if args.budget_mib is not None:
                cmd += ["--budget-mib", str(args.budget_mib)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            above = r["peak_mb"] - r["baseline_mb"]
            print(
                f"{mode:<14}{r['peak_mb']:>10.0f}{above:>16.0f}{r['seconds']:>9.1f}"
                f"{r['accuracy']:>11.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
