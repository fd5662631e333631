"""The demo job: UMAP and t-SNE of scanpy's ``pbmc68k_reduced`` through ``tl``, a figure,
and a summary of time and quality per method (``torchdr-sc demo``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..atlas import METHODS as _ATLAS_METHODS

if TYPE_CHECKING:
    from anndata import AnnData

LABELS = "bulk_labels"
#: ``tl`` functions the demo can run (the methods of ``torchdr-sc embed``).
METHODS = tuple(_ATLAS_METHODS)


@dataclass(frozen=True)
class DemoResult:
    """One row of the demo summary."""

    name: str
    basis: str
    seconds: float
    accuracy: float


def _ours(
    adata: AnnData, method: str, device: str, progress: bool, max_iter: int | None
) -> DemoResult:
    from .. import tl
    from ..quality import knn_label_accuracy

    start = time.perf_counter()
    function = getattr(tl, method)
    iterations = function.scanpy_names.scanpy_name("max_iter") or "max_iter"  # umap: maxiter
    function(adata, device=device, progress_bar=progress, **{iterations: max_iter})
    seconds = time.perf_counter() - start
    acc = knn_label_accuracy(adata.obsm[f"X_{method}"], adata.obs[LABELS])
    return DemoResult(f"tdr.tl.{method}", method, seconds, acc)


def _scanpy(adata: AnnData, method: str) -> DemoResult:
    import scanpy as sc

    from ..quality import knn_label_accuracy

    start = time.perf_counter()
    if method == "umap":
        sc.pp.neighbors(adata, key_added="sc_neighbors")
        sc.tl.umap(adata, neighbors_key="sc_neighbors", key_added="X_sc_umap")
    else:
        sc.tl.tsne(adata, key_added=f"X_sc_{method}")
    seconds = time.perf_counter() - start
    acc = knn_label_accuracy(adata.obsm[f"X_sc_{method}"], adata.obs[LABELS])
    return DemoResult(f"sc.tl.{method}", f"X_sc_{method}", seconds, acc)


def _figure(adata: AnnData, results: list[DemoResult], path: Path) -> None:
    import matplotlib.pyplot as plt
    import scanpy as sc

    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results) + 2.4, 4.4))
    axes = [axes] if len(results) == 1 else list(axes)
    for i, (res, ax) in enumerate(zip(results, axes, strict=True)):
        last = i == len(results) - 1
        sc.pl.embedding(
            adata,
            basis=res.basis,
            color=LABELS,
            ax=ax,
            show=False,
            frameon=False,
            title=f"{res.name}  ({res.seconds:.1f} s, 10-NN acc {res.accuracy:.3f})",
            legend_loc="right margin" if last else "none",
        )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def run_demo(
    out: Path | str = "torchdr_sc_demo",
    *,
    methods: tuple[str, ...] = ("umap", "tsne"),
    device: str = "auto",
    compare_scanpy: bool = False,
    progress: bool = False,
    max_iter: int | None = None,
    write: bool = True,
) -> tuple[AnnData, list[DemoResult]]:
    """Run the demo and return the annotated data and one result per method.

    Parameters
    ----------
    out
        Folder for ``embeddings.png`` and ``pbmc68k_reduced_tdr.h5ad`` (created).
    methods
        ``tl`` functions to run.
    device
        Device of the computations.
    compare_scanpy
        Also run ``sc.pp.neighbors`` + ``sc.tl.umap`` and ``sc.tl.tsne`` as references.
    progress
        Show a progress bar over each optimisation.
    max_iter
        Iterations of every method (``None``: each method's default); a small value gives
        a quick, rough look.
    write
        Write the figure and the h5ad file (only rank 0 of a distributed run writes).
    """
    import scanpy as sc

    from ..distributed import is_rank_zero

    adata = sc.datasets.pbmc68k_reduced()
    results = [_ours(adata, m, device, progress, max_iter) for m in methods]
    if compare_scanpy:
        results += [_scanpy(adata, m) for m in methods if m in ("umap", "tsne")]
    if write and is_rank_zero():
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _figure(adata, results, out / "embeddings.png")
        adata.write_h5ad(out / "pbmc68k_reduced_tdr.h5ad")
    return adata, results


def summary(adata: AnnData, results: list[DemoResult], out: Path | str | None) -> str:
    """The printed summary: one line of time and 10-NN label accuracy per method."""
    first = adata.uns[results[0].basis]["params"] if results[0].basis in adata.uns else {}
    rep = first.get("use_rep", "?")
    device = first.get("device_used", "?")
    lines = [
        f"torchdr-sc demo: pbmc68k_reduced, {adata.n_obs} cells, representation {rep!r}, "
        f"device {device}",
        f"{'method':<18}{'time (s)':>10}   10-NN {LABELS} accuracy (5-fold CV)",
    ]
    lines += [f"{r.name:<18}{r.seconds:>10.2f}   {r.accuracy:.3f}" for r in results]
    if out is not None:
        lines += [
            f"figure: {Path(out) / 'embeddings.png'}",
            f"data:   {Path(out) / 'pbmc68k_reduced_tdr.h5ad'}",
        ]
    return "\n".join(lines)
