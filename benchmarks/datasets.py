"""Benchmark datasets, written once to ``benchmarks/.cache/`` as ``.npy`` files.

Four families:

- ``atlas``: the simulated single-cell atlas (:mod:`benchmarks.atlas_sim`): a lineage tree with
  trajectories, discrete types and subtypes of very unequal sizes, doublets and duplicates;
  negative-binomial counts preprocessed the scanpy way (``normalize_total``, ``log1p``, 2,000
  highly variable genes, ``pca(50)``) up to :data:`COUNT_LEVEL_MAX` cells, the latent-level
  generator (:mod:`benchmarks.atlas_latent`, same geometry) above. Labels: cell type; extra
  annotations (pseudotime, population, lineages) for the global-structure figures;
- ``pbmc68k_reduced``: scanpy's bundled 700 cells, ``obsm['X_pca']`` with ``obs['bulk_labels']``;
- ``digits``: scikit-learn's 1797 8x8 digit images (64 dimensions) with their labels;
- ``synthetic``: a seeded hierarchical Gaussian mixture in 50 dimensions (well separated
  blobs: every tool scores about 1.0 on it, so it serves speed measurements only).

No other real dataset ships with the dependencies (scanpy's other datasets and scikit-learn's
``fetch_*`` download at run time). Workers (which may run in another environment) only ever
read the cached ``.npy`` files.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
FAMILIES = ("atlas", "synthetic", "pbmc68k_reduced", "digits")
#: Largest atlas simulated from counts; larger ones come from the latent-level generator.
COUNT_LEVEL_MAX = 100_000
#: Bumped whenever the atlas model changes, so that cached files are not reused.
ATLAS_VERSION = 1


@dataclass(frozen=True)
class Dataset:
    """A dataset cached on disk.

    Attributes
    ----------
    name : str
        Display name, e.g. ``'synthetic-50000'`` or ``'digits'``.
    family : str
        One of :data:`FAMILIES`.
    n : int
        Number of samples.
    d : int
        Number of input dimensions.
    x_path : str
        Path of the float32 ``(n, d)`` data, saved with :func:`numpy.save`.
    y_path : str
        Path of the int64 ``(n,)`` labels.
    obs_path : str or None
        Path of the ``.npz`` of extra annotations (atlas only): ``label_names``,
        ``pseudotime``, ``population``, ``lineages`` (one row of population indices per
        root-to-leaf path, padded with -1).
    """

    name: str
    family: str
    n: int
    d: int
    x_path: str
    y_path: str
    obs_path: str | None = None

    def to_dict(self) -> dict:
        """Return the fields as a JSON-serialisable dict."""
        return asdict(self)

    def load(self, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Load ``(X, y)`` from the cache.

        Parameters
        ----------
        mmap : bool, default=False
            Memory-map the arrays instead of reading them into memory.

        Returns
        -------
        X : numpy.ndarray of shape (n, d), float32
        y : numpy.ndarray of shape (n,), int64
        """
        mode = "r" if mmap else None
        return np.load(self.x_path, mmap_mode=mode), np.load(self.y_path, mmap_mode=mode)


