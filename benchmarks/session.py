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
from benchmarks.seeds import cold_caches, summarize_fits


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


def eval_context(ds: dsets.Dataset, size: int, seed: int, device: str) -> metrics.EvalContext:
    """Everything the quality figures of ``ds`` need, computed (or read from the cache) once.

    Parameters
    ----------
    ds : Dataset
        The dataset.
    size : int
        Size of the accuracy / NP@15 sample.
    seed : int
        Seed of the samples.
    device : str
        Torch device for the exact neighbour search.

    Returns
    -------
    metrics.EvalContext
    """
    queries, neighbors = reference_neighbors(ds, size, seed, device)
    X, labels = ds.load()
    annotations, exclude = None, ()
    if ds.obs_path:
        with np.load(ds.obs_path) as z:
            annotations = {k: z[k] for k in z.files}
        names = list(annotations["label_names"])
        exclude = tuple(names.index(c) for c in ("doublet",) if c in names)
    return metrics.EvalContext(
        data=np.asarray(X),
        labels=np.asarray(labels),
        queries=queries,
        neighbors=neighbors,
        trust_queries=metrics.sample_indices(ds.n, metrics.TRUST_SAMPLE, seed + 1),
        exclude=exclude,
        annotations=annotations,
    )


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
                "seeds": list(args.seeds),
                "large_n": args.large_n,
                "large_seeds": args.large_seeds,
                "slow_fit_s": args.slow_fit,
                "tool_budget_s": args.tool_budget,
                "cold": args.cold,
                "max_iter": args.max_iter,
                "eval_sample": args.eval_sample,
                "devices": self.devices,
                **HYPERPARAMS,
            },
        }
        self.jsonl.write_text(json.dumps(self.meta) + "\n")

    def _spec(self, cfg: Config, ds: dsets.Dataset, run_id: str, seeds: list[int]) -> dict:
        return {
            "tool": cfg.tool,
            "method": cfg.method,
            "backend": cfg.backend,
            "device": cfg.device,
            "x_path": ds.x_path,
            "out_path": str(self.run_dir / f"{run_id}.seed{{seed}}.emb.npy"),
            "seeds": seeds,
            "max_iter": self.args.max_iter,
            **HYPERPARAMS,
            "warmup": self.args.warmup,
            "slow_fit": self.args.slow_fit,
            "min_seeds": self.args.large_seeds,
        }

    def seeds_for(self, n: int, estimate: float | None = None) -> list[int]:
        """The seeds fitted at size ``n``: fewer from ``--large-n`` on, or where one fit is
        estimated to take more than ``--slow-fit`` seconds.

        Parameters
        ----------
        n : int
            Dataset size.
        estimate : float, optional
            Estimated seconds of one fit (from the smaller sizes).

        Returns
        -------
        list of int
        """
        seeds = list(self.args.seeds)
        large = self.args.large_n is not None and n >= self.args.large_n
        slow = estimate is not None and self.args.slow_fit is not None
        if large or (slow and estimate > self.args.slow_fit):
            return seeds[: self.args.large_seeds]
        return seeds

    def _seconds(self, cfg: Config) -> float:
        """Wall-time budget of one fit: ``--budget`` for ours, ``--peer-budget`` for the peers,
        ``--tool-budget TOOL=S`` for a given tool."""
        if cfg.tool in self.args.tool_budget:
            return self.args.tool_budget[cfg.tool]
        return self.args.budget if cfg.tool.startswith("ours") else self.args.peer_budget

    def _precheck(self, cfg: Config, ds: dsets.Dataset) -> str | None:
        if cfg.device == "cuda" and not self.cuda:
            return "unavailable: no CUDA device"
        if cfg.tool == "torchdr" and not self.torchdr_ok:
            return "unavailable: no TorchDR venv (bash benchmarks/setup_torchdr_venv.sh)"
        skip, _ = self.budget.check(f"{ds.family}:{cfg.label}", ds.n, self._seconds(cfg))
        return skip

    def run_one(self, cfg: Config, ds: dsets.Dataset, ctx: metrics.EvalContext) -> dict:
        """Run one config on one dataset (one fit per seed, in one worker), score it, return its
        record.

        Parameters
        ----------
        cfg : Config
            What to run.
        ds : Dataset
            On what.
        ctx : metrics.EvalContext
            The dataset's evaluation context.

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
        spec = self._spec(cfg, ds, run_id, self.seeds_for(ds.n, estimate))
        timeout = self._seconds(cfg) * len(spec["seeds"])
        with cold_caches(self.run_dir / f"{run_id}.caches", self.args.cold) as env:
            out = launch(
                spec,
                self.run_dir,
                run_id,
                python=python,
                timeout=timeout,
                fit_timeout=self._seconds(cfg),
                env=env,
            )
        rec.update(process_s=out.wall_s, returncode=out.returncode)
        res = out.result or {}
        if res.get("status") != "unavailable":
            rec["peak_rss_mb"] = out.peak_rss_mb
        limit = f"no fit within {self._seconds(cfg):.0f} s" if out.stalled else f"{timeout:.0f} s"
        if out.timed_out and not res.get("fits"):
            rec.update(status="skipped (budget)", reason=f"skipped (budget): killed ({limit})")
        elif res.get("status") in ("ok", "partial") and res.get("fits"):
            if res["status"] == "partial":
                done = len(res["fits"])
                rec["reason"] = (
                    f"killed after {timeout:.0f} s: {done} of {len(spec['seeds'])} seeds"
                )
            rec.update(
                status="ok", warmup_s=res.get("warmup_s"), rss_data_mb=res.get("rss_data_mb")
            )
            rec["peak_gpu_mb"] = res.get("peak_gpu_mb")
            for fit in res["fits"]:
                path = self.run_dir / f"{run_id}.seed{fit['seed']}.emb.npy"
                fit.update(metrics.evaluate(np.load(path), ctx))
                if not self.args.keep_embeddings:
                    path.unlink(missing_ok=True)
            rec.update(summarize_fits(res["fits"]))
        elif res.get("status") == "unavailable":
            rec.update(status="unavailable", reason=f"unavailable: {res.get('error')}")
        else:
            why = res.get("error") or (out.log_tail.splitlines() or ["no output"])[-1]
            if out.returncode == -9:
                why = "killed by SIGKILL (out of memory?)"
            rec.update(status="failed", reason=f"failed: {why}", log_tail=out.log_tail)
        # The budget is per fit: the slowest (cold) fit plus the process's own overhead.
        per_fit, wall = out.wall_s, out.wall_s
        if rec.get("total_fit_s") is not None:
            per_fit = rec["cold_s"]
            wall = out.wall_s - rec["total_fit_s"] + per_fit
        # After an out-of-memory kill, larger sizes of the same method are skipped.
        status = "skipped (memory)" if out.returncode == -9 and not out.timed_out else rec["status"]
        self.budget.record(key, ds.n, per_fit, wall, out.peak_rss_mb, status)
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
            f"[{rec['dataset']}] {rec['label']}: {cells['status']} | cold {cells['cold fit (s)']}"
            f" s, warm {cells['warm fit (s)']} s | RSS {cells['peak RSS (GB)']} GB"
            f" | acc {cells['10-NN acc.']} | NP@15 {cells['NP@15']} | trust {cells['trust@15']}"
            f" | centroid {cells['centroid ρ']} | pseudotime {cells['pseudotime ρ']}"
            f" | radius r {cells['radius r']}",
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
        sweep = report.sweep_plots(self.jsonl, self.records)
        md.write_text(
            report.markdown(self.meta, self.records, png.name if plotted else None, sweep)
        )
        exps = report.scaling_exponents(self.records)
        if exps:
            lo, hi = report.SCALING_RANGE
            print(f"\nscaling exponent (slope of log time vs log n, {lo:,} <= n <= {hi:,}):")
            for label, (slope, k) in exps.items():
                shown = "n/a (fewer than 2 sizes)" if slope is None else f"{slope:.2f}"
                print(f"  {label}: {shown} [{k} sizes]")
        print(f"\nwrote {self.jsonl}\nwrote {md}" + (f"\nwrote {png}" if plotted else ""))
        return md
