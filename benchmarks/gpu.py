"""GPU benchmark in one command: ``python -m benchmarks.gpu --n 1000000``.

On a machine with one CUDA GPU: synthetic n x 50 data, ``tdr.UMAP(device='cuda')`` end to end
(kNN / affinity / optimisation split, time per epoch, peak GPU and host memory, quality on a 10k
sample), ``tdr.tl.umap`` on an AnnData when anndata is importable, and the peers that are
installed there (umap-learn, TorchDR venv); the others are reported as unavailable. Works from a
plain checkout: when torchdr-sc is not installed, ``src/`` is put on the path. Results go to
``benchmarks/results/`` like those of :mod:`benchmarks.run`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from benchmarks import run as bench
from benchmarks.plan import METHODS, PEERS, TORCHDR_PYTHON, available

SRC = Path(__file__).resolve().parent.parent / "src"


def _use_source_tree() -> None:
    """Make ``import torchdr_sc`` work here and in the workers without installing it."""
    if available("torchdr_sc") or not (SRC / "torchdr_sc").is_dir():
        return
    sys.path.insert(0, str(SRC))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p
    )


def parse_args(argv: list[str] | None = None) -> list[str]:
    """Translate this script's options into :mod:`benchmarks.run` options.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    list of str
        Arguments for :func:`benchmarks.run.main`.
    """
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000], help="synthetic sizes")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["umap"])
    p.add_argument("--backends", nargs="+", default=["auto"], help="our kNN backends")
    p.add_argument(
        "--peers", nargs="*", choices=(*PEERS, "none"), default=["umap-learn", "torchdr"]
    )
    p.add_argument("--budget", type=float, default=1200.0, help="seconds per run")
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--no-anndata", action="store_true", help="skip tdr.tl.<method> on AnnData")
    p.add_argument("--also-cpu", action="store_true", help="also run ours on the CPU")
    p.add_argument("--tag", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    out = [
        "--datasets",
        "synthetic",
        "--sizes",
        *map(str, a.n),
        "--methods",
        *a.methods,
        "--backends",
        *a.backends,
        "--peers",
        *(a.peers or ["none"]),
        "--budget",
        str(a.budget),
        "--devices",
        "cuda",
        *(["cpu"] if a.also_cpu else []),
        "--tag",
        a.tag or f"{dt.datetime.now():%Y%m%d-%H%M%S}-gpu",
    ]
    if a.max_iter is not None:
        out += ["--max-iter", str(a.max_iter)]
    if a.out:
        out += ["--out", a.out]
    if not a.no_anndata:
        if available("anndata"):
            out.append("--tl")
        else:
            print("anndata is not installed here: tdr.tl.umap on an AnnData is skipped.")
    if "torchdr" in a.peers and not TORCHDR_PYTHON.exists():
        print("no TorchDR venv here (benchmarks/setup_torchdr_venv.sh): TorchDR is skipped.")
    if "umap-learn" in a.peers and not available("umap"):
        print("umap-learn is not installed here: it is skipped.")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the GPU benchmark.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    int
        Exit status.
    """
    _use_source_tree()
    args = parse_args(argv)
    if not bench.cuda_available():
        print("warning: no CUDA device visible; the cuda runs will be reported as unavailable.")
    return bench.main(args)


if __name__ == "__main__":
    sys.exit(main())
