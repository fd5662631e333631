"""The simulated single-cell atlas of the benchmarks: deterministic by seed, the stated sizes,
trajectories, counts that scanpy preprocesses, and a latent-level generator of the same geometry.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from benchmarks.atlas_latent import calibrate, simulate_latent
from benchmarks.atlas_model import (
    DISCRETE,
    DOUBLET_RATE,
    DUPLICATE_RATE,
    SIZE_DECAY,
    TRAJECTORY_SHARE,
    TREE,
    make_model,
)
from benchmarks.atlas_sim import N_PCS, N_TOP_GENES, preprocess, sample_cells, simulate_counts

N_CELLS = 3000


@pytest.fixture(scope="module")
def atlas():
    return preprocess(simulate_counts(N_CELLS, seed=0))


def test_same_seed_same_atlas_other_seed_another():
    a, b, c = simulate_counts(600, 0), simulate_counts(600, 0), simulate_counts(600, 1)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs)
    assert (a.X != c.X).nnz > 0


def test_model_depends_on_the_seed_only():
    m0, m0_again, m1 = make_model(0), make_model(0), make_model(1)
    assert np.array_equal(m0.weights, m0_again.weights)
    assert all(
        np.array_equal(p.end, q.end)
        for p, q in zip(m0.populations, m0_again.populations, strict=True)
    )
    assert not np.array_equal(m0.base, m1.base)


def test_population_sizes_as_stated():
    model = make_model(0)
    n_clusters = len(TREE) + sum(max(1, len(s)) for s in DISCRETE.values())
    clusters = model.weights[:n_clusters]
    # a geometric series: the largest cluster ~100 times the smallest
    ratios = np.sort(clusters)[::-1][1:] / np.sort(clusters)[::-1][:-1]
    np.testing.assert_allclose(ratios, SIZE_DECAY)
    assert clusters.max() / clusters.min() > 50
    assert model.weights[n_clusters:].sum() == pytest.approx(TRAJECTORY_SHARE)

    n = 200_000
    cells = sample_cells(model, n, seed=0)
    observed = np.bincount(cells.population, minlength=len(model.populations)) / n
    sd = np.sqrt(model.weights * (1 - model.weights) / n)
    assert np.all(np.abs(observed - model.weights) < 5 * sd)
    assert (cells.partner >= 0).sum() == round(DOUBLET_RATE * n)
    assert (cells.source >= 0).sum() == round(DUPLICATE_RATE * n)


def test_counts_are_overdispersed_with_varying_library_sizes(atlas):
    counts = atlas.layers["counts"]
    assert np.array_equal(counts.data, np.round(counts.data))
    assert counts.data.min() > 0
    library = np.asarray(counts.sum(axis=1)).ravel()
    assert library.std() / library.mean() > 0.3
    singlets = ~atlas.obs["doublet"].to_numpy()
    dense = counts[np.flatnonzero(singlets & (atlas.obs["cell_type"] == "plasma").to_numpy())]
    dense = np.asarray(dense.todense())
    expressed = dense.mean(0) > 1.0
    assert np.mean(dense.var(0)[expressed] > dense.mean(0)[expressed]) > 0.9  # not Poisson
    doublet_lib = library[~singlets].mean() / library[singlets].mean()
    assert 1.5 < doublet_lib < 2.5


def test_duplicates_copy_a_cell_and_doublets_are_labelled(atlas):
    counts = atlas.layers["counts"].tocsr()
    rows = [counts[i].toarray().tobytes() for i in range(counts.shape[0])]
    same: dict[bytes, list[int]] = {}
    for i, row in enumerate(rows):
        same.setdefault(row, []).append(i)
    dup = np.flatnonzero(atlas.obs["duplicate"].to_numpy())
    assert len(dup) == round(DUPLICATE_RATE * N_CELLS)
    assert all(len(same[rows[i]]) >= 2 for i in dup)  # each is the copy of another cell
    assert sum(len(v) - 1 for v in same.values()) == len(dup)  # no other identical rows
    doublet = atlas.obs["doublet"].to_numpy()
    assert (atlas.obs["cell_type"][doublet] == "doublet").all()
    assert np.isnan(atlas.obs["pseudotime"][doublet]).all()


def test_scanpy_preprocessing_runs_on_the_counts(atlas):
    assert atlas.obsm["X_pca"].shape == (N_CELLS, N_PCS)
    assert np.isfinite(atlas.obsm["X_pca"]).all()
    assert atlas.var["highly_variable"].sum() == N_TOP_GENES
    ratio = atlas.uns["pca"]["variance_ratio"]
    assert np.all(np.diff(ratio) <= 1e-9)
    assert ratio[0] > 0.02
    # log1p of normalised counts: every cell's total is the same after expm1
    totals = np.asarray(np.expm1(atlas.X).sum(axis=1)).ravel()
    np.testing.assert_allclose(totals, totals[0], rtol=1e-3)


def test_trajectories_join_their_end_clusters(atlas):
    """Cells on a trajectory span its pseudotime and move from the parent's cluster towards
    the child's as pseudotime grows (pooled over the trajectories: at 3,000 cells a single one
    has ~80 cells, and counts noise is of the order of a branch's length in PCA space)."""
    x = atlas.obsm["X_pca"]
    model = make_model(0)
    pop = atlas.obs["population"].to_numpy()
    pseudotime = atlas.obs["pseudotime"].to_numpy()
    index = {p.name: i for i, p in enumerate(model.populations)}
    ts, positions = [], []
    for child, parent in TREE.items():
        if parent is None:
            continue
        cells = np.flatnonzero(pop == index[f"{parent}>{child}"])
        start, end = x[pop == index[parent]].mean(0), x[pop == index[child]].mean(0)
        axis = (end - start) / np.linalg.norm(end - start)
        position = (x[cells] - start) @ axis / np.linalg.norm(end - start)
        t = pseudotime[cells] - model.populations[index[parent]].depth
        assert t.min() < 0.1
        assert t.max() > 0.9
        assert spearmanr(t, position)[0] > 0.0, f"{parent}>{child} runs backwards"
        ts.append(t)
        positions.append(position)
    t, position = np.concatenate(ts), np.concatenate(positions)
    assert spearmanr(t, position)[0] > 0.6
    # early cells sit near the parent, late ones near the child, and the path between is filled
    assert np.median(position[t < 0.2]) < 0.4 < 0.6 < np.median(position[t > 0.8])
    assert np.diff(np.sort(np.clip(position, 0, 1))).max() < 0.05


def test_latent_generator_has_the_count_level_geometry():
    calibration = calibrate(0, n_cells=4000)
    x_latent, obs = simulate_latent(4000, 0, calibration)
    again, _ = simulate_latent(4000, 0, calibration)
    assert np.array_equal(x_latent, again)
    counts = preprocess(simulate_counts(4000, 0))
    assert list(obs["cell_type"]) == list(counts.obs["cell_type"])  # the same cells
    x_counts = counts.obsm["X_pca"]
    types = [c for c in np.unique(obs["cell_type"]) if c != "doublet"]
    y = obs["cell_type"]
    from scipy.spatial.distance import pdist

    centroids = [np.stack([x[y == c].mean(0) for c in types]) for x in (x_latent, x_counts)]
    assert spearmanr(pdist(centroids[0]), pdist(centroids[1]))[0] > 0.97
    spread = [np.array([x[y == c].std(0).sum() for c in types]) for x in (x_latent, x_counts)]
    np.testing.assert_allclose(spread[0] / spread[1], 1.0, atol=0.15)
