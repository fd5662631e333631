"""The simulated atlas straight in PCA space, for 200k-10M cells (see :mod:`benchmarks.atlas_sim`).

Counts for millions of cells would not fit in memory, but the picture an embedding sees is the
50-D PCA. A latent cell is built from what its counts would have given:

1. once per seed, a *calibration* atlas of :data:`~benchmarks.atlas_sim.CALIBRATION_CELLS`
   cells is simulated at the count level and preprocessed the scanpy way; its highly variable
   genes, normalisation target (the median library size, scanpy's default), gene means and
   principal axes define the projection;
2. each calibration cell's *residual* is its PCA coordinates minus the projection of its
   noise-free profile ``log1p(target * mu / sum(mu))``: what counts sampling, library size and
   normalisation added;
3. a latent cell is the projection of its own noise-free profile plus the residual of a
   calibration cell drawn from the same population (and, on a trajectory, the same tenth of
   pseudotime; doublets from the calibration doublets). Exact duplicates copy their source row.

So the latent atlas has the count-level geometry, noise included, at any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.atlas_model import AtlasModel, make_model
from benchmarks.atlas_sim import (
    CALIBRATION_CELLS,
    CHUNK,
    N_PCS,
    T_BINS,
    Cells,
    expected_counts,
    observations,
    preprocess,
    sample_cells,
    simulate_counts,
)


@dataclass(frozen=True)
class Calibration:
    """The count-level pipeline of one seed, as a linear map plus residual pools.

    Attributes
    ----------
    hvg : numpy.ndarray of bool, shape (N_GENES,)
        Highly variable genes.
    target : float
        ``normalize_total``'s target (median library size of the calibration cells).
    mean : numpy.ndarray of shape (n_hvg,)
        Mean of the log-normalised highly variable genes.
    components : numpy.ndarray of shape (n_hvg, N_PCS)
        Principal axes.
    residuals : numpy.ndarray of shape (CALIBRATION_CELLS, N_PCS)
        Residual of each calibration cell.
    pools : dict
        ``{key: row indices of residuals}``, key from :func:`pool_keys`.
    """

    hvg: np.ndarray
    target: float
    mean: np.ndarray
    components: np.ndarray
    residuals: np.ndarray
    pools: dict

    def project(self, mu: np.ndarray) -> np.ndarray:
        """PCA coordinates of noise-free profiles (expected counts ``mu``, one row a cell)."""
        profile = np.log1p(self.target * mu[:, self.hvg] / mu.sum(axis=1, keepdims=True))
        return (profile - self.mean) @ self.components


def pool_keys(model: AtlasModel, cells: Cells) -> np.ndarray:
    """Which residual pool each cell draws from: population and pseudotime tenth; doublets -1.

    Parameters
    ----------
    model : AtlasModel
        The model.
    cells : Cells
        The descriptors.

    Returns
    -------
    numpy.ndarray of int64
    """
    bins = np.minimum((cells.t * T_BINS).astype(np.int64), T_BINS - 1)
    keys = cells.population * T_BINS + bins
    return np.where(cells.partner >= 0, -1, keys)


def calibrate(seed: int = 0, n_cells: int = CALIBRATION_CELLS) -> Calibration:
    """Simulate and preprocess the calibration atlas of a seed; derive the projection.

    Parameters
    ----------
    seed : int, default=0
        Seed of the model.
    n_cells : int, default=CALIBRATION_CELLS
        Calibration cells.

    Returns
    -------
    Calibration
    """
    adata = simulate_counts(n_cells, seed)
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    preprocess(adata)
    hvg = adata.var["highly_variable"].to_numpy()
    logged = adata.X[:, hvg]
    mean = np.asarray(logged.mean(axis=0)).ravel()
    components = np.asarray(adata.varm["PCs"])[hvg]
    calib = Calibration(hvg, float(np.median(totals[totals > 0])), mean, components, None, {})
    model = make_model(seed)
    cells = sample_cells(model, n_cells, seed)
    originals = np.where(cells.source >= 0, cells.source, np.arange(n_cells))
    noise_free = np.vstack(
        [
            calib.project(expected_counts(model, cells, originals[s : s + CHUNK]))
            for s in range(0, n_cells, CHUNK)
        ]
    )
    residuals = np.asarray(adata.obsm["X_pca"], dtype=np.float64) - noise_free
    keys = pool_keys(model, cells)[originals]
    unique = cells.source < 0  # a duplicate would enter its source's residual twice
    pools = {int(k): np.flatnonzero((keys == k) & unique) for k in np.unique(keys[unique])}
    return Calibration(hvg, calib.target, mean, components, residuals, pools)


def _donors(keys: np.ndarray, calib: Calibration, rng: np.random.Generator) -> np.ndarray:
    """A calibration row per cell, from its pool (the population's nearest pool if empty)."""
    out = np.empty(len(keys), dtype=np.int64)
    available = np.array(sorted(calib.pools))
    for key in np.unique(keys):
        sel = np.flatnonzero(keys == key)
        pool = calib.pools.get(int(key))
        if pool is None or len(pool) == 0:
            same = available[(available // T_BINS) == key // T_BINS] if key >= 0 else available
            near = same if len(same) else available
            pool = calib.pools[int(near[np.argmin(np.abs(near - key))])]
        out[sel] = pool[rng.integers(0, len(pool), size=len(sel))]
    return out


def simulate_latent(n: int, seed: int = 0, calibration: Calibration | None = None):
    """Simulate ``n`` cells of the atlas directly as 50-D PCA coordinates.

    Parameters
    ----------
    n : int
        Number of cells.
    seed : int, default=0
        Seed of the model and of the cells.
    calibration : Calibration, optional
        The seed's calibration (computed when not given; it takes about a minute).

    Returns
    -------
    X : numpy.ndarray of shape (n, 50), float32
    obs : dict of numpy.ndarray
        As :func:`benchmarks.atlas_sim.observations`.
    """
    model = make_model(seed)
    calib = calibration if calibration is not None else calibrate(seed)
    cells = sample_cells(model, n, seed)
    rng = np.random.default_rng([seed, n, 3])
    keys = pool_keys(model, cells)
    X = np.empty((n, N_PCS), dtype=np.float32)
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(n, start + CHUNK))
        coords = calib.project(expected_counts(model, cells, rows))
        coords += calib.residuals[_donors(keys[rows], calib, rng)]
        X[rows] = coords
    dup = np.flatnonzero(cells.source >= 0)
    X[dup] = X[cells.source[dup]]
    return X, observations(model, cells)
