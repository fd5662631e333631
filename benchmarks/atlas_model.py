"""The cell-state model behind the simulated single-cell atlas (:mod:`benchmarks.atlas_sim`).

An atlas of two parts, both fixed by the seed alone (never by the number of cells, so every
size samples the same geometry):

- a **lineage tree** (hematopoiesis-like: a progenitor, three committed progenitors, six
  terminal types). Every node is a cell population whose expression state is its parent's plus
  a gene programme of its own, so descendants share their ancestors' markers. Between a parent
  and each child runs a **trajectory**: cells at pseudotime ``t`` in ``[0, 1]`` interpolate
  the two states in log space, plus a transient programme that peaks half-way (``4 t (1-t)``),
  which bends the path. Pseudotime of a cell = depth of the parent + ``t``.
- **discrete cell types** unrelated to the tree, several split into subtypes whose own
  programmes are weaker than the type's, so subtypes overlap more than types.

Every population gets private "state" programmes (continuous variation within a cluster, of a
population-specific spread), and every cell also carries shared nuisance programmes (cell-cycle
or stress-like axes common to all types). Population sizes decay geometrically (the largest
about 100 times the smallest), as in tissue atlases.

Gene programmes are sparse: a few tens of genes with gamma-distributed log-fold changes, mostly
up. Baseline means are log-normal across genes, dispersions gamma-distributed, library sizes
log-normal with a per-population factor. This is a generative *model*, not a fit to any dataset;
it aims at the features that make embeddings differ (hierarchy, unequal sizes, continua, noise),
in the spirit of Splatter (Zappia et al., Genome Biology 2017) and its path model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_GENES = 4000
#: Nuisance programmes shared by every cell (cell cycle, stress, ribosomal ...).
N_NUISANCE = 6
#: Private state programmes of each population.
N_STATE = 2
#: Median library size (total UMI counts) of a cell.
MEDIAN_LIBRARY = 4000.0

#: The lineage tree: node -> parent (None for the root), in breadth-first order.
TREE: dict[str, str | None] = {
    "progenitor": None,
    "myeloid-prog": "progenitor",
    "lymphoid-prog": "progenitor",
    "erythroid-prog": "progenitor",
    "monocyte": "myeloid-prog",
    "neutrophil": "myeloid-prog",
    "B": "lymphoid-prog",
    "NK": "lymphoid-prog",
    "erythroblast": "erythroid-prog",
    "megakaryocyte": "erythroid-prog",
}
#: Discrete cell types and their subtypes (an empty tuple: no subtypes).
DISCRETE: dict[str, tuple[str, ...]] = {
    "T-CD4": ("naive", "memory", "Treg"),
    "T-CD8": ("naive", "effector"),
    "epithelial": ("basal", "secretory", "ciliated"),
    "fibroblast": ("alveolar", "adventitial"),
    "endothelial": (),
    "mast": (),
    "pDC": (),
    "plasma": (),
}
#: Share of the cells on the trajectories (the rest split between clusters).
TRAJECTORY_SHARE = 0.25
#: Ratio of successive cluster weights (sorted); 24 populations -> largest / smallest ~ 100.
SIZE_DECAY = 0.82
DOUBLET_RATE = 0.025
DUPLICATE_RATE = 0.01


@dataclass(frozen=True)
class Population:
    """One population of cells: a cluster (fixed state) or a trajectory (a path of states).

    Attributes
    ----------
    name : str
        Its name; for a trajectory ``'parent>child'``.
    kind : str
        ``'cluster'`` or ``'trajectory'``.
    start, end : numpy.ndarray of shape (N_GENES,)
        Log-fold offsets at ``t = 0`` and ``t = 1`` (equal for a cluster).
    transient : numpy.ndarray of shape (N_GENES,)
        Log-fold offset weighted by ``4 t (1 - t)`` (zero for a cluster).
    state_start, state_end : numpy.ndarray of shape (N_STATE, N_GENES)
        Private programmes, weighted per cell by normal draws of sd ``spread``; on a trajectory
        those of its two end clusters, mixed ``(1 - t, t)``, so that a cell at either end is
        distributed like the cluster there.
    spread : tuple of float
        Within-population variability at ``t = 0`` and ``t = 1`` (interpolated between).
    weight : float
        Expected share of the cells.
    library_factor : tuple of float
        Factor of the population's median library size at ``t = 0`` and ``t = 1``
        (interpolated geometrically).
    depth : float
        Pseudotime at ``t = 0`` (NaN off the tree).
    labels : tuple of str
        Cell-type label at ``t < 0.5`` and at ``t >= 0.5`` (equal for a cluster): cells on a
        trajectory are annotated with the nearer end, as clustering-based annotation does.
    """

    name: str
    kind: str
    start: np.ndarray
    end: np.ndarray
    transient: np.ndarray
    state_start: np.ndarray
    state_end: np.ndarray
    spread: tuple[float, float]
    weight: float
    library_factor: tuple[float, float]
    depth: float
    labels: tuple[str, str]


@dataclass(frozen=True)
class AtlasModel:
    """Everything that defines the atlas for one seed.

    Attributes
    ----------
    seed : int
        The seed it was drawn from.
    base : numpy.ndarray of shape (N_GENES,)
        Baseline log mean expression of each gene.
    theta : numpy.ndarray of shape (N_GENES,)
        Negative-binomial inverse dispersion of each gene.
    nuisance : numpy.ndarray of shape (N_NUISANCE, N_GENES)
        Shared nuisance programmes.
    populations : tuple of Population
        Clusters first (tree nodes, then discrete types / subtypes), then trajectories.
    cell_types : tuple of str
        Every cell-type label, ``'doublet'`` last.
    lineages : dict
        ``{leaf: (population indices from the root to the leaf)}``: the clusters and
        trajectories along each root-to-leaf path of the tree.
    """

    seed: int
    base: np.ndarray
    theta: np.ndarray
    nuisance: np.ndarray
    populations: tuple[Population, ...]
    cell_types: tuple[str, ...]
    lineages: dict = field(default_factory=dict)

    @property
    def weights(self) -> np.ndarray:
        """Expected share of the cells of each population (sums to 1)."""
        w = np.array([p.weight for p in self.populations])
        return w / w.sum()


def _programme(rng: np.random.Generator, n_genes: int, strength: float, up: float = 0.8):
    """A sparse gene programme: ``n_genes`` genes with gamma log-fold changes, mostly up."""
    out = np.zeros(N_GENES, dtype=np.float64)
    genes = rng.choice(N_GENES, size=n_genes, replace=False)
    sign = np.where(rng.random(n_genes) < up, 1.0, -1.0)
    out[genes] = sign * rng.gamma(2.0, strength / 2.0, size=n_genes)
    return out


def _tree_clusters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """State (log-fold offset) of every tree node: the parent's plus a programme of its own."""
    states: dict[str, np.ndarray] = {}
    for node, parent in TREE.items():
        own = _programme(rng, int(rng.integers(40, 70)), strength=1.1)
        states[node] = own if parent is None else states[parent] + own
    return states


