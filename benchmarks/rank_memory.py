"""Peak memory of every process of a ``torchrun`` fit: does it fall as processes are added?

Each process reads the same atlas (:mod:`benchmarks.datasets`, in memory, as the scaling
guide's script does), fits the method with ``distributed='auto'`` and samples its own
resident memory (:class:`benchmarks.memory_profile.RSSSampler`); rank 0 gathers every
process's peak above its baseline (the process after its imports, before the data), the
entries of P each one holds, and scores the embedding (:func:`benchmarks.metrics.evaluate`
on the 10,000-cell sample)::

    python -m torch.distributed.run --standalone --nproc_per_node 4 \\
        -m benchmarks.rank_memory --method tsne --cells 200000 --tag cpu-2core-rank-memory

The record is appended to ``benchmarks/results/<tag>.jsonl``. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.memory_profile import RSSSampler, rss_bytes

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    """One process of the job (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="tsne", choices=("tsne", "infotsne", "largevis"))
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args(argv)

    import torch
    import torch.distributed as dist

    import torchdr_sc as tdr
    from benchmarks import metrics, session
    from benchmarks.datasets import prepare
    from torchdr_sc.distributed import rank_guard

    with rank_guard():
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        ds = prepare("atlas", args.cells, args.seed)
        cls = {"tsne": tdr.TSNE, "infotsne": tdr.InfoTSNE, "largevis": tdr.LargeVis}[args.method]
        options = {} if args.max_iter is None else {"max_iter": args.max_iter}
        with RSSSampler() as sampler:
            baseline = rss_bytes()
            X = np.load(ds.x_path)
            est = cls(random_state=args.seed, device="cpu", **options)
            t0 = time.perf_counter()
            Z = est.fit_transform(X)
            seconds = time.perf_counter() - t0
        mine = {
            "rank": rank,
            "peak_gb": round((max(s for _, s in sampler.samples) - baseline) / 2**30, 3),
            "baseline_gb": round(baseline / 2**30, 3),
            "p_entries": int(est.affinity_in_.nnz),
            "p_holds_all_rows": bool(getattr(est.affinity_in_, "holds_all_rows", True)),
            "threads": torch.get_num_threads(),
        }
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
        if rank == 0:
            ctx = session.eval_context(ds, metrics.SAMPLE_SIZE, args.seed, "cpu")
            quality = metrics.evaluate(np.asarray(Z), ctx)
            record = {
                "tag": args.tag,
                "method": args.method,
                "n": args.cells,
                "world_size": world,
                "max_iter": args.max_iter,
                "fit_s": round(seconds, 1),
                "timings": {k: round(float(v), 2) for k, v in est.timings_.items()},
                "ranks": ranks,
                "max_rank_peak_gb": max(r["peak_gb"] for r in ranks),
                "quality": {k: round(float(v), 4) for k, v in quality.items()},
                "torchdr_sc": tdr.__version__,
                "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            print(json.dumps(record))
            RESULTS.mkdir(exist_ok=True)
            with (RESULTS / f"{args.tag}.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
