"""The t-SNE attraction's paths on CPU: ms per iteration and the one-time compilation.

The measurement behind :func:`torchdr_sc.objective.attraction.attraction_path`. For each size,
on the simulated atlas (``benchmarks/datasets.py``, TSNE's P at perplexity 30): the former
eager scatter (``index_add_``), the eager CSR path, the ``torch.compile`` one and the C
kernel (:mod:`torchdr_sc.objective.native`; median of 15 calls), and, in fresh processes
with empty caches, the first compiled call and the first C-kernel call (their builds
included; cold) and, in a second process each, the first call with the caches filled
(warm)::

    python -m benchmarks.attraction_paths --sizes 5000 10000 20000 30000 50000 100000

Writes ``benchmarks/results/attraction-paths-native.md`` (``--out``). Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _affinity(n: int):
    import torchdr_sc as tdr
    from benchmarks.datasets import prepare

    data = prepare("atlas", n)
    est = tdr.TSNE(random_state=0, max_iter=1, device="cpu")
    est.fit_transform(np.load(data.x_path))
    return est.affinity_in_


def median_ms(fn, reps: int = 15) -> float:
    """Median milliseconds of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure_paths(n: int) -> dict:
    """ms per call of each path at ``n`` cells (this process: caches as they are)."""
    import torch

    from torchdr_sc.distributed import RowShard
    from torchdr_sc.objective.attraction import StudentAttraction
    from torchdr_sc.objective.exact import attraction_student

    P = _affinity(n)
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    eager = StudentAttraction(P, RowShard.full(n), compile=False)
    compiled = StudentAttraction(P, RowShard.full(n), compile=True)
    native = StudentAttraction(P, RowShard.full(n), compile="auto")
    return {
        "n": n,
        "edges": int(P.rows.numel()),
        "scatter_ms": median_ms(lambda: attraction_student(z, P)),
        "eager_csr_ms": median_ms(lambda: eager(z)),
        "compiled_ms": median_ms(lambda: compiled(z)),
        "native_ms": median_ms(lambda: native(z)) if native.path == "native" else float("nan"),
    }


def first_call_s(n: int, compile: bool | str = True) -> float:
    """Seconds of the first call of a path in this process (its compilation or build
    included)."""
    import torch

    from torchdr_sc.distributed import RowShard
    from torchdr_sc.objective.attraction import StudentAttraction

    P = _affinity(n)
    z = torch.randn(n, 2)
    start = time.perf_counter()
    StudentAttraction(P, RowShard.full(n), compile=compile)(z)
    return time.perf_counter() - start


def _child(args: list[str], env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.attraction_paths", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 30000, 50000])
    parser.add_argument("--child-paths", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-first-call", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-native", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="attraction-paths-native.md")
    args = parser.parse_args()
    if args.child_paths:
        print(json.dumps(measure_paths(args.child_paths)))
        return
    if args.child_first_call:
        compile = "auto" if args.child_native else True
        print(json.dumps({"first_call_s": first_call_s(args.child_first_call, compile)}))
        return
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as kernels:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCHDR_SC_CACHE_DIR": kernels}
        first = ["--child-first-call", str(args.sizes[0])]
        cold = _child(first, env)["first_call_s"]
        warm = _child(first, env)["first_call_s"]
        native_cold = _child([*first, "--child-native"], env)["first_call_s"]
        native_warm = _child([*first, "--child-native"], env)["first_call_s"]
        for n in args.sizes:
            rows.append(_child(["--child-paths", str(n)], env))
    sizes = " ".join(map(str, args.sizes))
    machine = platform.processor() or platform.machine()
    lines = [
        "# The t-SNE attraction's CPU paths",
        "",
        f"- command: `python -m benchmarks.attraction_paths --sizes {sizes}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {machine}, {os.cpu_count()} "
        f"cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- first compiled call in a new process: {cold:.1f} s with an empty TorchInductor "
        f"cache, {warm:.1f} s with it filled (n = {args.sizes[0]})",
        f"- first C-kernel call in a new process: {native_cold:.2f} s with an empty kernel "
        f"cache (the build), {native_warm:.2f} s with it filled",
        "",
        "| cells | P's edges | scatter (ms) | eager CSR (ms) | compiled (ms) | C kernel (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['edges']:,} | {r['scatter_ms']:.1f} | {r['eager_csr_ms']:.1f} | "
            f"{r['compiled_ms']:.1f} | {r['native_ms']:.1f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
