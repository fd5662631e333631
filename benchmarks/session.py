"""One benchmark invocation: runs each configuration in a worker, scores it, writes the results."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks import datasets as dsets
from benchmarks import metrics, report
from benchmarks.launch import launch
from benchmarks.machine import describe
from benchmarks.plan import HYPERPARAMS, Budget, Config


def cuda_available() -> bool:
    """Whether torch sees a CUDA device.

    Returns
    -------
    bool
    """
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def venv_versions(python: str, packages: tuple[str, ...], venv: str) -> dict:
    """Versions of ``packages`` inside another environment.

    Parameters
    ----------
    python : str
        That environment's interpreter.
    packages : tuple of str
        Distribution names.
    venv : str
        Label appended to each name, e.g. ``'torchdr venv'``.

    Returns
    -------
    dict
        Empty when the environment is missing or broken.
    """
    code = "import importlib.metadata as m, sys; print(*(m.version(p) for p in sys.argv[1:]))"
    try:
        out = subprocess.run(
            [python, "-c", code, *packages], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0 or len(out.stdout.split()) != len(packages):
        return {}
    return {f"{p} ({venv})": v for p, v in zip(packages, out.stdout.split(), strict=True)}


def reference_neighbors(ds: dsets.Dataset, size: int, seed: int, device: str):
    """Evaluation sample and its exact input-space neighbours, cached next to the data.

    Parameters
    ----------
    ds : Dataset
        The dataset.
    size : int
        Sample size.
    seed : int
        Seed of the sample.
    device : str
        Torch device for the exact search.

    Returns
    -------
    queries : numpy.ndarray of shape (m,)
    neighbors : numpy.ndarray of shape (m, 15)
    """
    path = Path(ds.x_path).with_name(
        Path(ds.x_path).name.replace(".X.npy", f".nn{metrics.NP_NEIGHBORS}-s{size}-seed{seed}.npz")
    )
    if path.exists():
        with np.load(path) as z:
            return z["queries"], z["neighbors"]
    queries = metrics.sample_indices(ds.n, size, seed)
    X, _ = ds.load()
    neighbors = metrics.exact_knn(X, queries, metrics.NP_NEIGHBORS, device=device)
    np.savez(path, queries=queries, neighbors=neighbors)
    return queries, neighbors


class Session:
    """State of one benchmark invocation: settings, budget, records, output files.

    Creating it writes the first line of the JSON lines file (machine, versions, settings).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :mod:`benchmarks.run`.
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cuda = cuda_available()
        self.devices = args.devices or (["cpu", "cuda"] if self.cuda else ["cpu"])
        self.eval_device = "cuda" if self.cuda else "cpu"
        extra = {}
        if "torchdr" in args.peers:
            extra |= venv_versions(args.torchdr_python, ("torchdr", "torch", "faiss-cpu"), "venv")
        if "scanpy" in args.peers and args.scanpy_python != sys.executable:
            packages = ("scanpy", "pynndescent", "scipy", "umap-learn")
            extra |= venv_versions(args.scanpy_python, packages, "scanpy venv")
        machine = describe(extra)
        self.budget = Budget(
            seconds=args.budget, memory_mb=0.9 * 1024 * (machine.get("memory_gb") or 16.0)
        )
        self.records: list[dict] = []
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.tag = args.tag or (stamp + ("-quick" if args.quick else ""))
        args.out.mkdir(parents=True, exist_ok=True)
        self.jsonl = args.out / f"{self.tag}.jsonl"
        self.run_dir = dsets.CACHE_DIR / "runs" / self.tag
        self.torchdr_ok = "torchdr" not in args.peers or Path(args.torchdr_python).exists()
        self.meta = {
            "type": "meta",
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine,
            "settings": {
                "budget_s": args.budget,
                "peer_budget_s": args.peer_budget,
                "warmup": args.warmup,
                "seed": args.seed,
                "max_iter": args.max_iter,
                "eval_sample": args.eval_sample,
                "devices": self.devices,
                **HYPERPARAMS,
            },
        }
        self.jsonl.write_text(json.dumps(self.meta) + "\n")

    def _spec(self, cfg: Config, ds: dsets.Dataset, run_id: str) -> dict:
        return {
            "tool": cfg.tool,
            "method": cfg.method,
            "backend": cfg.backend,
            "device": cfg.device,
            "x_path": ds.x_path,
            "out_path": str(self.run_dir / f"{run_id}.emb.npy"),
            "seed": self.args.seed,
            "max_iter": self.args.max_iter,
            **HYPERPARAMS,
            "warmup": self.args.warmup,
        }

    def _seconds(self, cfg: Config) -> float:
        """Wall-time budget of a run: ``--budget`` for ours, ``--peer-budget`` for the peers."""
        return self.args.budget if cfg.tool.startswith("ours") else self.args.peer_budget

    def _precheck(self, cfg: Config, ds: dsets.Dataset) -> str | None:
        if cfg.device == "cuda" and not self.cuda:
            return "unavailable: no CUDA device"
        if cfg.tool == "torchdr" and not self.torchdr_ok:
            return "unavailable: no TorchDR venv (bash benchmarks/setup_torchdr_venv.sh)"
        skip, _ = self.budget.check(f"{ds.family}:{cfg.label}", ds.n, self._seconds(cfg))
        return skip

    def run_one(self, cfg: Config, ds: dsets.Dataset, labels, queries, neighbors) -> dict:
        """Run one config on one dataset, score it and return its record.

        Parameters
        ----------
        cfg : Config
            What to run.
        ds : Dataset
            On what.
        labels, queries, neighbors : numpy.ndarray
            Labels of all points, evaluation sample, its exact input-space neighbours.

        Returns
        -------
        dict
        """
        rec = {
            "type": "run",
            "dataset": ds.name,
            "family": ds.family,
            "n": ds.n,
            "d": ds.d,
            "tool": cfg.tool,
            "method": cfg.method,
            "backend": cfg.backend,
            "device": cfg.device,
            "label": cfg.label,
        }
        key = f"{ds.family}:{cfg.label}"
        _, estimate = self.budget.check(key, ds.n, self._seconds(cfg))
        rec["estimated_s"] = estimate
        reason = self._precheck(cfg, ds)
        if reason:
            rec.update(status=reason.split(":")[0], reason=reason)
            self.budget.record(key, ds.n, 0.0, 0.0, 0.0, rec["status"])
            return rec
        run_id = f"{ds.name}-{cfg.tool}-{cfg.method}-{cfg.backend}-{cfg.device}"
        python = {"torchdr": self.args.torchdr_python, "scanpy": self.args.scanpy_python}.get(
            cfg.tool, sys.executable
        )
        out = launch(
            self._spec(cfg, ds, run_id),
            self.run_dir,
            run_id,
            python=python,
            timeout=self._seconds(cfg),
        )
        rec.update(process_s=out.wall_s, returncode=out.returncode)
        res = out.result or {}
        if res.get("status") != "unavailable":
            rec["peak_rss_mb"] = out.peak_rss_mb
        if out.timed_out:
            rec.update(
                status="skipped (budget)",
                reason=f"skipped (budget): killed after {self._seconds(cfg):.0f} s",
            )
        elif res.get("status") == "ok":
            rec.update(_timing_fields(res), status="ok")
            emb = np.load(self.run_dir / f"{run_id}.emb.npy")
            rec.update(metrics.evaluate(emb, labels, neighbors, queries, device=self.eval_device))
            if not self.args.keep_embeddings:
                (self.run_dir / f"{run_id}.emb.npy").unlink(missing_ok=True)
        elif res.get("status") == "unavailable":
            rec.update(status="unavailable", reason=f"unavailable: {res.get('error')}")
        else:
            why = res.get("error") or (out.log_tail.splitlines() or ["no output"])[-1]
            if out.returncode == -9:
                why = "killed by SIGKILL (out of memory?)"
            rec.update(status="failed", reason=f"failed: {why}", log_tail=out.log_tail)
        fit_s = rec.get("fit_s") or out.wall_s
        # After an out-of-memory kill, larger sizes of the same method are skipped.
        status = "skipped (memory)" if out.returncode == -9 and not out.timed_out else rec["status"]
        self.budget.record(key, ds.n, fit_s, out.wall_s, out.peak_rss_mb, status)
        return rec

    def add(self, rec: dict) -> None:
        """Keep a record, append it to the JSON lines file and print a one-line summary.

        Parameters
        ----------
        rec : dict
            A run record.
        """
        self.records.append(rec)
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")
        cells = dict(zip(report.COLUMNS, report.row_cells(rec), strict=True))
        print(
            f"[{rec['dataset']}] {rec['label']}: {cells['status']} | fit {cells['fit total (s)']}"
            f" s | RSS {cells['peak RSS (GB)']} GB | acc {cells['10-NN acc.']}"
            f" | NP@15 {cells['NP@15']}",
            flush=True,
        )

    def finish(self) -> Path:
        """Write the markdown report and the plot; print the scaling exponents.

        Returns
        -------
        pathlib.Path
            The markdown file.
        """
        png = self.args.out / f"{self.tag}-time-vs-n.png"
        plotted = report.plot_time_vs_n(self.records, png)
        md = self.args.out / f"{self.tag}.md"
        md.write_text(report.markdown(self.meta, self.records, png.name if plotted else None))
        exps = report.scaling_exponents(self.records)
        if exps:
            lo, hi = report.SCALING_RANGE
            print(f"\nscaling exponent (slope of log time vs log n, {lo:,} <= n <= {hi:,}):")
            for label, (slope, k) in exps.items():
                shown = "n/a (fewer than 2 sizes)" if slope is None else f"{slope:.2f}"
                print(f"  {label}: {shown} [{k} sizes]")
        print(f"\nwrote {self.jsonl}\nwrote {md}" + (f"\nwrote {png}" if plotted else ""))
        return md


def _timing_fields(res: dict) -> dict:
    t = res.get("timings") or {}
    n_iter, opt = res.get("n_iter"), t.get("optimize")
    return {
        "fit_s": res.get("fit_s"),
        "warmup_s": res.get("warmup_s"),
        "knn_s": t.get("knn"),
        "affinity_s": t.get("affinity"),
        "knn_affinity_s": t.get("knn_affinity"),
        "optimize_s": opt,
        "n_iter": n_iter,
        "epoch_ms": 1000.0 * opt / n_iter if opt and n_iter else None,
        "rss_data_mb": res.get("rss_data_mb"),
        "peak_gpu_mb": res.get("peak_gpu_mb"),
        "notes": res.get("notes"),
    }
