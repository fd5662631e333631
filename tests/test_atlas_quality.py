"""Quality on the realistic simulated atlas against the established tools: the small version of
the benchmark sweep's quality part (``python -m benchmarks.run --sweep``), run by CI.

3,000 cells of the simulated atlas (counts, scanpy preprocessing, 50 PCs), seeds 0 and 1 for
every tool; each figure is the mean over the two seeds (one seed moves every tool by ~0.01 in
the local figures and by ~0.05 in the global ones). Ours is compared with its peer: UMAP with
umap-learn, the t-SNE family (TSNE, InfoTSNE, LargeVis) with openTSNE.

Margins: 0.01 for the local figures (10-NN accuracy, NP@15, trustworthiness), the sweep's own
definition of a shortfall; 0.1 for the global ones (centroid distances, pseudotime order),
whose mean over two seeds still moves by ~0.05, so that only a loss of global structure (a
random-looking layout of the clusters, a broken trajectory) fails.

Known shortfalls are marked ``xfail(strict=True)``: they fail today, and once fixed the
unexpected pass fails the run, so that the mark is removed.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import metrics
from benchmarks.atlas_model import make_model
from benchmarks.atlas_sim import preprocess, simulate_counts

pytestmark = pytest.mark.slow

N_CELLS = 3000
SEEDS = (0, 1)
MARGINS = {
    "knn_acc": 0.01,
    "np15": 0.01,
    "trust15": 0.01,
    "centroid_rho": 0.1,
    "pseudotime_rho": 0.1,
}
PEER = {"UMAP": "umap-learn", "TSNE": "openTSNE", "InfoTSNE": "openTSNE", "LargeVis": "openTSNE"}
#: Measured on 3,000 cells, seeds 0-1: InfoTSNE NP@15 0.31 (its 300 negatives per iteration
#: leave the finest neighbourhoods noisier than t-SNE's exact normaliser), LargeVis NP@15 0.19
#: and trustworthiness 0.941, against openTSNE's 0.333 and 0.969 (the fidelity issue).
KNOWN_SHORTFALLS = {
    ("InfoTSNE", "np15"),
    ("LargeVis", "np15"),
    ("LargeVis", "trust15"),
}


@pytest.fixture(scope="module")
def atlas():
    adata = preprocess(simulate_counts(N_CELLS, seed=0))
    x = np.ascontiguousarray(adata.obsm["X_pca"], dtype=np.float32)
    model = make_model(0)
    names = list(model.cell_types)
    labels = np.array([names.index(c) for c in adata.obs["cell_type"]])
    paths = list(model.lineages.values())
    lineages = np.full((len(paths), max(map(len, paths))), -1)
    for row, path in enumerate(paths):
        lineages[row, : len(path)] = path
    queries = np.arange(N_CELLS)
    ctx = metrics.EvalContext(
        data=x,
        labels=labels,
        queries=queries,
        neighbors=metrics.exact_knn(x, queries, metrics.NP_NEIGHBORS),
        trust_queries=queries,
        exclude=(names.index("doublet"),),
        annotations={
            "pseudotime": adata.obs["pseudotime"].to_numpy(),
            "population": adata.obs["population"].to_numpy(),
            "lineages": lineages,
        },
    )
    return x, ctx


def _embed(tool: str, x: np.ndarray, seed: int) -> np.ndarray:
    if tool == "umap-learn":
        umap = pytest.importorskip("umap")
        return umap.UMAP(random_state=seed).fit_transform(x)
    if tool == "openTSNE":
        opentsne = pytest.importorskip("openTSNE")
        return np.asarray(opentsne.TSNE(n_jobs=2, random_state=seed).fit(x))
    import torchdr_sc as tdr

    return getattr(tdr, tool)(random_state=seed).fit_transform(x)


@pytest.fixture(scope="module")
def figures(atlas):
    """``{tool: {figure: mean over the seeds}}``, each tool fitted once per seed."""
    x, ctx = atlas
    cache: dict[str, dict[str, float]] = {}

    def get(tool: str) -> dict[str, float]:
        if tool not in cache:
            runs = [metrics.evaluate(_embed(tool, x, seed), ctx) for seed in SEEDS]
            cache[tool] = {f: float(np.mean([r[f] for r in runs])) for f in MARGINS}
            print(f"\n{tool}: " + ", ".join(f"{k} {v:.3f}" for k, v in cache[tool].items()))
        return cache[tool]

    return get


def _cases():
    for method, peer in PEER.items():
        for figure in MARGINS:
            marks = []
            if (method, figure) in KNOWN_SHORTFALLS:
                marks = [pytest.mark.xfail(strict=True, reason="known shortfall, fidelity issue")]
            yield pytest.param(method, peer, figure, marks=marks, id=f"{method}-{figure}")


@pytest.mark.parametrize(("method", "peer", "figure"), list(_cases()))
def test_atlas_quality_against_peer(figures, method, peer, figure):
    ours, theirs = figures(method)[figure], figures(peer)[figure]
    assert ours >= theirs - MARGINS[figure], f"{method} {ours:.3f} vs {peer} {theirs:.3f}"
