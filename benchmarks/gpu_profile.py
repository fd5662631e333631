"""Stage-by-stage GPU profile of UMAP: ``python -m benchmarks.gpu_profile --n 1000000``.

Complements :mod:`benchmarks.gpu` (the end-to-end table): times each kNN variant with its
recall against exact search on a sample of queries; then, on the graph of a one-epoch
``prepare`` fit (kNN, affinity), the negative-sampling epoch alone in each mode (``eager``,
``compiled``: :func:`torch.compile`, ``triton``: the fused kernel of
:mod:`torchdr_sc.objective.triton_epoch`), first call (compilation included: these rows
run first in the process) apart from the steady milliseconds per epoch; the Triton kernel
against a plain PyTorch reference on one epoch, and at a few block sizes; finally whole
UMAP fits in each mode (warm: compiled above). CUDA is synchronised around every timed
region. Prints the tables and, with ``--json``, writes the raw figures. Runs on the CPU too
(``--device cpu``), slowly; the Triton rows need CUDA (or ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import argparse
import json
import logging
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
from torchdr_sc.objective.epoch import SampledEpoch, triton_available  # noqa: E402
from torchdr_sc.objective.pairs import edge_negatives, hash_key, pair_terms  # noqa: E402
from torchdr_sc.objective.sampled import scatter_pair_terms  # noqa: E402

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


#: UMAP's ``compile`` option of each epoch mode (``triton``: ``'auto'`` on CUDA with Triton).
MODES = {"eager": False, "compiled": True, "auto": "auto", "triton": "auto"}


class _FallbackWatch(logging.Handler):
    """Counts the warnings of an epoch mode that fell back to the eager path."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "eagerly" in record.getMessage():
            self.count += 1


def _fit_row(est, X: torch.Tensor, graph, label: str) -> dict:
    """Fit ``est`` (reusing ``graph`` when given); its per-stage seconds and ms per epoch."""
    if X.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(X.device)
    watch = _FallbackWatch()
    logging.getLogger("torchdr_sc").addHandler(watch)
    try:
        emb, secs = _timed(lambda: est.fit_transform(X, knn=graph), X.device)
    except Exception as err:  # report and go on with the other modes
        return {"stage": label, "error": f"{type(err).__name__}: {err}"}
    finally:
        logging.getLogger("torchdr_sc").removeHandler(watch)
    t = {k: float(v) for k, v in est.timings_.items()}
    row = {"stage": label, "seconds": secs, **t, "n_iter": est.n_iter_}
    row["ms_per_epoch"] = 1e3 * t["optimize"] / max(1, est.n_iter_)
    if X.device.type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(X.device) / 2**20
    row["finite"] = bool(torch.isfinite(torch.as_tensor(emb)).all())
    row["fell_back"] = watch.count > 0
    return row


def prepare(X: torch.Tensor) -> tuple[object, dict]:
    """A one-epoch eager UMAP fit: the kNN graph, the affinity and an embedding to reuse."""
    est = tdr.UMAP(device=X.device, compile=False, random_state=0, max_iter=1)
    return est, _fit_row(est, X, None, "prepare (knn, affinity, 1 epoch)")


def profile_fit(
    X: torch.Tensor, compile_modes: list[str], max_iter: int | None, graph=None
) -> list[dict]:
    """UMAP fits with each epoch mode; per-stage seconds and per-epoch milliseconds.

    Without ``graph`` the first fit runs the whole pipeline; the later ones reuse its kNN
    graph. A ``triton`` fit reports an error where Triton is unavailable and
    ``fell_back`` where its kernel failed and the fit ran eagerly.
    """
    out = []
    for mode in compile_modes:
        if mode == "triton" and not triton_available(X.device):
            out.append({"stage": f"fit umap {mode}", "error": "Triton unavailable"})
            continue
        kw = {"device": X.device, "compile": MODES[mode], "random_state": 0}
        if max_iter is not None:
            kw["max_iter"] = max_iter
        est = tdr.UMAP(**kw)
        row = _fit_row(est, X, graph, f"fit umap {mode}")
        out.append(row)
        if "error" not in row:
            graph = est.knn_
    return out


