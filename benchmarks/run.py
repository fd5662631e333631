"""Run the benchmark: ``python -m benchmarks.run --quick`` or ``... --sizes N [N ...]``.

Every run (one method of one tool, one backend, one device, one dataset) is its own worker
process; its embedding is scored here. Results go to ``benchmarks/results/`` as JSON lines
(first line: machine, versions, command), a markdown report and a log-log plot of time vs n.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import datasets as dsets
from benchmarks import metrics
from benchmarks.plan import (
    BACKENDS,
    DEFAULT_METHODS,
    DEFAULT_PEERS,
    METHODS,
    PEERS,
    SCANPY_PYTHON,
    TORCHDR_PYTHON,
    configs,
)
from benchmarks.session import Session, cuda_available, eval_context

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FULL_SIZES = (10_000, 50_000, 200_000, 1_000_000)
QUICK = {
    "datasets": ["digits", "pbmc68k_reduced", "synthetic"],
    "sizes": [10_000],
    "backends": ["auto"],
    "torchdr_backends": ["faiss"],
    "budget": 180.0,
}
#: What users run: the real data and the simulated atlas from 5k to 1M cells, 5 seeds (2 from
#: 500k cells on), the first fit of each run cold (new process, empty kernel caches).
SWEEP = {
    "datasets": ["digits", "pbmc68k_reduced", "atlas"],
    "sizes": [5_000, 10_000, 20_000, 30_000, 50_000, 100_000, 200_000, 1_000_000],
    "backends": ["auto"],
    "torchdr_backends": ["faiss"],
    "seeds": [0, 1, 2, 3, 4],
    "large_n": 500_000,
    "large_seeds": 2,
    "slow_fit": 120.0,
    "budget": 1500.0,
    "tool_budget": ["scanpy=600", "torchdr=600"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments; defaults to ``sys.argv[1:]``.

    Returns
    -------
    argparse.Namespace
    """
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="digits, pbmc68k_reduced and synthetic 10k; backend 'auto'; 180 s budget",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="digits, pbmc68k_reduced and the atlas at 5k-1M cells; backend 'auto'; seeds "
        "0-4 (2 from 500k cells on or where a fit takes over 120 s); cold first fits; "
        "1500 s budget per fit (600 s for scanpy and TorchDR)",
    )
    p.add_argument("--datasets", nargs="+", choices=dsets.FAMILIES, default=None)
    p.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=None,
        help=f"sizes of the synthetic data (default {' '.join(map(str, FULL_SIZES))})",
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    p.add_argument(
        "--backends",
        nargs="+",
        choices=(*BACKENDS, "auto"),
        default=None,
        help="our kNN backends (default: each installed one)",
    )
    p.add_argument(
        "--devices",
        nargs="+",
        choices=("cpu", "cuda"),
        default=None,
        help="devices for ours and TorchDR (default: cpu, and cuda when present)",
    )
    p.add_argument("--peers", nargs="*", choices=(*PEERS, "none"), default=list(DEFAULT_PEERS))
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        metavar="TOOL:METHOD",
        help="runs to leave out, e.g. ours:tsne scanpy:tsne (tool as in the run labels: "
        "ours, umap-learn, opentsne, scanpy, torchdr)",
    )
    p.add_argument(
        "--no-ours",
        dest="ours",
        action="store_false",
        help="run the peers only (e.g. to refresh their figures)",
    )
    p.add_argument(
        "--torchdr-backends",
        nargs="+",
        choices=("faiss", "keops", "torch"),
        default=None,
        help="TorchDR's backends (default: faiss)",
    )
    p.add_argument(
        "--torchdr-python",
        default=str(TORCHDR_PYTHON),
        help="python of the TorchDR virtual environment",
    )
    p.add_argument(
        "--scanpy-python",
        default=str(SCANPY_PYTHON) if SCANPY_PYTHON.exists() else sys.executable,
        help="python for the scanpy runs (default: benchmarks/.venv-scanpy when it exists, "
        "made by setup_scanpy_venv.sh; else this interpreter)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="wall-time budget of one fit in seconds (default 1800; --quick 180; --sweep 1500)",
    )
    p.add_argument(
        "--peer-budget",
        type=float,
        default=None,
        help="wall-time budget of one fit of a peer (default: --budget)",
    )
    p.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="epochs for every method (default: each tool's own); for smoke tests",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the samples")
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="seeds of the fits, all in one worker per run (default: --seed); quality is "
        "reported as mean and sd over them, time as the first fit (cold) and the median of "
        "the others (warm)",
    )
    p.add_argument(
        "--large-n",
        type=int,
        default=None,
        help="from this size on, only the first --large-seeds seeds",
    )
    p.add_argument(
        "--large-seeds",
        type=int,
        default=2,
        help="seeds from --large-n on and for slow fits (the first fit is cold, the second warm)",
    )
    p.add_argument(
        "--slow-fit",
        type=float,
        default=None,
        help="a run whose fit is estimated (from smaller sizes) to take longer than this many "
        "seconds gets only --large-seeds seeds (default: none; 120 with --sweep)",
    )
    p.add_argument(
        "--tool-budget",
        nargs="*",
        default=[],
        metavar="TOOL=SECONDS",
        help="per-fit budget of one tool (e.g. scanpy=600 torchdr=600), instead of --budget / "
        "--peer-budget",
    )
    p.add_argument(
        "--cold",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run each worker with empty kernel-cache folders (default: on with --sweep)",
    )
    p.add_argument("--eval-sample", type=int, default=metrics.SAMPLE_SIZE)
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="time the first call (JIT compilation and caches included)",
    )
    p.add_argument(
        "--tl",
        action="store_true",
        help="also run tdr.tl.<method> on an AnnData (our first backend)",
    )
    p.add_argument("--keep-embeddings", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--tag", default=None, help="name of the output files (default: date-time)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    args = p.parse_args(argv)
    quick = QUICK if args.quick else SWEEP if args.sweep else {}
    args.datasets = args.datasets or quick.get("datasets") or list(dsets.FAMILIES)
    args.sizes = sorted(args.sizes or quick.get("sizes") or FULL_SIZES)
    args.backends = args.backends or quick.get("backends") or list(BACKENDS)
    args.torchdr_backends = args.torchdr_backends or quick.get("torchdr_backends") or ["faiss"]
    args.budget = args.budget or quick.get("budget") or 1800.0
    args.seeds = args.seeds or quick.get("seeds") or [args.seed]
    if args.large_n is None:
        args.large_n = quick.get("large_n")
        args.large_seeds = quick.get("large_seeds", args.large_seeds)
    if args.cold is None:
        args.cold = args.sweep
    if args.slow_fit is None:
        args.slow_fit = quick.get("slow_fit")
    budgets = args.tool_budget or quick.get("tool_budget") or []
    try:
        args.tool_budget = {k: float(v) for k, v in (b.split("=") for b in budgets)}
    except ValueError:
        p.error(f"--tool-budget takes TOOL=SECONDS; got {' '.join(budgets)}")
    if args.sweep:
        args.warmup = False  # the first fit of each worker is the cold one
    args.peer_budget = args.peer_budget or args.budget
    args.peers = [] if "none" in args.peers else args.peers
    return args


def _our_estimators_missing(methods: list[str]) -> list[str]:
    try:
        import torchdr_sc as tdr
    except ImportError:
        return list(methods)
    from benchmarks.runners.ours import CLASSES

    return [CLASSES[m] for m in methods if not hasattr(tdr, CLASSES[m])]


def _dataset_plan(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    """``(family, n)`` in the order run: the small real datasets, then increasing sizes."""
    order = [f for f in ("digits", "pbmc68k_reduced", "synthetic", "atlas") if f in args.datasets]
    sized = ("synthetic", "atlas")
    return [(f, n) for f in order for n in (args.sizes if f in sized else [None])]


def _datasets(args: argparse.Namespace):
    for family, n in _dataset_plan(args):
        try:
            yield dsets.prepare(family, n, seed=args.seed)
        except ImportError as exc:
            print(f"[{family}] skipped: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    int
        Exit status.
    """
    args = parse_args(argv)
    if args.dry_run:
        devices = args.devices or (["cpu", "cuda"] if cuda_available() else ["cpu"])
        cfgs = configs(
            args.methods,
            args.backends if args.ours else [],
            devices,
            args.peers,
            args.torchdr_backends,
            anndata_layer=args.tl and args.ours,
        )
        names = [f if n is None else f"{f}-{n}" for f, n in _dataset_plan(args)]
        print(f"datasets: {', '.join(names)}; budget {args.budget:.0f} s per run")
        print("\n".join(f"  {c.label}" for c in cfgs))
        return 0
    session = Session(args)
    missing = _our_estimators_missing(args.methods)
    if missing:
        print(
            f"note: torchdr_sc.{', '.join(missing)} not importable yet; "
            "those runs are reported as unavailable.",
            flush=True,
        )
    cfgs = configs(
        args.methods,
        args.backends if args.ours else [],
        session.devices,
        args.peers,
        args.torchdr_backends,
        anndata_layer=args.tl and args.ours,
    )
    cfgs = [c for c in cfgs if f"{c.tool}:{c.method}" not in set(args.skip)]
    print(
        f"{len(cfgs)} configurations per dataset; budget {args.budget:.0f} s per run; "
        f"writing {session.jsonl}",
        flush=True,
    )
    for ds in _datasets(args):
        ctx = eval_context(ds, args.eval_sample, args.seed, session.eval_device)
        for cfg in cfgs:
            session.add(session.run_one(cfg, ds, ctx))
    session.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
