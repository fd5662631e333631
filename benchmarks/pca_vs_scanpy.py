"""``tdr.pp.pca`` against ``sc.pp.pca`` on the simulated atlas, dense and sparse.

For each size: the atlas's counts (``benchmarks.atlas_sim.simulate_counts``), scanpy's
recipe up to the highly variable genes (``normalize_total``, ``log1p``,
``highly_variable_genes(2000)``), then 50 components by both tools on the sparse log
counts and on their dense copy (HVGs only, as ``mask_var`` does by default). Recorded: wall
time of each call, the sine of the largest principal angle between the two subspaces, and
the largest difference of the variance ratios. Writes ``benchmarks/results/pca-vs-scanpy.md``.

Run: ``python -m benchmarks.pca_vs_scanpy --sizes 20000 100000 200000``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _sine(a: np.ndarray, b: np.ndarray) -> float:
    qa = np.linalg.qr(np.asarray(a, np.float64))[0]
    qb = np.linalg.qr(np.asarray(b, np.float64))[0]
    return float(np.linalg.norm(qa @ qa.T - qb @ qb.T, 2))


def _atlas(n: int):
    import scanpy as sc

    from benchmarks.atlas_sim import simulate_counts

    adata = simulate_counts(n, 0)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000)
    return adata[:, adata.var["highly_variable"].to_numpy()].copy()


def _timed(fn, adata) -> tuple[float, object]:
    work = adata.copy()
    start = time.perf_counter()
    fn(work, n_comps=50)
    return time.perf_counter() - start, work


def run_size(n: int) -> list[dict]:
    """Both tools on dense and sparse log counts of ``n`` cells."""
    import scanpy as sc
    import scipy.sparse as sp

    import torchdr_sc as tdr

    base = _atlas(n)
    rows = []
    for layout in ("sparse", "dense"):
        adata = base.copy()
        adata.X = sp.csr_matrix(adata.X) if layout == "sparse" else np.asarray(adata.X.todense())
        t_sc, ref = _timed(sc.pp.pca, adata)
        t_tdr, ours = _timed(tdr.pp.pca, adata)
        rows.append(
            {
                "n": n,
                "genes": int(adata.n_vars),
                "layout": layout,
                "scanpy_s": round(t_sc, 2),
                "tdr_s": round(t_tdr, 2),
                "speedup": round(t_sc / t_tdr, 2),
                "sine": _sine(ours.varm["PCs"], ref.varm["PCs"]),
                "ratio_diff": float(
                    np.abs(
                        ours.uns["pca"]["variance_ratio"] - ref.uns["pca"]["variance_ratio"]
                    ).max()
                ),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def write_report(rows: list[dict], path: Path, note: str = "") -> None:
    """The results table, ``note`` (e.g. the machine's load), the machine, versions, command."""
    from benchmarks.machine import describe

    info = describe()
    lines = [
        "# `tdr.pp.pca` vs `sc.pp.pca` on the simulated atlas",
        "",
        "Log-normalised counts, 2000 highly variable genes, 50 components, both tools with",
        "their defaults (scanpy: ARPACK; torchdr-sc: the covariance eigendecomposition, from",
        "float32 block products summed in float64, leading eigenpairs only).",
        "`sine`: sine of the largest principal angle between the two subspaces.",
        "",
        "| cells | genes | layout | scanpy (s) | torchdr-sc (s) | speed-up | sine "
        "| max ratio diff |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['n']} | {r['genes']} | {r['layout']} | {r['scanpy_s']} | {r['tdr_s']} | "
        f"{r['speedup']} | {r['sine']:.1e} | {r['ratio_diff']:.1e} |"
        for r in rows
    ]
    lines += ["", note] if note else []
    lines += ["", "```json", json.dumps(info, indent=1, default=str), "```", ""]
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Parse ``--sizes`` and ``--out``, run every size, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000])
    parser.add_argument("--out", type=Path, default=RESULTS / "pca-vs-scanpy.md")
    parser.add_argument("--note", default="", help="text written under the table")
    args = parser.parse_args(argv)
    rows = [row for n in args.sizes for row in run_size(n)]
    write_report(rows, args.out, args.note)


if __name__ == "__main__":
    main()
