"""Stage-by-stage GPU profile of UMAP: ``python -m benchmarks.gpu_profile --n 1000000``.

Complements :mod:`benchmarks.gpu` (the end-to-end table): times each kNN variant with its
recall against exact search on a sample of queries, and UMAP fits with the epoch eager and
compiled (the compiled fit twice, so the second shows the cost without compilation), with
CUDA synchronised around every timed region. Prints one table and, with ``--json``, writes
the raw figures. Runs on the CPU too (``--device cpu``), slowly.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parent.parent / "src"
if (SRC / "torchdr_sc").is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import torchdr_sc as tdr  # noqa: E402
from benchmarks.datasets import make_synthetic  # noqa: E402
from torchdr_sc.knn import knn  # noqa: E402

#: kNN variants timed: (label, keyword arguments of :func:`torchdr_sc.knn.knn`).
KNN_VARIANTS = (
    ("exact", {"backend": "torch"}),
    ("ivf", {"backend": "torch", "index": "ivf"}),
    *((f"ivf{p}", {"backend": "torch", "index": "ivf", "nprobe": p}) for p in (8, 16, 24, 32)),
    ("auto", {"backend": "auto"}),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean fraction of each row's exact neighbours present in ``found`` (same rows)."""
    hits = (found[:, :, None] == exact[:, None, :]).any(1).float().mean()
    return float(hits)


def profile_knn(
    X: torch.Tensor, k: int, n_queries: int, seed: int, labels: list[str]
) -> list[dict]:
    """Time the kNN variants named; recall on ``n_queries`` random rows against exact search."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(X.shape[0], generator=gen)[:n_queries].to(X.device)
    truth = knn(X, k + 1, backend="torch", query=X[rows]).indices[:, 1:]  # drop self
    out = []
    for label, kwargs in KNN_VARIANTS:
        if label not in labels:
            continue
        try:
            knn(X[:2048], k, **kwargs)  # warm-up (kernels, lazy imports)
            graph, secs = _timed(lambda kw=kwargs: knn(X, k, **kw), X.device)
        except Exception as err:  # report and go on: one variant must not stop the others
            out.append({"stage": f"knn {label}", "error": f"{type(err).__name__}: {err}"})
            continue
        rec = recall(graph.indices[rows], truth)
        out.append({"stage": f"knn {label}", "seconds": secs, "recall": rec})
    return out


def profile_fit(X: torch.Tensor, compile_modes: list[str], max_iter: int | None) -> list[dict]:
    """UMAP fits with each epoch mode; per-stage seconds and per-epoch milliseconds.

    The first fit runs the whole pipeline; the later ones reuse its kNN graph.
    """
    out, graph = [], None
    for mode in compile_modes:
        flag = {"eager": False, "compiled": True, "auto": "auto"}[mode]
        kw = {"device": X.device, "compile": flag, "random_state": 0}
        if max_iter is not None:
            kw["max_iter"] = max_iter
        est = tdr.UMAP(**kw)
        if X.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(X.device)
        try:
            emb, secs = _timed(lambda e=est, g=graph: e.fit_transform(X, knn=g), X.device)
        except Exception as err:  # report and go on with the other modes
            out.append({"stage": f"fit umap {mode}", "error": f"{type(err).__name__}: {err}"})
            continue
        graph = est.knn_
        t = {k: float(v) for k, v in est.timings_.items()}
        row = {"stage": f"fit umap {mode}", "seconds": secs, **t, "n_iter": est.n_iter_}
        row["ms_per_epoch"] = 1e3 * t["optimize"] / max(1, est.n_iter_)
        if X.device.type == "cuda":
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(X.device) / 2**20
        row["finite"] = bool(torch.isfinite(torch.as_tensor(emb)).all())
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the profile and print its table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_profile", description=__doc__)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--device", default="cuda")
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--queries", type=int, default=2000, help="rows used for the recall")
    p.add_argument(
        "--knn",
        nargs="*",
        default=[v[0] for v in KNN_VARIANTS],
        help="kNN variants to time (labels of KNN_VARIANTS); none: skip",
    )
    p.add_argument(
        "--fits",
        nargs="*",
        default=["eager", "compiled", "compiled"],
        choices=["eager", "compiled", "auto"],
    )
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--json", default=None, help="write the rows here")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    print(json.dumps(env), flush=True)
    X_np, _ = make_synthetic(a.n)
    X = torch.from_numpy(X_np).to(device)
    rows = profile_knn(X, a.k, a.queries, 0, a.knn) if a.knn else []
    for r in rows:
        print(json.dumps(r), flush=True)
    for r in profile_fit(X, a.fits, a.max_iter):
        rows.append(r)
        print(json.dumps(r), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    print(f"\n{'stage':28s} {'s':>8s} {'knn':>7s} {'aff':>7s} {'opt':>7s} {'ms/ep':>7s} recall")
    for r in rows:
        if "error" in r:
            print(f"{r['stage']:28s} ERROR {r['error'][:80]}")
            continue
        cells = [f"{r.get(c, float('nan')):7.3f}" for c in ("knn", "affinity", "optimize")]
        ms = r.get("ms_per_epoch", float("nan"))
        rec = r.get("recall", float("nan"))
        print(f"{r['stage']:28s} {r['seconds']:8.3f} {' '.join(cells)} {ms:7.2f} {rec:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