def _depths() -> dict[str, float]:
    depth: dict[str, float] = {}
    for node, parent in TREE.items():
        depth[node] = 0.0 if parent is None else depth[parent] + 1.0
    return depth


def make_model(seed: int = 0) -> AtlasModel:
    """Draw the atlas model of a seed.

    Parameters
    ----------
    seed : int, default=0
        Seed; the same seed always gives the same model.

    Returns
    -------
    AtlasModel
    """
    rng = np.random.default_rng([seed, 0x5EED])
    base = rng.normal(-8.3, 1.4, size=N_GENES)  # log share of the library
    theta = rng.gamma(2.0, 3.0, size=N_GENES) + 0.5
    nuisance = np.stack([_programme(rng, 60, strength=0.7) for _ in range(N_NUISANCE)])
    tree = _tree_clusters(rng)
    depth = _depths()

    clusters: list[tuple[str, np.ndarray, str, float]] = [
        (node, state, node, depth[node]) for node, state in tree.items()
    ]
    for cell_type, subtypes in DISCRETE.items():
        own = _programme(rng, int(rng.integers(40, 90)), strength=1.2)
        if not subtypes:
            clusters.append((cell_type, own, cell_type, float("nan")))
        for sub in subtypes:
            label = f"{cell_type} {sub}"
            clusters.append((label, own + _programme(rng, 25, strength=0.9), label, np.nan))

    # Cluster sizes: a geometric series in a seeded order.
    order = rng.permutation(len(clusters))
    cluster_w = SIZE_DECAY ** order.astype(float)
    cluster_w *= (1.0 - TRAJECTORY_SHARE) / cluster_w.sum()
    pops: list[Population] = []
    for (name, state, label, dep), w in zip(clusters, cluster_w, strict=True):
        private = np.stack([_programme(rng, 30, strength=0.8) for _ in range(N_STATE)])
        spread, library = float(rng.lognormal(-0.3, 0.4)), float(rng.lognormal(0.0, 0.3))
        pops.append(
            Population(
                name=name,
                kind="cluster",
                start=state,
                end=state,
                transient=np.zeros(N_GENES),
                state_start=private,
                state_end=private,
                spread=(spread, spread),
                weight=float(w),
                library_factor=(library, library),
                depth=float(dep),
                labels=(label, label),
            )
        )
    index = {p.name: i for i, p in enumerate(pops)}
    edges = [(parent, child) for child, parent in TREE.items() if parent is not None]
    for parent, child in edges:
        a, b = pops[index[parent]], pops[index[child]]
        pops.append(
            Population(
                name=f"{parent}>{child}",
                kind="trajectory",
                start=tree[parent],
                end=tree[child],
                transient=_programme(rng, 40, strength=1.0),
                state_start=a.state_start,
                state_end=b.state_start,
                spread=(a.spread[0], b.spread[0]),
                weight=TRAJECTORY_SHARE / len(edges),
                library_factor=(a.library_factor[0], b.library_factor[0]),
                depth=depth[parent],
                labels=(parent, child),
            )
        )
    index = {p.name: i for i, p in enumerate(pops)}
    leaves = [n for n in TREE if n not in set(TREE.values())]
    lineages = {}
    for leaf in leaves:
        path, node = [], leaf
        while TREE[node] is not None:
            path += [index[node], index[f"{TREE[node]}>{node}"]]
            node = TREE[node]
        lineages[leaf] = tuple(reversed([*path, index[node]]))
    cell_types = (*tuple(dict.fromkeys(lab for p in pops for lab in p.labels)), "doublet")
    return AtlasModel(seed, base, theta, nuisance, tuple(pops), cell_types, lineages)
