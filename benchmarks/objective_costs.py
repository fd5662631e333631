"""What one iteration of the t-SNE family costs on the CPU, part by part.

The measurement behind :mod:`torchdr_sc.objective.native_ranges` and
:mod:`torchdr_sc.objective.native_infonce`. For each size, on the simulated atlas
(``benchmarks/datasets.py``, t-SNE's P at perplexity 30), milliseconds per call (median of 20)
of:

- t-SNE's attraction (the C kernel) alone, and right after InfoTSNE's repulsion (a PyTorch
  operation, as in a fit), with its row ranges on PyTorch's OpenMP team (the default) and on
  a Python thread pool (the former runner, forced here);
- InfoTSNE's repulsion (300 negatives) by the C kernel and by the batched matrix products
  it replaced on the CPU;
- a whole iteration's gradient of ``InfoTSNE`` (attraction and repulsion).

::

    python -m benchmarks.objective_costs --sizes 10000 50000 200000

Writes ``benchmarks/results/objective-costs.md`` (``--out``). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks import machine
from benchmarks.attraction_paths import median_ms

RESULTS = Path(__file__).parent / "results"


def _after(first, then, reps: int = 20) -> float:
    """Median ms of ``then()`` called right after ``first()``."""
    times = []
    for _ in range(reps + 1):
        first()
        start = time.perf_counter()
        then()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:])


def measure(n: int) -> dict:
    """ms per call of each part at ``n`` cells."""
    import torch

    import torchdr_sc as tdr
    from benchmarks.datasets import prepare
    from torchdr_sc.objective import infonce, make_objective, native_ranges

    data = prepare("atlas", n)
    est = tdr.InfoTSNE(random_state=0, max_iter=1, device="cpu", verbose=False)
    est.fit(np.load(data.x_path))
    P = est.affinity_in_
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(n, 2, generator=gen) * (n**0.5 / 10)  # a spread like a fit's main phase
    phase = SimpleNamespace(exaggeration=1.0)
    info = make_objective("infotsne", P, n_negatives=300, seed=0)
    attraction, repulsion = info._attraction, info._repulsion
    by_products = make_objective("infotsne", P, n_negatives=300, seed=0)._repulsion

    def products(z):  # the matrix-product form on the CPU, as before the C kernel
        kernel, exact = by_products._library, infonce.infonce_exact.block_pair_terms
        by_products._library = lambda: None
        infonce.infonce_exact.block_pair_terms = infonce._product_terms
        try:
            return by_products(z)
        finally:
            by_products._library, infonce.infonce_exact.block_pair_terms = kernel, exact

    row = {"n": n, "edges": int(P.rows.numel())}
    row["attraction alone"] = median_ms(lambda: attraction(z), 20)
    row["attraction alone"] = median_ms(lambda: attraction(z), 20)  # (the first: a cold team)
    row["attraction after a PyTorch op (OpenMP team)"] = _after(
        lambda: products(z), lambda: attraction(z)
    )
    has_openmp = native_ranges.has_openmp
    native_ranges.has_openmp = lambda lib: False
    try:
        row["attraction after a PyTorch op (thread pool)"] = _after(
            lambda: products(z), lambda: attraction(z)
        )
    finally:
        native_ranges.has_openmp = has_openmp
    row["InfoTSNE repulsion (C kernel)"] = median_ms(lambda: repulsion(z), 20)
    row["InfoTSNE repulsion (matrix products)"] = median_ms(lambda: products(z), 20)
    row["InfoTSNE gradient"] = median_ms(lambda: info(z, 0, phase), 20)
    row["threads"] = torch.get_num_threads()
    return row


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.objective_costs", description=__doc__)
    p.add_argument("--sizes", nargs="+", type=int, default=[10_000, 50_000, 200_000])
    p.add_argument("--out", default="objective-costs.md")
    args = p.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(measure(n))
        print(rows[-1], flush=True)
    parts = [k for k in rows[0] if k not in ("n", "edges", "threads")]
    info = machine.describe()
    sizes = " ".join(map(str, args.sizes))
    lines = [
        "# One iteration of the t-SNE family on the CPU, part by part",
        "",
        f"- command: `python -m benchmarks.objective_costs --sizes {sizes}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {info.get('cpu', '')}, "
        f"{info.get('cores', '')} cores; torch threads {rows[0]['threads']}",
        f"- versions: {info.get('versions', {})}; revision {info.get('git', '')}",
        "- milliseconds per call, median of 20; the simulated atlas's t-SNE P (perplexity 30);",
        "  a random 2-D layout of a main-phase spread",
        "",
        "| part | " + " | ".join(f"{r['n']:,} cells ({r['edges']:,} edges)" for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    lines += [f"| {k} | " + " | ".join(f"{r[k]:.2f}" for r in rows) + " |" for k in parts]
    (RESULTS / args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
