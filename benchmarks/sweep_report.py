"""The size sweep as a user reads it: tables by size, where torchdr-sc is behind, two figures.

Every figure of a sweep (the atlas family at several sizes, several seeds) is compared within a
*group*: our UMAP against the UMAP peers (umap-learn, scanpy, TorchDR), each of our t-SNE-family
methods against the t-SNE peers (openTSNE, scanpy's t-SNE) and TorchDR's method of the same name.
A *shortfall* is a (method, size) where ours is slower than the fastest peer of its group (cold
or warm), or more than :data:`QUALITY_MARGIN` below the best peer's mean in a quality figure.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import QUALITY_COLUMNS, _num, fit_times, quality_cell

QUALITY_MARGIN = 0.01
TSNE_FAMILY = ("tsne", "infotsne", "largevis")


def sweep_records(records: list[dict], family: str = "atlas") -> list[dict]:
    """The successful runs of a swept family.

    Parameters
    ----------
    records : list of dict
        Run records.
    family : str, default='atlas'
        The family.

    Returns
    -------
    list of dict
    """
    return [r for r in records if r.get("family") == family and r["status"] == "ok"]


def peers_of(rec: dict, records: list[dict]) -> list[dict]:
    """The peer runs a run of ours is compared with, at the same size.

    Parameters
    ----------
    rec : dict
        A run of ours.
    records : list of dict
        All runs of the sweep.

    Returns
    -------
    list of dict
    """
    same = [r for r in records if r["n"] == rec["n"] and not r["tool"].startswith("ours")]
    if rec["method"] in ("umap", "densmap", "pacmap"):  # the same method's reference tools
        return [r for r in same if r["method"] == rec["method"]]
    return [
        r
        for r in same
        if (r["method"] == "tsne" and r["tool"] != "torchdr")
        or (r["tool"] == "torchdr" and r["method"] == rec["method"])
    ]


def shortfalls(records: list[dict]) -> list[str]:
    """Every (method, size) where ours is behind its group's best peer, as sentences.

    Parameters
    ----------
    records : list of dict
        Successful runs of one swept family.

    Returns
    -------
    list of str
    """
    out = []
    ours = sorted((r for r in records if r["tool"] == "ours"), key=lambda r: (r["method"], r["n"]))
    for rec in ours:
        peers = peers_of(rec, records)
        if not peers:
            continue
        found = []
        for i, kind in enumerate(("cold", "warm")):
            mine = fit_times(rec)[i]
            timed = [(fit_times(p)[i], p["label"]) for p in peers if fit_times(p)[i]]
            if mine and timed:
                best, who = min(timed)
                if mine > best:
                    found.append(f"{kind} {mine:.1f} s vs {who} {best:.1f} s")
        for name, key in QUALITY_COLUMNS.items():
            scored = [(p[key], p["label"]) for p in peers if p.get(key) is not None]
            if rec.get(key) is None or not scored:
                continue
            best, who = max(scored)
            if rec[key] < best - QUALITY_MARGIN:
                found.append(f"{name} {rec[key]:.3f} vs {who} {best:.3f}")
        if found:
            out.append(f"{rec['label']} at n = {rec['n']:,}: " + "; ".join(found))
    return out


def _rows(records: list[dict]) -> tuple[list[int], list[str]]:
    sizes = sorted({r["n"] for r in records})
    labels = sorted(
        {r["label"] for r in records}, key=lambda s: (not s.startswith("torchdr-sc"), s)
    )
    return sizes, labels


def size_tables(records: list[dict]) -> list[str]:
    """Markdown tables with one column per size: times (warm / cold) and each quality figure.

    Parameters
    ----------
    records : list of dict
        Successful runs of one swept family.

    Returns
    -------
    list of str
        Markdown lines.
    """
    sizes, labels = _rows(records)
    by = {(r["label"], r["n"]): r for r in records}
    head = "| method | " + " | ".join(f"{n:,}" for n in sizes) + " |"
    rule = "|---|" + "---|" * len(sizes)
    out = ["### Fit time, warm / cold (s)", "", head, rule]
    for label in labels:
        cells = []
        for n in sizes:
            rec = by.get((label, n))
            cold, warm = fit_times(rec) if rec else (None, None)
            cells.append(f"{_num(warm)} / {_num(cold)}" if rec else "—")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, key in QUALITY_COLUMNS.items():
        if not any(r.get(key) is not None for r in records):
            continue  # a figure these runs did not record (e.g. older runs)
        out += ["", f"### {name} (mean ± sd over seeds)", "", head, rule]
        for label in labels:
            cells = [quality_cell(by[(label, n)], key) if (label, n) in by else "—" for n in sizes]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def _style(label: str) -> dict:
    return (
        {"linestyle": "-", "marker": "o"}
        if label.startswith("torchdr-sc")
        else {
            "linestyle": "--",
            "marker": "s",
        }
    )


def plot_time(records: list[dict], path: Path) -> bool:
    """Log-log fit time against n, one panel for UMAP and one for the t-SNE family.

    Warm fits are solid markers joined by lines, cold fits hollow markers on a dotted line of the
    same colour.

    Parameters
    ----------
    records : list of dict
        Successful runs of one swept family.
    path : pathlib.Path
        The PNG written.

    Returns
    -------
    bool
        Whether a figure was written.
    """
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    panels = (
        ("UMAP", lambda r: r["method"] == "umap"),
        ("t-SNE family", lambda r: r["method"] != "umap"),
    )
    for ax, (title, keep) in zip(axes, panels, strict=True):
        _, labels = _rows([r for r in records if keep(r)])
        for label in labels:
            pts = sorted((r["n"], *fit_times(r)) for r in records if r["label"] == label)
            warm = [(n, w) for n, _, w in pts if w]
            cold = [(n, c) for n, c, _ in pts if c]
            color = None
            if warm:
                xy = zip(*warm, strict=True)
                color = ax.plot(*xy, label=label, ms=4, **_style(label))[0].get_color()
            if cold:
                xy = zip(*cold, strict=True)
                ax.plot(*xy, ":", marker="o", mfc="none", color=color, ms=4, alpha=0.8)
        ax.set(xscale="log", yscale="log", title=title, xlabel="cells n", ylabel="fit time (s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("warm fits: solid; first fit of a new process, empty caches (cold): dotted")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_quality(records: list[dict], path: Path) -> bool:
    """Each quality figure against n (mean over seeds, error bar one sd), one line per method.

    Parameters
    ----------
    records : list of dict
        Successful runs of one swept family.
    path : pathlib.Path
        The PNG written.

    Returns
    -------
    bool
        Whether a figure was written.
    """
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [(n, k) for n, k in QUALITY_COLUMNS.items() if any(r.get(k) for r in records)]
    groups = (
        ("UMAP", lambda r: r["method"] == "umap"),
        ("t-SNE family", lambda r: r["method"] != "umap"),
    )
    fig, axes = plt.subplots(2, len(figures), figsize=(4.4 * len(figures), 8.4), squeeze=False)
    for row, (group, keep) in enumerate(groups):
        members = [r for r in records if keep(r)]
        _, labels = _rows(members) if members else ([], [])
        for ax, (name, key) in zip(axes[row], figures, strict=True):
            for label in labels:
                pts = sorted(
                    (r["n"], r[key], r.get(f"{key}_sd") or 0.0)
                    for r in members
                    if r["label"] == label and r.get(key) is not None
                )
                if pts:
                    n, m, sd = zip(*pts, strict=True)
                    ax.errorbar(n, m, yerr=sd, label=label, ms=3, capsize=2, **_style(label))
            ax.set(xscale="log", title=f"{group}: {name}", xlabel="cells n")
            ax.grid(True, alpha=0.3)
        axes[row][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
