"""Quality (and fit time) of one estimator under several values of its parameters.

The measurement behind a default: every value is fitted on the same datasets with the same
seeds, and scored with the figures of the sweep (:mod:`benchmarks.metrics`). For example::

    python -m benchmarks.param_probe --method LargeVis --param repulsion_strength=1,7 \\
        --datasets digits pbmc68k_reduced atlas:10000 --seeds 0 1 2 --tag largevis-gamma

writes ``benchmarks/results/probe-<tag>.jsonl`` (one line per fit, the first with machine,
versions and command) and ``probe-<tag>.md`` (mean ± sd over the seeds per dataset and value).
Values are parsed as Python literals (``1``, ``7.0``, ``'SGD'``, ``None``).
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import numpy as np

from benchmarks import datasets as dsets
from benchmarks import metrics
from benchmarks.machine import describe
from benchmarks.session import eval_context

RESULTS = Path(__file__).parent / "results"
SHOWN = ("knn_acc", "np15", "trust15", "centroid_rho", "pseudotime_rho", "radius_r")


def _values(spec: str) -> tuple[str, list]:
    name, _, values = spec.partition("=")
    return name, [ast.literal_eval(v) for v in values.split(",")]


def _dataset(spec: str, seed: int) -> dsets.Dataset:
    family, _, size = spec.partition(":")
    return dsets.prepare(family, int(size) if size else None, seed=0)


def _fit(method: str, params: dict, X: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    import torchdr_sc as tdr

    est = getattr(tdr, method)(random_state=seed, verbose=False, **params)
    start = time.perf_counter()
    z = est.fit_transform(X)
    return np.asarray(z), time.perf_counter() - start


def _table(records: list[dict], name: str) -> list[str]:
    lines = [
        f"| dataset | {name} | fit (s) | " + " | ".join(SHOWN) + " |",
        "|---|---|---|" + "---|" * len(SHOWN),
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], repr(r["value"])), []).append(r)
    for (dataset, value), rows in groups.items():
        cells = [f"{np.mean([r['fit_s'] for r in rows]):.2f}"]
        for key in SHOWN:
            v = np.array([r[key] for r in rows], dtype=float)
            cells.append("—" if np.isnan(v).all() else f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
        lines.append(f"| {dataset} | {value} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run the probe (see the module notes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, help="estimator class, e.g. LargeVis")
    parser.add_argument("--param", required=True, help="name=v1,v2,...")
    parser.add_argument("--fixed", nargs="*", default=[], help="name=value kept for every fit")
    parser.add_argument("--datasets", nargs="+", default=["digits", "pbmc68k_reduced"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tag", required=True)
    args = parser.parse_args(argv)
    name, values = _values(args.param)
    fixed = {}
    for spec in args.fixed:
        key, given = _values(spec)
        fixed[key] = given[0]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"probe-{args.tag}.jsonl"
    head = describe()
    records: list[dict] = []
    with out.open("w") as f:
        f.write(json.dumps(head) + "\n")
        for spec in args.datasets:
            ds = _dataset(spec, 0)
            X, _ = ds.load()
            ctx = eval_context(ds, metrics.SAMPLE_SIZE, 0, "cpu")
            for value in values:
                for seed in args.seeds:
                    z, seconds = _fit(args.method, fixed | {name: value}, X, seed)
                    rec = {"dataset": spec, "value": value, "seed": seed, "fit_s": seconds}
                    rec |= metrics.evaluate(z, ctx)
                    records.append(rec)
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    print(json.dumps(rec), flush=True)
    lines = [
        f"# {args.method}: {name} in {values}",
        "",
        f"- command: `{head['command']}`",
        f"- source revision: {head['git']}; machine: {head['cpu']}, {head['usable_cores']} usable "
        f"cores, {head['memory_gb']} GB; torch {head['versions'].get('torch')}",
        f"- fixed: {fixed or 'none'}; seeds {args.seeds}; mean ± sd over the seeds",
        "",
        *_table(records, name),
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