def make_synthetic(n: int, n_features: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate a single-cell-like hierarchical Gaussian mixture.

    The mixture (centres, weights, spreads) depends only on ``seed`` and ``n_features``, so every
    ``n`` samples the same distribution. Generation is vectorised: 1M x 50 takes a few seconds.

    Parameters
    ----------
    n : int
        Number of samples.
    n_features : int, default=50
        Number of dimensions.
    seed : int, default=0
        Seed of the generator.

    Returns
    -------
    X : numpy.ndarray of shape (n, n_features), float32
        Samples, in random order.
    y : numpy.ndarray of shape (n,), int64
        Subtype label of each sample; the trajectory is the last label.
    """
    rng = np.random.default_rng(seed)
    d = n_features
    # PCA-like decay of the variance along the dimensions.
    scale = (1.0 / np.sqrt(1.0 + np.arange(d) / 4.0)).astype(np.float32)

    n_major = 12
    n_sub = rng.integers(2, 6, size=n_major)
    majors = rng.standard_normal((n_major, d)) * 6.0 * scale
    major_of = np.repeat(np.arange(n_major), n_sub)
    n_clusters = len(major_of)
    centers = majors[major_of] + rng.standard_normal((n_clusters, d)) * 1.6 * scale

    # Uneven sizes: Dirichlet weights over types, then over subtypes within each type.
    major_w = rng.dirichlet(np.full(n_major, 0.8))
    sub_w = np.concatenate([rng.dirichlet(np.ones(k)) for k in n_sub]) * major_w[major_of]
    sub_w = np.maximum(sub_w, 0.002)
    weights = np.append(0.95 * sub_w / sub_w.sum(), 0.05)  # 5% on the trajectory
    spreads = rng.lognormal(0.0, 0.35, size=n_clusters + 1)
    spreads[-1] = 0.5

    # The trajectory runs between subtypes of two different types.
    start, end = rng.choice(n_clusters, size=2, replace=False)
    while major_of[start] == major_of[end]:
        end = rng.integers(n_clusters)
    centers = np.vstack([centers, centers[start]]).astype(np.float32)

    counts = rng.multinomial(n, weights)
    y = np.repeat(np.arange(n_clusters + 1), counts)
    X = rng.standard_normal((n, d), dtype=np.float32)
    X *= scale
    X *= spreads[y, None].astype(np.float32)
    X += centers[y]
    n_traj = counts[-1]
    if n_traj:
        t = rng.random(n_traj, dtype=np.float32)[:, None]
        X[n - n_traj :] += t * (centers[end] - centers[start]).astype(np.float32)

    perm = rng.permutation(n)
    return X[perm], y[perm].astype(np.int64)


def make_atlas(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """The simulated atlas of ``n`` cells as ``(X_pca, cell-type codes, annotations)``.

    Counts and the scanpy recipe up to :data:`COUNT_LEVEL_MAX` cells, the latent-level
    generator above.

    Parameters
    ----------
    n : int
        Number of cells.
    seed : int, default=0
        Seed of the model and of the cells.

    Returns
    -------
    X : numpy.ndarray of shape (n, 50), float32
    y : numpy.ndarray of shape (n,), int64
        Index into ``annotations['label_names']``.
    annotations : dict of numpy.ndarray
        ``label_names``, ``pseudotime`` (NaN off the tree), ``population`` (-1 for doublets),
        ``lineages``.
    """
    from benchmarks.atlas_model import make_model

    model = make_model(seed)
    if n <= COUNT_LEVEL_MAX:
        from benchmarks.atlas_sim import preprocess, simulate_counts

        adata = preprocess(simulate_counts(n, seed))
        X = np.ascontiguousarray(adata.obsm["X_pca"], dtype=np.float32)
        obs = {c: adata.obs[c].to_numpy() for c in ("cell_type", "pseudotime", "population")}
    else:
        from benchmarks.atlas_latent import simulate_latent

        X, obs = simulate_latent(n, seed)
    names = np.array(model.cell_types)
    codes = {name: i for i, name in enumerate(names)}
    y = np.array([codes[c] for c in obs["cell_type"]], dtype=np.int64)
    paths = list(model.lineages.values())
    lineages = np.full((len(paths), max(map(len, paths))), -1, dtype=np.int64)
    for row, path in enumerate(paths):
        lineages[row, : len(path)] = path
    annotations = {
        "label_names": names,
        "pseudotime": np.asarray(obs["pseudotime"], dtype=np.float32),
        "population": np.asarray(obs["population"], dtype=np.int64),
        "lineages": lineages,
    }
    return X, y, annotations


def _load_family(family: str, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if family == "synthetic":
        if n is None:
            raise ValueError("the synthetic dataset needs a size n")
        return make_synthetic(n, seed=seed)
    if family == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return X.astype(np.float32), y.astype(np.int64)
    if family == "pbmc68k_reduced":
        import scanpy as sc

        adata = sc.datasets.pbmc68k_reduced()
        X = np.ascontiguousarray(adata.obsm["X_pca"], dtype=np.float32)
        return X, adata.obs["bulk_labels"].cat.codes.to_numpy().astype(np.int64)
    raise ValueError(f"`dataset` must be one of {', '.join(map(repr, FAMILIES))}; got {family!r}.")


def prepare(
    family: str, n: int | None = None, seed: int = 0, cache_dir: Path | str = CACHE_DIR
) -> Dataset:
    """Return a dataset, generating and caching it first if needed.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    n : int, optional
        Size, for ``'synthetic'`` and ``'atlas'`` (the others have a fixed size).
    seed : int, default=0
        Seed of the generators.
    cache_dir : path-like, default=``benchmarks/.cache``
        Where the ``.npy`` files go.

    Returns
    -------
    Dataset
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if family in ("synthetic", "atlas") and n is None:
        raise ValueError(f"the {family} dataset needs a size n")
    stems = {
        "synthetic": f"synthetic-n{n}-d50-seed{seed}",
        "atlas": f"atlas-v{ATLAS_VERSION}-n{n}-seed{seed}",
    }
    stem = stems.get(family, family)
    x_path, y_path = cache_dir / f"{stem}.X.npy", cache_dir / f"{stem}.y.npy"
    obs_path = cache_dir / f"{stem}.obs.npz" if family == "atlas" else None
    if not (x_path.exists() and y_path.exists() and (obs_path is None or obs_path.exists())):
        if family == "atlas":
            X, y, annotations = make_atlas(n, seed)
            tmp = obs_path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **annotations)
            tmp.replace(obs_path)
        else:
            X, y = _load_family(family, n, seed)
        for path, arr in ((x_path, X), (y_path, y)):
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, arr)
            tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    X = np.load(x_path, mmap_mode="r")
    name = f"{family}-{n}" if family in stems else family
    return Dataset(
        name,
        family,
        int(X.shape[0]),
        int(X.shape[1]),
        str(x_path),
        str(y_path),
        None if obs_path is None else str(obs_path),
    )
