"""UMAP on several GPUs of one machine with NCCL (torchrun), for ``gpu_check.sh``.

Each process takes one GPU and the same synthetic ``n x 50`` data; rank 0 times the fit and
writes ``benchmarks/results/gpu-nccl-<world>x-<n>.json`` (world size, seconds by stage, peak
GPU memory per rank, 10-NN accuracy on 10,000 cells)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/gpu_nccl.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torchdr_sc as tdr
from benchmarks.datasets import make_synthetic
from torchdr_sc.distributed import rank_guard
from torchdr_sc.quality import knn_label_accuracy


def main() -> None:
    """Fit UMAP on every rank's GPU; rank 0 writes the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    with rank_guard():
        dist.init_process_group("nccl")
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.cuda.set_device(rank)
        X, y = make_synthetic(args.n, 50, 0)
        est = tdr.UMAP(random_state=0, device=f"cuda:{rank}")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        Z = est.fit_transform(X)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device=f"cuda:{rank}")
        peaks = [torch.zeros_like(peak) for _ in range(world)]
        dist.all_gather(peaks, peak)
        if rank == 0:
            sample = np.random.default_rng(0).choice(args.n, size=10_000, replace=False)
            record = {
                "world_size": world,
                "n": args.n,
                "fit_s": round(seconds, 2),
                "timings": {k: round(float(v), 3) for k, v in est.timings_.items()},
                "peak_gpu_gb_per_rank": [round(float(p), 3) for p in peaks],
                "knn_acc": knn_label_accuracy(np.asarray(Z)[sample], y[sample], k=10, seed=0),
                "device": torch.cuda.get_device_name(rank),
            }
            out = Path(__file__).resolve().parent / "results" / f"gpu-nccl-{world}x-{args.n}.json"
            out.write_text(json.dumps(record, indent=1))
            print(json.dumps(record))
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
