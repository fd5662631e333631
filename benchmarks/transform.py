"""New cells onto an existing map: ``transform`` against umap-learn's and openTSNE's.

The synthetic single-cell-like mixture of the suite (:func:`benchmarks.datasets.make_synthetic`)
is split into a reference (``1 - new_fraction``) and new cells (``new_fraction``, stratified
by label). Each tool fits the reference, then places the new cells with its ``transform``:

- ours: ``tdr.UMAP().fit(ref).transform(new)`` and ``tdr.TSNE().fit(ref).transform(new)``
  (defaults; ``device`` as given);
- umap-learn: ``umap.UMAP(n_jobs=-1).fit(ref).transform(new)`` (``random_state=None``, so
  that it uses every core);
- openTSNE: ``openTSNE.TSNE(n_jobs=-1).fit(ref).transform(new)``.

Reported per tool: fit and transform seconds, and the *transform accuracy*: the 10-NN label
accuracy of the new cells classified against the reference embedding (a 10-nearest-
neighbour classifier trained on the reference cells' positions and labels, scored on the
new cells' positions; on a seeded sample of at most 10,000 new cells). Everything runs in
this one process, one tool after the other::

    python -m benchmarks.transform --n 200000
    python -m benchmarks.transform --n 20000 --tools ours-umap umap-learn --out t.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parent.parent / "src"
TOOLS = ("ours-umap", "ours-tsne", "umap-learn", "opentsne")
SAMPLE = 10_000


def split(y: np.ndarray, new_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference and new row indices, stratified by label."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    ref, new = train_test_split(rows, test_size=new_fraction, random_state=seed, stratify=y)
    return np.sort(ref), np.sort(new)


def transform_accuracy(z_ref, y_ref, z_new, y_new, seed: int = 0) -> float:
    """10-NN accuracy of (a sample of) the new cells against the reference embedding."""
    from sklearn.neighbors import KNeighborsClassifier

    keep = np.arange(len(z_new))
    if len(keep) > SAMPLE:
        keep = np.sort(np.random.default_rng(seed).choice(len(keep), SAMPLE, replace=False))
    clf = KNeighborsClassifier(10).fit(z_ref, y_ref)
    return float(clf.score(z_new[keep], y_new[keep]))


def run_tool(tool: str, x_ref: np.ndarray, x_new: np.ndarray, device: str) -> dict:
    """Fit ``tool`` on the reference and transform the new cells; times and embeddings."""
    t0 = time.perf_counter()
    if tool.startswith("ours-"):
        import torchdr_sc as tdr

        est = (tdr.UMAP if tool == "ours-umap" else tdr.TSNE)(device=device, random_state=0)
        z_ref = est.fit_transform(x_ref)
        t1 = time.perf_counter()
        z_new = est.transform(x_new)
    elif tool == "umap-learn":
        import umap

        model = umap.UMAP(n_neighbors=15, min_dist=0.1, n_jobs=-1).fit(x_ref)
        z_ref = model.embedding_
        t1 = time.perf_counter()
        z_new = model.transform(x_new)
    elif tool == "opentsne":
        import openTSNE

        emb = openTSNE.TSNE(n_jobs=-1, random_state=0).fit(x_ref)
        z_ref = np.asarray(emb)
        t1 = time.perf_counter()
        z_new = np.asarray(emb.transform(x_new))
    else:
        raise ValueError(f"`tool` must be one of {', '.join(map(repr, TOOLS))}; got {tool!r}.")
    t2 = time.perf_counter()
    return {"fit_s": t1 - t0, "transform_s": t2 - t1, "z_ref": z_ref, "z_new": z_new}


def main(argv: list[str] | None = None) -> int:
    """Run the tools one after the other and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=200_000, help="cells in all (default: %(default)s)"
    )
    parser.add_argument("--new-fraction", type=float, default=0.1, help="(default: %(default)s)")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--device", default="auto", help="ours: 'auto', 'cpu', 'cuda'")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    try:
        import torchdr_sc  # noqa: F401
    except ImportError:  # a plain checkout
        sys.path.insert(0, str(SRC))
    from benchmarks.datasets import make_synthetic

    warnings.filterwarnings("ignore", category=UserWarning)
    x, y = make_synthetic(args.n)
    ref, new = split(y, args.new_fraction)
    print(f"synthetic {args.n:,} x {x.shape[1]}: {len(ref):,} reference, {len(new):,} new cells")
    print(f"{'tool':<12}{'fit (s)':>10}{'transform (s)':>15}{'transform acc.':>16}")
    rows = []
    for tool in args.tools:
        out = run_tool(tool, x[ref], x[new], args.device)
        acc = transform_accuracy(out["z_ref"], y[ref], out["z_new"], y[new])
        row = {"tool": tool, "fit_s": out["fit_s"], "transform_s": out["transform_s"]}
        rows.append({**row, "accuracy": acc, "n": args.n, "n_new": len(new)})
        print(f"{tool:<12}{out['fit_s']:>10.2f}{out['transform_s']:>15.2f}{acc:>16.3f}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
