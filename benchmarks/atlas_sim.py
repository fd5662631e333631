"""A simulated single-cell atlas, at the count level (10k-100k cells) or the latent level (more).

The model (cell types on a lineage tree with trajectories, discrete types and subtypes of very
unequal sizes, nuisance programmes) is :mod:`benchmarks.atlas_model`. This module samples cells
from it:

- :func:`simulate_counts`: negative-binomial UMI counts (gamma-Poisson) with log-normal library
  sizes, a few doublets (the sum of two cells' expected counts) and exact duplicate cells, as an
  AnnData with ``obs['cell_type']``, ``obs['pseudotime']`` (NaN off the tree),
  ``obs['population']``, ``obs['doublet']`` and ``obs['duplicate']``; :func:`preprocess` then
  runs the scanpy recipe (``normalize_total``, ``log1p``, ``highly_variable_genes(2000)``,
  ``pca(50)``).
- :func:`simulate_latent`: the same cells straight in the 50-D PCA space, for sizes where counts
  would not fit in memory (200k-10M cells). A calibration atlas of 20,000 cells is simulated at
  the count level and preprocessed once per seed; a latent cell is the projection, on that
  PCA, of its noise-free log-normalised profile, plus the PCA residual (counts noise) of a
  calibration cell from the same population (and, on a trajectory, the same tenth of
  pseudotime). The geometry is therefore the count-level one, sampling noise included.

Both are deterministic given ``(n, seed)``; the model depends on ``seed`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.atlas_model import (
    DOUBLET_RATE,
    DUPLICATE_RATE,
    MEDIAN_LIBRARY,
    N_NUISANCE,
    N_STATE,
    AtlasModel,
    make_model,
)

N_TOP_GENES = 2000
N_PCS = 50
CALIBRATION_CELLS = 20_000
#: Rows generated at once (bounds the dense (rows, genes) temporaries to ~130 MB).
CHUNK = 4096
#: Pseudotime bins used to match a latent cell on a trajectory with a calibration cell.
T_BINS = 10


@dataclass
class Cells:
    """The sampled descriptors of ``n`` cells (everything but their expression).

    Attributes
    ----------
    population : numpy.ndarray of int64, shape (n,)
        Population index (into ``model.populations``).
    t : numpy.ndarray of float64, shape (n,)
        Position on a trajectory in ``[0, 1]`` (0 for clusters).
    nuisance, state : numpy.ndarray
        Weights of the shared nuisance and of the private state programmes, (n, N_NUISANCE)
        and (n, N_STATE).
    library : numpy.ndarray of float64, shape (n,)
        Library size.
    partner : numpy.ndarray of int64, shape (n,)
        For a doublet, the row of its second cell in :attr:`extra` (else -1).
    source : numpy.ndarray of int64, shape (n,)
        For an exact duplicate, the row it copies (else -1).
    """

    population: np.ndarray
    t: np.ndarray
    nuisance: np.ndarray
    state: np.ndarray
    library: np.ndarray
    partner: np.ndarray
    source: np.ndarray
    extra: Cells | None = None

    def __len__(self) -> int:
        return len(self.population)


def _descriptors(model: AtlasModel, n: int, rng: np.random.Generator) -> Cells:
    pops = model.populations
    population = rng.choice(len(pops), size=n, p=model.weights)
    is_traj = np.array([p.kind == "trajectory" for p in pops])[population]
    t = np.where(is_traj, rng.random(n), 0.0)
    spread = np.array([p.spread for p in pops])[population]
    spread = (1.0 - t) * spread[:, 0] + t * spread[:, 1]
    lib = np.log(np.array([p.library_factor for p in pops]))[population]
    lib_factor = np.exp((1.0 - t) * lib[:, 0] + t * lib[:, 1])
    return Cells(
        population=population.astype(np.int64),
        t=t,
        nuisance=rng.normal(0.0, 0.6, size=(n, N_NUISANCE)),
        state=rng.normal(0.0, 1.0, size=(n, N_STATE)) * spread[:, None],
        library=MEDIAN_LIBRARY * lib_factor * rng.lognormal(0.0, 0.45, size=n),
        partner=np.full(n, -1, dtype=np.int64),
        source=np.full(n, -1, dtype=np.int64),
    )


def sample_cells(model: AtlasModel, n: int, seed: int) -> Cells:
    """Sample the descriptors of ``n`` cells: populations, pseudotimes, programme weights,
    library sizes, doublets and duplicates.

    Parameters
    ----------
    model : AtlasModel
        The model.
    n : int
        Number of cells.
    seed : int
        Seed of the draw (combined with ``n``).

    Returns
    -------
    Cells
    """
    rng = np.random.default_rng([seed, n, 1])
    cells = _descriptors(model, n, rng)
    n_doublets = round(DOUBLET_RATE * n)
    n_dups = round(DUPLICATE_RATE * n)
    special = rng.choice(n, size=n_doublets + n_dups, replace=False)
    doublets, dups = special[:n_doublets], special[n_doublets:]
    cells.extra = _descriptors(model, n_doublets, rng)
    cells.partner[doublets] = np.arange(n_doublets)
    taken = np.zeros(n, dtype=bool)
    taken[special] = True
    originals = np.flatnonzero(~taken)
    cells.source[dups] = rng.choice(originals, size=n_dups, replace=True)
    return cells


def log_profiles(model: AtlasModel, cells: Cells, rows: np.ndarray) -> np.ndarray:
    """Log expression shares (before library size) of some cells.

    Parameters
    ----------
    model : AtlasModel
        The model.
    cells : Cells
        Their descriptors.
    rows : numpy.ndarray of int
        Which cells.

    Returns
    -------
    numpy.ndarray of shape (len(rows), N_GENES), float64
        ``log`` of each gene's share of the library (rows sum to one after ``exp``).
    """
    pops = model.populations
    out = np.empty((len(rows), model.base.shape[0]))
    pop = cells.population[rows]
    for p in np.unique(pop):
        sel = np.flatnonzero(pop == p)
        t = cells.t[rows[sel]][:, None]
        P = pops[p]
        out[sel] = (1.0 - t) * P.start + t * P.end + 4.0 * t * (1.0 - t) * P.transient
        weights = cells.state[rows[sel]]
        out[sel] += (1.0 - t) * (weights @ P.state_start) + t * (weights @ P.state_end)
    out += cells.nuisance[rows] @ model.nuisance
    out += model.base
    out -= out.max(axis=1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=1, keepdims=True))
    return out


def expected_counts(model: AtlasModel, cells: Cells, rows: np.ndarray) -> np.ndarray:
    """Expected UMI counts of some cells (a doublet: the sum of its two cells).

    Parameters
    ----------
    model : AtlasModel
        The model.
    cells : Cells
        Their descriptors.
    rows : numpy.ndarray of int
        Which cells.

    Returns
    -------
    numpy.ndarray of shape (len(rows), N_GENES), float64
    """
    mu = np.exp(log_profiles(model, cells, rows)) * cells.library[rows, None]
    partner = cells.partner[rows]
    has = np.flatnonzero(partner >= 0)
    if len(has):
        extra = cells.extra
        mu[has] += (
            np.exp(log_profiles(model, extra, partner[has])) * extra.library[partner[has], None]
        )
    return mu


def simulate_counts(n: int, seed: int = 0):
    """Simulate ``n`` cells of the atlas as raw UMI counts.

    Parameters
    ----------
    n : int
        Number of cells.
    seed : int, default=0
        Seed of the model and of the cells.

    Returns
    -------
    anndata.AnnData
        Sparse CSR float32 counts (``n x 4000`` genes) with ``obs`` columns ``cell_type``
        (categorical), ``pseudotime``, ``population``, ``doublet``, ``duplicate``.
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    model = make_model(seed)
    cells = sample_cells(model, n, seed)
    rng = np.random.default_rng([seed, n, 2])
    blocks = []
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(n, start + CHUNK))
        mu = expected_counts(model, cells, rows)
        lam = rng.gamma(model.theta, mu / model.theta)  # gamma-Poisson = negative binomial
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    counts = sp.vstack(blocks, format="csr")
    if (cells.source >= 0).any():  # exact duplicates: rows taken again from their source
        counts = counts[np.where(cells.source >= 0, cells.source, np.arange(n))]
    obs = pd.DataFrame(observations(model, cells), index=[f"cell{i}" for i in range(n)])
    obs["cell_type"] = pd.Categorical(obs["cell_type"], categories=list(model.cell_types))
    var = pd.DataFrame(index=[f"gene{g}" for g in range(counts.shape[1])])
    return ad.AnnData(counts, obs=obs, var=var)


