"""The memory model of a UMAP run: bytes per cell per stage, fitted on small runs, checked on
larger ones, extrapolated to 10M-100M cells.

Reads the records of :mod:`benchmarks.embed_run` (``torchdr-sc embed`` on the atlas, one
process, the 50 PCs in memory) and models the resident memory of each stage as
``base + bytes_per_cell * n``, fitted by least squares on the runs of at most ``--fit-max``
cells and at least ``--fit-min``. The model's peak (the largest stage) is then compared
with the measured peak of every run, and predicted for larger sizes::

    python -m benchmarks.memory_model --tag cpu-2core-umap-memory --fit-min 200000 --fit-max 1000000

Fitted on 100,000 and 200,000 cells, the model overestimates the peak at 1M by 131 %: the
kNN search's memory grows faster than ``n`` at those sizes (its blocks and lists have
fixed parts), so the fit uses the sizes closest to the ones predicted.

Beside the fit, :func:`structures` accounts for what the stages hold, from the data
structures' sizes (the same formulas as ``docs/guide/scaling.md``), so that a stage's
``bytes_per_cell`` can be read as structures plus temporaries. The report goes to
``benchmarks/results/<tag>-model.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PREDICT = (1_000_000, 10_000_000, 50_000_000, 100_000_000)
GB = 2**30


def structures(n: int, d: int = 50, k: int = 14, entries_per_cell: float = 22.0) -> dict:
    """Bytes of the data structures of a UMAP fit of ``n`` cells.

    ``d``: dimensions of the representation (float32); ``k``: neighbours besides the cell;
    ``entries_per_cell``: stored entries of the symmetric P per cell (the union of the kNN
    lists, between ``k`` and ``2k``; 22.0 on the atlas at 200,000 cells). The optimisation
    also holds the epoch schedule and per-epoch buffers, which the fit accounts for.
    """
    entries = entries_per_cell * n
    return {
        "X (float32)": 4 * d * n,
        "kNN graph (int64 ids, float32 distances)": 12 * k * n,
        "P (int64 rows and columns, float32 weights)": 20 * entries,
        "P being built (compact union + its sorted copy)": 32 * entries,
        "embedding (2-D, float32)": 8 * n,
    }


def load(tag: str) -> list[dict]:
    """The successful records of ``tag``, by size."""
    path = RESULTS / f"{tag}.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((r for r in records if r.get("exit") == 0), key=lambda r: r["n"])


def fit(records: list[dict], fit_min: int, fit_max: int) -> dict[str, tuple[float, float]]:
    """``{stage: (base bytes, bytes per cell)}`` from the runs of ``fit_min`` to ``fit_max``
    cells."""
    small = [r for r in records if fit_min <= r["n"] <= fit_max]
    stages = {s["stage"] for r in small for s in r["stages"]}
    model = {}
    for stage in sorted(stages):
        pts = [
            (r["n"], s["peak_rank_gb"] * GB)
            for r in small
            for s in r["stages"]
            if s["stage"] == stage and s["peak_rank_gb"] > 0
        ]
        if len(pts) < 2:
            continue
        n, peak = np.array(pts, dtype=np.float64).T
        slope, base = np.polyfit(n, peak, 1)
        model[stage] = (float(base), float(slope))
    return model


def predict(model: dict[str, tuple[float, float]], n: int) -> tuple[str, float]:
    """The stage with the largest predicted peak at ``n`` cells, and that peak in bytes."""
    stage, (base, slope) = max(model.items(), key=lambda kv: kv[1][0] + kv[1][1] * n)
    return stage, base + slope * n


def report(tag: str, fit_min: int, fit_max: int) -> str:
    """The markdown report: the fitted model, its check, its predictions."""
    records = load(tag)
    model = fit(records, fit_min, fit_max)
    lines = [
        f"# Memory model of `{tag}`",
        "",
        f"Fitted on the runs of {fit_min:,} to {fit_max:,} cells: resident memory of each stage of "
        "the `torchdr-sc embed` process = base + bytes per cell x n.",
        "",
        "| stage | base (GB) | bytes per cell |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | {b / GB:.3f} | {c:,.0f} |" for s, (b, c) in model.items()]
    lines += [
        "",
        "| n | measured peak (GB) | predicted peak (GB) | stage | error |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        stage, pred = predict(model, r["n"])
        err = pred / (r["peak_rank_gb"] * GB) - 1
        fitted = " (fitted)" if fit_min <= r["n"] <= fit_max else ""
        measured = f"{r['peak_rank_gb']:.3f}"
        lines.append(
            f"| {r['n']:,}{fitted} | {measured} | {pred / GB:.3f} | {stage} | {err:+.1%} |"
        )
    lines += ["", "| n | predicted peak (GB) | stage |", "|---|---|---|"]
    for n in PREDICT:
        stage, pred = predict(model, n)
        lines.append(f"| {n:,} | {pred / GB:.1f} | {stage} |")
    lines += ["", "Structures held (bytes per cell, `structures()`):", ""]
    lines += [f"- {name}: {size / 1e6:,.0f}" for name, size in structures(1_000_000).items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="cpu-2core-umap-memory")
    parser.add_argument("--fit-min", type=int, default=200_000)
    parser.add_argument("--fit-max", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    text = report(args.tag, args.fit_min, args.fit_max)
    (RESULTS / f"{args.tag}-model.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
