"""Turn benchmark records (one dict per run) into a markdown table, a plot and scaling exponents."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks import metrics

SCALING_RANGE = (50_000, 1_000_000)
#: Families with a size sweep (their fit times make the scaling exponents and the time plot).
SIZED = ("synthetic", "atlas")
COLUMNS = (
    "method",
    "status",
    "kNN (s)",
    "affinity (s)",
    "optimise (s)",
    "cold fit (s)",
    "warm fit (s)",
    "epochs",
    "ms / epoch",
    "peak RSS (GB)",
    "peak GPU (GB)",
    "10-NN acc.",
    "NP@15",
    "trust@15",
    "centroid ρ",
    "pseudotime ρ",
    "radius r",
)
#: Record key of each quality column.
QUALITY_COLUMNS = {
    "10-NN acc.": "knn_acc",
    "NP@15": "np15",
    "trust@15": "trust15",
    "centroid ρ": "centroid_rho",
    "pseudotime ρ": "pseudotime_rho",
    "radius r": "radius_r",
}


def _num(value, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


def quality_cell(rec: dict, key: str) -> str:
    """``mean ± sd`` of a quality figure over the run's seeds (``mean`` with one seed).

    Parameters
    ----------
    rec : dict
        A run record.
    key : str
        The figure's record key, e.g. ``'knn_acc'``.

    Returns
    -------
    str
    """
    mean, sd = rec.get(key), rec.get(f"{key}_sd")
    if sd is None:
        return _num(mean, "{:.3f}")
    return f"{mean:.3f} ± {sd:.3f}"


def fit_times(rec: dict) -> tuple[float | None, float | None]:
    """``(cold, warm)`` fit seconds of a record; records from before several seeds per run
    (one fit after a warm-up) count as warm only.

    Parameters
    ----------
    rec : dict
        A run record.

    Returns
    -------
    tuple
    """
    if "cold_s" in rec:
        return rec.get("cold_s"), rec.get("warm_s")
    return None, rec.get("fit_s")


def row_cells(rec: dict) -> list[str]:
    """Table cells of one run record.

    Parameters
    ----------
    rec : dict
        A run record.

    Returns
    -------
    list of str
        One cell per entry of :data:`COLUMNS`.
    """
    status = rec["status"] if rec["status"] == "ok" else rec.get("reason") or rec["status"]
    status = status.replace("|", "/").replace("\n", " ")[:90]
    knn = _num(rec.get("knn_s"))
    if rec.get("knn_s") is None and rec.get("knn_affinity_s") is not None:
        knn = _num(rec["knn_affinity_s"]) + " †"
    gb = "{:.2f}"
    cold, warm = fit_times(rec)
    return [
        rec["label"],
        status,
        knn,
        _num(rec.get("affinity_s")),
        _num(rec.get("optimize_s")),
        _num(cold),
        _num(warm),
        _num(rec.get("n_iter"), "{:d}"),
        _num(rec.get("epoch_ms"), "{:.1f}"),
        _num(None if rec.get("peak_rss_mb") is None else rec["peak_rss_mb"] / 1024, gb),
        _num(None if rec.get("peak_gpu_mb") is None else rec["peak_gpu_mb"] / 1024, gb),
        *(quality_cell(rec, key) for key in QUALITY_COLUMNS.values()),
    ]


def scaling_exponents(records: list[dict], lo_hi: tuple[int, int] = SCALING_RANGE) -> dict:
    """Slope of log(fit time) against log(n) per method, on the swept sizes in ``lo_hi``.

    Parameters
    ----------
    records : list of dict
        Run records.
    lo_hi : tuple of int
        Inclusive range of n used for the fit.

    Returns
    -------
    dict
        ``{label: (slope or None, number of sizes used)}``; None with fewer than two sizes.
    """
    points: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        if rec.get("family") not in SIZED or rec["status"] != "ok" or not rec.get("fit_s"):
            continue
        if lo_hi[0] <= rec["n"] <= lo_hi[1]:
            points.setdefault(rec["label"], []).append((rec["n"], rec["fit_s"]))
    labels = {rec["label"]: None for rec in records if rec.get("family") in SIZED}
    out = {}
    for label in labels:
        pts = points.get(label, [])
        if len({p[0] for p in pts}) < 2:
            out[label] = (None, len(pts))
            continue
        x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        out[label] = (float(np.polyfit(x, y, 1)[0]), len(pts))
    return out


def plot_time_vs_n(records: list[dict], path: Path) -> bool:
    """Log-log plot of fit time against n per method (swept data), saved as PNG.

    Parameters
    ----------
    records : list of dict
        Run records.
    path : pathlib.Path
        Where the PNG goes.

    Returns
    -------
    bool
        Whether a plot was written (it needs matplotlib and at least one successful run).
    """
    series: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        if rec.get("family") in SIZED and rec["status"] == "ok" and rec.get("fit_s"):
            series.setdefault(rec["label"], []).append((rec["n"], rec["fit_s"]))
    if not series:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label, pts in sorted(series.items()):
        pts.sort()
        style = "-o" if label.startswith("torchdr-sc") else "--s"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, ms=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    families = sorted({rec["family"] for rec in records if rec.get("family") in SIZED})
    ax.set_xlabel(f"number of points n ({', '.join(families)}, 50 dimensions)")
    ax.set_ylabel("fit wall time (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _machine_lines(meta: dict) -> list[str]:
    m = meta["machine"]
    gpus = ", ".join(m["gpus"]) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        f"- command: `{m['command']}`",
        f"- date: {meta['date']}; source revision: {m.get('git')}",
        f"- machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, "
        f"{m['memory_gb']} GB RAM; GPU: {gpus}; {m['os']}",
        f"- versions: {versions}",
    ]
    if m.get("env"):
        lines.append("- environment: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
    s = meta["settings"]
    peer_budget = s.get("peer_budget_s") or s["budget_s"]
    unit = "fit" if "seeds" in s else "run"
    budget = f"budget {s['budget_s']:.0f} s per {unit}"
    if peer_budget != s["budget_s"]:
        budget += f" of ours, {peer_budget:.0f} s per peer {unit}"
    if s.get("tool_budget_s"):
        budget += " (" + ", ".join(f"{k} {v:.0f} s" for k, v in s["tool_budget_s"].items()) + ")"
    seeds = f"seed {s['seed']}"
    if len(s.get("seeds") or []) > 1:
        seeds = f"seeds {', '.join(map(str, s['seeds']))} in one process per run"
        fewer = []
        if s.get("large_n"):
            fewer.append(f"from n = {s['large_n']:,} on")
        if s.get("slow_fit_s"):
            fewer.append(f"where a fit takes over {s['slow_fit_s']:.0f} s")
        if fewer:
            seeds += f" (the first {s['large_seeds']} {' and '.join(fewer)})"
        seeds += "; first fit cold (empty cache folders)" if s.get("cold") else "; no empty caches"
    lines.append(
        f"- settings: {budget}, warm-up {s['warmup']}, {seeds}, "
        f"max_iter {s['max_iter'] or 'each tool default'}, "
        f"quality on {s['eval_sample']} sampled points for larger n "
        f"(trustworthiness on {metrics.TRUST_SAMPLE})"
    )
    return lines


def markdown(
    meta: dict, records: list[dict], plot_name: str | None = None, sweep_plots: tuple = ()
) -> str:
    """The markdown report: setup, the size sweep, one table per dataset, scaling exponents.

    Parameters
    ----------
    meta : dict
        ``{'date', 'machine', 'settings'}``.
    records : list of dict
        Run records.
    plot_name : str, optional
        File name of the time-vs-n plot, linked from the report.
    sweep_plots : tuple of str
        File names of the sweep's time and quality figures (when written).

    Returns
    -------
    str
    """
    from benchmarks import sweep_report

    out = ["# torchdr-sc benchmark", "", *_machine_lines(meta), ""]
    swept = sweep_report.sweep_records(records)
    if len({r["n"] for r in swept}) >= 2:
        out += ["## Size sweep: the simulated atlas", ""]
        found = sweep_report.shortfalls(swept)
        out += [
            "### Where torchdr-sc is behind",
            "",
            "Slower than the fastest peer of its group (cold or warm), or more than "
            f"{sweep_report.QUALITY_MARGIN} below the best peer's mean in a quality figure:",
            "",
            *([f"- {line}" for line in found] or ["- nowhere"]),
            "",
            *sweep_report.size_tables(swept),
            "",
            *[f"![{name}]({name})" for name in sweep_plots],
            "",
        ]
    datasets: dict[str, list[dict]] = {}
    for rec in records:
        datasets.setdefault(rec["dataset"], []).append(rec)
    for name, recs in datasets.items():
        out += [f"## {name} (n = {recs[0]['n']:,}, d = {recs[0]['d']})", ""]
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        out += ["| " + " | ".join(row_cells(r)) + " |" for r in recs]
        out.append("")
    out += [
        "† kNN and affinity measured together (the tool computes them in one call).",
        "Fit total is the wall time of the fit alone; peak RSS is that of the run's own process"
        " (interpreter, imports and data included).",
        "",
    ]
    exps = scaling_exponents(records)
    if exps:
        lo, hi = SCALING_RANGE
        out += [f"## Scaling exponent (slope of log time vs log n, {lo:,} ≤ n ≤ {hi:,})", ""]
        if any(v[0] is not None for v in exps.values()):
            out += ["| method | exponent | sizes |", "|---|---|---|"]
            out += [f"| {k} | {_num(v[0])} | {v[1]} |" for k, v in exps.items()]
        else:
            out.append("Fewer than two successful synthetic sizes in that range: no exponent.")
        out.append("")
    if plot_name:
        out += [f"![fit time against n]({plot_name})", ""]
    return "\n".join(out)


def rebuild(jsonl: Path) -> Path:
    """Write ``TAG.md`` and ``TAG-time-vs-n.png`` beside ``TAG.jsonl`` (e.g. for a stopped run).

    Parameters
    ----------
    jsonl : pathlib.Path
        The raw results of one run.

    Returns
    -------
    pathlib.Path
        The markdown file.
    """
    import json

    lines = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    meta = next(rec for rec in lines if rec.get("type") == "meta")
    records = [rec for rec in lines if rec.get("type") == "run"]
    png = jsonl.with_name(f"{jsonl.stem}-time-vs-n.png")
    plotted = plot_time_vs_n(records, png)
    md = jsonl.with_suffix(".md")
    md.write_text(
        markdown(meta, records, png.name if plotted else None, sweep_plots(jsonl, records))
    )
    return md


def sweep_plots(jsonl: Path, records: list[dict]) -> tuple[str, ...]:
    """Write the sweep's time and quality figures beside ``jsonl``; their file names.

    Parameters
    ----------
    jsonl : pathlib.Path
        The raw results (``TAG.jsonl``); the figures are ``TAG-sweep-time.png`` and
        ``TAG-sweep-quality.png``.
    records : list of dict
        Run records.

    Returns
    -------
    tuple of str
        The names of the figures written (none when there is no sweep).
    """
    from benchmarks import sweep_report

    swept = sweep_report.sweep_records(records)
    if len({r["n"] for r in swept}) < 2:
        return ()
    names = []
    for kind, plot in (("time", sweep_report.plot_time), ("quality", sweep_report.plot_quality)):
        png = jsonl.with_name(f"{jsonl.stem}-sweep-{kind}.png")
        if plot(swept, png):
            names.append(png.name)
    return tuple(names)


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(rebuild(Path(arg)))