def _epoch_inputs(est) -> tuple[object, object, torch.Tensor]:
    """The affinity, kernel and (float32) embedding of a fitted UMAP."""
    z = torch.as_tensor(est.embedding_).to(torch.float32).contiguous()
    return est.affinity_in_, est._kernel(), z.to(est.affinity_in_.device)


def _per_epoch(step, device: torch.device, n_epochs: int) -> tuple[float, float]:
    """Seconds of ``step(0)`` (first call) and milliseconds per call of the next ones."""
    _, first = _timed(lambda: step(0), device)
    _, secs = _timed(lambda: [step(t) for t in range(1, n_epochs + 1)], device)
    return first, 1e3 * secs / max(1, n_epochs)


def profile_epochs(est, modes: list[str], n_epochs: int) -> list[dict]:
    """One epoch's gradient alone in each mode: first-call seconds and steady ms per epoch.

    ``compile_s`` is the first call less a steady epoch: the compilation (torch.compile,
    Triton's JIT or its disk cache) paid once per process.
    """
    P, kernel, z = _epoch_inputs(est)
    out = []
    for mode in modes:
        epoch = SampledEpoch(
            P,
            kernel,
            est.n_negatives,
            seed=0,
            compile=MODES[mode],
            device=z.device,
            crowded_terms=est._crowded_terms,
        )
        if mode == "triton" and epoch.path != "triton":
            out.append({"stage": f"epoch {mode}", "error": "Triton path not selected"})
            continue
        try:
            first, ms = _per_epoch(lambda t, e=epoch: e.gradient(z, t), z.device, n_epochs)
        except Exception as err:  # report and go on with the other modes
            out.append({"stage": f"epoch {mode}", "error": f"{type(err).__name__}: {err}"})
            continue
        row = {"stage": f"epoch {mode}", "first_call_s": first, "ms_per_epoch": ms}
        row["compile_s"] = max(0.0, first - ms / 1e3)
        row["edges"] = int(epoch.schedule.fixed_rate.numel())
        row["mean_active"] = epoch.schedule.mean_active
        if mode == "triton":
            row["fell_back"] = epoch.path != "triton"
        out.append(row)
    return out


def profile_triton_blocks(est, blocks: list[int], n_epochs: int) -> list[dict]:
    """The Triton kernel alone (no step scale) with each number of edges per program."""
    from torchdr_sc.objective import triton_epoch

    P, kernel, z = _epoch_inputs(est)
    epoch = SampledEpoch(P, kernel, est.n_negatives, seed=0, compile=False, device=z.device)
    consts = epoch._consts(z, 1.0)
    keys = [hash_key(0, t, z.device) for t in range(n_epochs + 1)]
    out = []
    for block in blocks:

        def step(t, b=block):
            return triton_epoch.fused_epoch_gradient(
                z,
                epoch.schedule,
                keys[t],
                consts,
                epoch=t,
                kind=epoch.kind,
                n_negatives=epoch.n_negatives,
                discard_tails=False,
                block=b,
            )

        try:
            first, ms = _per_epoch(step, z.device, n_epochs)
        except Exception as err:  # report and go on with the other sizes
            out.append({"stage": f"triton block {block}", "error": f"{type(err).__name__}: {err}"})
            continue
        out.append({"stage": f"triton block {block}", "first_call_s": first, "ms_per_epoch": ms})
    return out


