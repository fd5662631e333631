"""Turn benchmark records (one dict per run) into a markdown table, a plot and scaling exponents."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SCALING_RANGE = (50_000, 1_000_000)
COLUMNS = (
    "method",
    "status",
    "kNN (s)",
    "affinity (s)",
    "optimise (s)",
    "fit total (s)",
    "epochs",
    "ms / epoch",
    "peak RSS (GB)",
    "peak GPU (GB)",
    "10-NN acc.",
    "NP@15",
)


def _num(value, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


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
    return [
        rec["label"],
        status,
        knn,
        _num(rec.get("affinity_s")),
        _num(rec.get("optimize_s")),
        _num(rec.get("fit_s")),
        _num(rec.get("n_iter"), "{:d}"),
        _num(rec.get("epoch_ms"), "{:.1f}"),
        _num(None if rec.get("peak_rss_mb") is None else rec["peak_rss_mb"] / 1024, gb),
        _num(None if rec.get("peak_gpu_mb") is None else rec["peak_gpu_mb"] / 1024, gb),
        _num(rec.get("knn_acc"), "{:.3f}"),
        _num(rec.get("np15"), "{:.3f}"),
    ]


def scaling_exponents(records: list[dict], lo_hi: tuple[int, int] = SCALING_RANGE) -> dict:
    """Slope of log(fit time) against log(n) per method, on the synthetic sizes in ``lo_hi``.

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
        if rec.get("family") != "synthetic" or rec["status"] != "ok" or not rec.get("fit_s"):
            continue
        if lo_hi[0] <= rec["n"] <= lo_hi[1]:
            points.setdefault(rec["label"], []).append((rec["n"], rec["fit_s"]))
    labels = {rec["label"]: None for rec in records if rec.get("family") == "synthetic"}
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
    """Log-log plot of fit time against n per method (synthetic data), saved as PNG.

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
        if rec.get("family") == "synthetic" and rec["status"] == "ok" and rec.get("fit_s"):
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
    ax.set_xlabel("number of points n (synthetic, 50 dimensions)")
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
    budget = f"budget {s['budget_s']:.0f} s per run"
    if peer_budget != s["budget_s"]:
        budget = f"budget {s['budget_s']:.0f} s per run of ours, {peer_budget:.0f} s per peer run"
    lines.append(
        f"- settings: {budget}, warm-up {s['warmup']}, "
        f"seed {s['seed']}, max_iter {s['max_iter'] or 'each tool default'}, "
        f"quality on {s['eval_sample']} sampled points for larger n"
    )
    return lines


def markdown(meta: dict, records: list[dict], plot_name: str | None = None) -> str:
    """The markdown report: setup, one table per dataset, scaling exponents.

    Parameters
    ----------
    meta : dict
        ``{'date', 'machine', 'settings'}``.
    records : list of dict
        Run records.
    plot_name : str, optional
        File name of the time-vs-n plot, linked from the report.

    Returns
    -------
    str
    """
    out = ["# torchdr-sc benchmark", "", *_machine_lines(meta), ""]
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
    md.write_text(markdown(meta, records, png.name if plotted else None))
    return md


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(rebuild(Path(arg)))