def observations(model: AtlasModel, cells: Cells) -> dict[str, np.ndarray]:
    """Per-cell annotations: cell type, pseudotime, population, doublet and duplicate flags.

    A duplicate carries its source's annotations; a doublet is labelled ``'doublet'`` with no
    pseudotime.

    Parameters
    ----------
    model : AtlasModel
        The model.
    cells : Cells
        The descriptors.

    Returns
    -------
    dict of numpy.ndarray
    """
    pops = model.populations
    row = np.where(cells.source >= 0, cells.source, np.arange(len(cells)))
    pop, t = cells.population[row], cells.t[row]
    late = (t >= 0.5).astype(int)
    cell_type = np.array([pops[p].labels[i] for p, i in zip(pop, late, strict=True)], dtype=object)
    pseudotime = np.array([pops[p].depth for p in pop]) + t
    doublet = cells.partner[row] >= 0
    cell_type[doublet] = "doublet"
    pseudotime[doublet] = np.nan
    return {
        "cell_type": cell_type,
        "pseudotime": pseudotime.astype(np.float32),
        "population": np.where(doublet, -1, pop).astype(np.int64),
        "doublet": doublet,
        "duplicate": cells.source >= 0,
    }


def preprocess(adata, n_top_genes: int = N_TOP_GENES, n_comps: int = N_PCS):
    """The scanpy recipe, in place: ``normalize_total``, ``log1p``, HVG, ``pca``.

    ``adata.layers['counts']`` keeps the raw counts; PCA runs on the highly variable genes
    (scanpy's default ``mask_var``), with ``random_state=0``.

    Parameters
    ----------
    adata : anndata.AnnData
        Counts, as from :func:`simulate_counts`.
    n_top_genes : int, default=2000
        Highly variable genes kept (``flavor='seurat'`` on the log data).
    n_comps : int, default=50
        Principal components.

    Returns
    -------
    anndata.AnnData
        The same object, with ``obsm['X_pca']``, ``varm['PCs']``, ``var['highly_variable']``.
    """
    import scanpy as sc

    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes)
    sc.pp.pca(adata, n_comps=n_comps, random_state=0)
    return adata
