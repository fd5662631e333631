"""The atlas size sweep put together from the runs that measured it, 5,000 to 1,000,000 cells.

The sweep did not run as one command: at 2 cores its parts take hours, and later runs
re-measured a method after a change to it. ``python -m benchmarks.sweep_combined`` reads the
runs of :data:`SWEEP_SOURCES` (oldest first), keeps for every (tool, method, size) the record
of the latest source that measured it, leaves out the records of code that changed since
(:data:`benchmarks.summary.STALE`), and writes beside them

- ``results/sweep-atlas.md``: the fit times and every quality figure by size (the tables of
  :func:`benchmarks.sweep_report.size_tables`), the list of *shortfalls* (every (method, size)
  where ours is slower than the fastest peer of its group, or more than
  :data:`benchmarks.sweep_report.QUALITY_MARGIN` below the best peer's mean) and which run
  each figure comes from;
- ``results/sweep-atlas-time.png`` and ``results/sweep-atlas-quality.png``: time and quality
  against the number of cells, one line per tool (the figures of the docs' benchmarks page).

Times of different tools may come from different runs of the same machine: the speed-ups
quoted in the README come from :mod:`benchmarks.summary`, which pairs each of our fits with
the peers of its own run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import sweep_report
from benchmarks.summary import STALE

RESULTS = Path(__file__).resolve().parent / "results"
STEM = "sweep-atlas"

#: The runs of the sweep, oldest first: a later one replaces an earlier one's record of the
#: same tool, method and size.
SWEEP_SOURCES = (
    "cpu-2core-sweep-v1",  # 5k-50k, every method and peer (TorchDR at 50k missing)
    "cpu-2core-sweep-v1-100k",  # 100k: ours, umap-learn, openTSNE
    "cpu-2core-sweep-v1-peers-50k",  # TorchDR UMAP / LargeVis at 50k
    "cpu-2core-sweep-v1-peers-100k",  # scanpy UMAP / t-SNE, TorchDR UMAP / LargeVis at 100k
    "cpu-2core-tsne-5k",  # TSNE vs openTSNE at 5k after the learning-rate change
    "cpu-2core-tsne-lr-100k",  # TSNE vs openTSNE at 100k after the learning-rate change
    "cpu-2core-infotsne-v2",  # InfoNC-t-SNE, TSNE and openTSNE, 10k-100k
    "cpu-2core-sweep-v1-200k",  # 200k: every method and peer
    "cpu-2core-native-attraction",  # TSNE, InfoTSNE, openTSNE 10k-200k after the C attraction
    "cpu-2core-sweep-v1-1m",  # 1M: ours, umap-learn (no fit in 30 min), openTSNE
    "cpu-2core-native-epoch",  # UMAP, LargeVis, umap-learn 10k-200k after the C epoch
    "cpu-2core-native-epoch-1m",  # UMAP at 1M after the C epoch
    "cpu-2core-everyday-v1",  # UMAP / TSNE vs umap-learn / openTSNE 10k-100k: 3-node grid, IVF kNN
    "cpu-2core-everyday-tsne-v2",  # TSNE vs openTSNE 10k-200k: 16 probed cells for 90 neighbours
    "cpu-2core-everyday-tsne-v3",  # TSNE, InfoTSNE vs openTSNE 10k-200k: kernels on torch's threads
    "cpu-2core-tsne-infotsne-1m-v4",  # TSNE, InfoTSNE at 1M (no peer)
    "cpu-2core-tsne-infotsne-v5",  # TSNE, InfoTSNE at 200k and 1M: InfoTSNE's kernel, second form
)


def sweep_runs(stem: str) -> list[dict]:
    """The successful atlas runs of one report, each marked with its ``source``."""
    lines = (RESULTS / f"{stem}.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    runs = [r for r in records if r.get("type") == "run"]
    for run in runs:
        run["source"] = stem
    return sweep_report.sweep_records(runs)


def combined_records(sources: tuple[str, ...] = SWEEP_SOURCES) -> list[dict]:
    """The latest successful atlas record of every (tool label, method, size) in ``sources``.

    Parameters
    ----------
    sources : tuple of str
        Report stems in ``results/``, oldest first.

    Returns
    -------
    list of dict
    """
    kept: dict[tuple[str, str, int], dict] = {}
    for stem in sources:
        for rec in sweep_runs(stem):
            if stem in STALE.get(rec["method"], ()) and rec["tool"].startswith("ours"):
                continue
            kept[(rec["label"], rec["method"], rec["n"])] = rec
    return sorted(kept.values(), key=lambda r: (r["method"], r["label"], r["n"]))


def source_table(records: list[dict]) -> list[str]:
    """Markdown: the run each (tool, size) figure comes from."""
    sizes = sorted({r["n"] for r in records})
    labels = sorted(
        {r["label"] for r in records}, key=lambda s: (not s.startswith("torchdr-sc"), s)
    )
    by = {(r["label"], r["n"]): r["source"] for r in records}
    short = {stem: stem.removeprefix("cpu-2core-") for stem in SWEEP_SOURCES}
    out = ["| method | " + " | ".join(f"{n:,}" for n in sizes) + " |"]
    out.append("|---|" + "---|" * len(sizes))
    for label in labels:
        cells = [short.get(by.get((label, n), ""), "—") or "—" for n in sizes]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def markdown(records: list[dict]) -> str:
    """The combined sweep's report (see the module notes)."""
    found = sweep_report.shortfalls(records)
    lines = [
        "# The atlas sweep, 5,000 to 1,000,000 cells (runs combined)",
        "",
        "Written by `python -m benchmarks.sweep_combined` from the runs below (2 CPU cores, "
        "quiet machine; each run's command, machine and versions are in its own report). "
        "Cold: the first fit of a new process with empty kernel caches; warm: a later fit.",
        "",
        f"## Shortfalls: ours slower than the fastest peer of its group, or more than "
        f"{sweep_report.QUALITY_MARGIN} below the best peer's mean",
        "",
        *([f"- {line}" for line in found] or ["- none"]),
        "",
        *sweep_report.size_tables(records),
        "",
        "## Where each figure comes from (`benchmarks/results/cpu-2core-<run>.md`)",
        "",
        *source_table(records),
        "",
        f"![time]({STEM}-time.png)",
        "",
        f"![quality]({STEM}-quality.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Write the combined report and its two figures into ``results/``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    records = combined_records()
    (RESULTS / f"{STEM}.md").write_text(markdown(records))
    sweep_report.plot_time(records, RESULTS / f"{STEM}-time.png")
    sweep_report.plot_quality(records, RESULTS / f"{STEM}-quality.png")
    print(f"wrote {RESULTS / STEM}.md and its figures ({len(records)} records)")


if __name__ == "__main__":
    main()
