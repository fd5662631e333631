"""``torchdr-sc embed`` on the simulated atlas as a user runs it: time and memory by stage.

Writes the latent-level atlas of ``n`` cells (:mod:`benchmarks.atlas_latent`, cached as
``.npy`` by :mod:`benchmarks.datasets`) to an ``.h5ad`` file once (``obsm['X_pca']``: 50
PCs, float32; ``obs['cell_type']``), then runs the command line on it in a child process
(``--use-rep X_pca``: the PCs are read into memory, as an atlas's representation is)::

    python -m benchmarks.embed_run --n 10000000 --method umap --workdir /data/tdr \\
        --tag cpu-2core-10m

While the job runs, the resident memory (``VmRSS``) of every process of the job (the
launcher and, with ``--nproc`` > 1, torchrun and its workers) is sampled every 0.2 s, and
the stage lines of ``--progress`` (``'UMAP: kNN search ...'`` / ``'... done in ...'``) are
timestamped as they arrive. The record holds, per stage, its wall time and the peak memory
of the job's processes during it (the largest single process, i.e. one rank, and the sum),
the whole job's wall time and peak, and the quality of the embedding on a 10,000-cell
sample (:func:`benchmarks.metrics.evaluate`: 10-NN accuracy, NP@15, ...). Records are
appended to ``benchmarks/results/<tag>.jsonl``. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
POLL_S = 0.2


def write_h5ad(n: int, seed: int, path: Path) -> None:
    """The atlas of ``n`` cells as an ``.h5ad``, once: ``obsm['X_pca']`` (its 50 PCs, as an
    atlas stores them next to its counts) and ``obs['cell_type']``, no ``X``."""
    if path.exists():
        return
    import anndata as ad
    import pandas as pd

    from benchmarks.datasets import prepare

    ds = prepare("atlas", n, seed)
    X, labels = ds.load()
    with np.load(ds.obs_path) as z:
        names = list(z["label_names"])
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(np.asarray(labels), categories=names)},
        index=pd.RangeIndex(n).astype(str),
    )
    tmp = path.with_suffix(".tmp.h5ad")
    pcs = {"X_pca": np.asarray(X, dtype=np.float32)}
    ad.AnnData(obs=obs, obsm=pcs).write_h5ad(tmp)
    tmp.replace(path)


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (``/proc/<pid>/task/<tid>/children``)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def rss_of(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples ``(time, largest process RSS, total RSS)`` of a process tree until it ends."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.samples: list[tuple[float, int, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            sizes = [rss_of(pid) for pid in process_tree(self.root)]
            self.samples.append((time.perf_counter(), max(sizes, default=0), sum(sizes)))
            self.done.wait(POLL_S)

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> tuple[int, int]:
        """Largest single-process and total RSS sampled in ``[t0, t1]``."""
        window = [(one, total) for t, one, total in self.samples if t0 <= t <= t1]
        if not window:
            return 0, 0
        return max(w[0] for w in window), max(w[1] for w in window)


def stage_times(lines: list[tuple[float, str]], label: str) -> list[tuple[str, float, float]]:
    """``(stage, start, end)`` from the timestamped progress lines of ``label``."""
    prefix, opened, out = f"{label}: ", {}, []
    for t, line in lines:
        if not line.startswith(prefix):
            continue
        body = line[len(prefix) :]
        if " done in " in body:
            name = body.split(" done in ")[0]
            if name in opened:
                out.append((name, opened.pop(name), t))
        elif body.endswith("..."):
            opened[body[:-3].split(" (")[0]] = t
    return out


def run_job(cmd: list[str], log: Path) -> tuple[int, float, TreeSampler, list]:
    """Run ``cmd``; its exit status, wall time, memory samples and timestamped stderr lines."""
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    with log.open("w") as out:
        for raw in proc.stderr:  # type: ignore[union-attr]
            now = time.perf_counter()
            for line in raw.replace("\r", "\n").splitlines():
                if line.strip():
                    lines.append((now, line))
                    out.write(f"{now - t0:9.2f} {line}\n")
            out.flush()
    proc.wait()
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    return proc.returncode, wall, sampler, lines


def evaluate_output(out: Path, n: int, seed: int, key: str) -> dict[str, Any]:
    """Quality of ``obsm[key]`` of the output on the benchmarks' 10,000-cell sample."""
    import h5py

    from benchmarks import metrics, session
    from benchmarks.datasets import prepare

    with h5py.File(out, "r") as f:
        embedding = np.asarray(f["obsm"][key])
    ctx = session.eval_context(prepare("atlas", n, seed), metrics.SAMPLE_SIZE, seed, "cpu")
    return {
        k: (round(float(v), 4) if isinstance(v, float) else v)
        for k, v in metrics.evaluate(embedding, ctx).items()
    }


def machine() -> dict[str, Any]:
    """Cores, memory and versions of this machine."""
    import torch

    import torchdr_sc

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": len(os.sched_getaffinity(0)),
        "ram_gb": round(mem, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchdr_sc": torchdr_sc.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--method", default="umap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("extra", nargs="*", help="more embed options, after --")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"atlas-pcs-n{args.n}-seed{args.seed}.h5ad"
    t0 = time.perf_counter()
    write_h5ad(args.n, args.seed, data)
    prepare_s = time.perf_counter() - t0
    out = args.workdir / f"out-{args.method}-n{args.n}-p{args.nproc}.h5ad"
    cmd = [
        sys.executable,
        "-m",
        "torchdr_sc.cli",
        "embed",
        str(data),
        "--out",
        str(out),
        "--method",
        args.method,
        "--seed",
        str(args.seed),
        "--nproc",
        str(args.nproc),
        "--use-rep",
        "X_pca",
        "--progress",
        "--overwrite",
        *args.extra,
    ]
    log = args.workdir / f"{args.tag}-{args.method}-n{args.n}-p{args.nproc}.log"
    code, wall, sampler, lines = run_job(cmd, log)
    label = {"umap": "UMAP", "tsne": "TSNE", "infotsne": "InfoTSNE", "largevis": "LargeVis"}
    stages = []
    for name, s, e in stage_times(lines, label.get(args.method, args.method)):
        one, total = sampler.peak(s, e)
        stages.append(
            {
                "stage": name,
                "seconds": round(e - s, 2),
                "peak_rank_gb": round(one / 2**30, 3),
                "peak_total_gb": round(total / 2**30, 3),
            }
        )
    one, total = sampler.peak()
    record = {
        "tag": args.tag,
        "n": args.n,
        "method": args.method,
        "seed": args.seed,
        "nproc": args.nproc,
        "command": " ".join(cmd[1:]),
        "exit": code,
        "wall_s": round(wall, 1),
        "prepare_s": round(prepare_s, 1),
        "peak_rank_gb": round(one / 2**30, 3),
        "peak_total_gb": round(total / 2**30, 3),
        "stages": stages,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if code == 0 and not args.no_quality:
        record["quality"] = evaluate_output(out, args.n, args.seed, f"X_{args.method}")
    print(json.dumps(record, indent=1))
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"{args.tag}.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
