"""Recall and time of the probed IVF kNN (``backend='torch', index='ivf'``) on the simulated
atlas, for several numbers of probed cells.

The measurement behind the ``'auto'`` kNN's probe count on realistic data (the defaults were
set on Gaussian blobs): recall@14 of the graph against the exact 15 nearest neighbours of
the benchmark's 10,000-cell sample (:mod:`benchmarks.metrics`), and the search's seconds::

    python -m benchmarks.knn_recall_atlas --sizes 50000 200000 --k 14 90 --nprobe 0 12 16 24

(``0``: the default rule; ``-1``: the exact search, for its time). Writes
``benchmarks/results/knn-recall-atlas.json`` (``--out`` to name another file) and prints one
line per search. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks import datasets as dsets
from benchmarks import metrics
from benchmarks.machine import describe
from benchmarks.session import eval_context

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    """Run the searches (see the module notes)."""
    import torch

    from torchdr_sc.knn import knn
    from torchdr_sc.knn.probed_ivf import default_nlist, default_nprobe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50000, 200000])
    parser.add_argument("--k", type=int, nargs="+", default=[14, 90])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[0, 12, 16, 24])
    parser.add_argument("--out", default="knn-recall-atlas.json")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        ds = dsets.prepare("atlas", n, seed=0)
        X, _ = ds.load()
        ctx = eval_context(ds, metrics.SAMPLE_SIZE, 0, "cpu")
        x = torch.as_tensor(X)
        for k in args.k:
            for nprobe in args.nprobe:
                exact = nprobe < 0
                used = None if exact else nprobe or default_nprobe(default_nlist(n), k)
                options = {"index": "flat"} if exact else {"index": "ivf", "nprobe": used}
                start = time.perf_counter()
                graph = knn(x, k, backend="torch", **options)
                seconds = time.perf_counter() - start
                found = np.asarray(graph.indices)[ctx.queries][:, :14]
                truth = ctx.neighbors[:, :14]
                recall = float(
                    np.mean([len(set(a) & set(b)) / 14 for a, b in zip(found, truth, strict=True)])
                )
                row = {"n": n, "k": k, "nprobe": "exact" if exact else used}
                row |= {"default": not nprobe, "seconds": seconds}
                rows.append(row | {"recall14": recall})
                print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": describe(), "runs": rows}
    (RESULTS / args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
