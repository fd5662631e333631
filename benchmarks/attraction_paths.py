"""The t-SNE attraction's paths on CPU: ms per iteration and the one-time compilation.

Sets :data:`torchdr_sc.objective.exact.ATTRACTION_COMPILE_MIN_WORK`. For each size, on the
simulated atlas (``benchmarks/datasets.py``, TSNE's P at perplexity 30): the former eager
scatter (``index_add_``), the eager CSR path and the compiled one (median of 15 calls), and,
in a fresh process with an empty TorchInductor cache, the first compiled call (cold) and,
in a second one, the first call with the cache filled (warm)::

    python -m benchmarks.attraction_paths --sizes 5000 10000 20000 30000 50000

Writes ``benchmarks/results/attraction-paths.md``. Run it on a quiet machine.
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


def _median_ms(fn, reps: int = 15) -> float:
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
    from torchdr_sc.objective.exact import StudentAttraction, attraction_student

    P = _affinity(n)
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    eager = StudentAttraction(P, RowShard.full(n), compile=False)
    compiled = StudentAttraction(P, RowShard.full(n), compile=True)
    return {
        "n": n,
        "edges": int(P.rows.numel()),
        "scatter_ms": _median_ms(lambda: attraction_student(z, P)),
        "eager_csr_ms": _median_ms(lambda: eager(z)),
        "compiled_ms": _median_ms(lambda: compiled(z)),
    }


def first_call_s(n: int) -> float:
    """Seconds of the first compiled call in this process (the compilation included)."""
    import torch

    from torchdr_sc.distributed import RowShard
    from torchdr_sc.objective.exact import StudentAttraction

    P = _affinity(n)
    z = torch.randn(n, 2)
    start = time.perf_counter()
    StudentAttraction(P, RowShard.full(n), compile=True)(z)
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
    args = parser.parse_args()
    if args.child_paths:
        print(json.dumps(measure_paths(args.child_paths)))
        return
    if args.child_first_call:
        print(json.dumps({"first_call_s": first_call_s(args.child_first_call)}))
        return
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        cold = _child(["--child-first-call", str(args.sizes[0])], env)["first_call_s"]
        warm = _child(["--child-first-call", str(args.sizes[0])], env)["first_call_s"]
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
        "",
        "| cells | P's edges | scatter (ms) | eager CSR (ms) | compiled (ms) | "
        "saving per edge-iteration (ns) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        saving = 1e6 * (r["eager_csr_ms"] - r["compiled_ms"]) / r["edges"]
        lines.append(
            f"| {r['n']:,} | {r['edges']:,} | {r['scatter_ms']:.1f} | {r['eager_csr_ms']:.1f} | "
            f"{r['compiled_ms']:.1f} | {saving:.2f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attraction-paths.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