def check_triton(est, epoch_id: int = 3) -> dict:
    """The Triton kernel against the PyTorch reference on one epoch of the real problem.

    The reference takes the schedule's active edges, their negatives
    (:func:`edge_negatives`), :func:`pair_terms` and :func:`scatter_pair_terms`.
    """
    from torchdr_sc.objective import triton_epoch

    P, kernel, z = _epoch_inputs(est)
    epoch = SampledEpoch(P, kernel, est.n_negatives, seed=0, compile=False, device=z.device)
    key, consts, s = hash_key(0, epoch_id, z.device), epoch._consts(z, 1.0), epoch.schedule
    options = {"kind": epoch.kind, "n_negatives": epoch.n_negatives, "discard_tails": False}
    got = triton_epoch.fused_epoch_gradient(z, s, key, consts, epoch=epoch_id, **options)
    on = s.active_mask(epoch_id).nonzero().view(-1)
    heads, tails = s.heads[on].long(), s.tails[on].long()
    m, n = epoch.n_negatives, z.shape[0]
    negatives = [edge_negatives(key, heads, tails, j, m, n) for j in range(m)]
    coords = list(z.T.contiguous())
    g_att, g_head = pair_terms(coords, heads, tails, negatives, consts, epoch.kind)
    ref = scatter_pair_terms(z, heads, tails, g_att, g_head)
    err, scale = float((got - ref).abs().max()), float(ref.abs().max())
    return {"stage": "triton vs torch", "max_err": err, "scale": scale, "active": on.numel()}


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
        default=["eager", "compiled", "triton"],
        choices=list(MODES),
    )
    p.add_argument(
        "--epochs",
        nargs="*",
        default=["triton", "eager", "compiled"],
        choices=list(MODES),
        help="epoch modes timed alone (first call and steady); none: skip",
    )
    p.add_argument("--epoch-iters", type=int, default=50, help="epochs timed per mode")
    p.add_argument(
        "--triton-blocks",
        nargs="*",
        type=int,
        default=[64, 128, 256, 512],
        help="edges per program of the Triton kernel to time; none: skip",
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
    for r in _later_stages(X, a):
        rows.append(r)
        print(json.dumps(r), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    _print_tables(rows)
    return 0


def _later_stages(X: torch.Tensor, a: argparse.Namespace):
    """Rows of the prepare fit, the epochs alone, the Triton checks and the fits, in order."""
    est, row = prepare(X)
    yield row
    if "error" in row:
        yield from profile_fit(X, a.fits, a.max_iter)
        return
    yield from profile_epochs(est, a.epochs, a.epoch_iters)
    if triton_available(X.device) and (a.triton_blocks or "triton" in a.epochs):
        try:
            yield check_triton(est)
        except Exception as err:  # report and go on
            yield {"stage": "triton vs torch", "error": f"{type(err).__name__}: {err}"}
        yield from profile_triton_blocks(est, a.triton_blocks, a.epoch_iters)
    yield from profile_fit(X, a.fits, a.max_iter, graph=est.knn_)


def _print_tables(rows: list[dict]) -> None:
    """The stage table, then the epoch table (first call, steady ms, check)."""
    print(f"\n{'stage':28s} {'s':>8s} {'knn':>7s} {'aff':>7s} {'opt':>7s} {'ms/ep':>7s} recall")
    for r in rows:
        if "error" in r:
            print(f"{r['stage']:28s} ERROR {r['error'][:80]}")
            continue
        if "seconds" not in r:
            continue
        cells = [f"{r.get(c, float('nan')):7.3f}" for c in ("knn", "affinity", "optimize")]
        ms = r.get("ms_per_epoch", float("nan"))
        rec = r.get("recall", float("nan"))
        print(f"{r['stage']:28s} {r['seconds']:8.3f} {' '.join(cells)} {ms:7.2f} {rec:.4f}")
    print(f"\n{'epoch alone':28s} {'first s':>8s} {'ms/ep':>7s} check")
    for r in rows:
        if "first_call_s" in r:
            print(f"{r['stage']:28s} {r['first_call_s']:8.3f} {r['ms_per_epoch']:7.3f}")
        elif "max_err" in r:
            print(f"{r['stage']:28s} max |err| {r['max_err']:.3g} of {r['scale']:.3g}")


if __name__ == "__main__":
    sys.exit(main())
