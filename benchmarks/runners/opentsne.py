"""openTSNE, split into kNN, affinity (P) and optimisation with openTSNE's public functions.

The steps are those of ``openTSNE.TSNE.fit`` with its defaults (kNN by ``method='auto'``,
k = 3 * perplexity, PCA initialisation, 250 early-exaggeration iterations then 500), on all cores.
"""

from __future__ import annotations

import time

import numpy as np

from . import RunOutput, Unavailable, require


def needs_warmup(spec: dict) -> bool:
    """openTSNE is compiled ahead of time (Cython, Annoy): no warm-up.

    Parameters
    ----------
    spec : dict
        The run spec.

    Returns
    -------
    bool
    """
    return False


def preload(spec: dict) -> list:
    """Import openTSNE's modules (before the timed fit).

    Parameters
    ----------
    spec : dict
        The run spec.

    Returns
    -------
    list of module
    """
    return require("openTSNE", "openTSNE.affinity", "openTSNE.initialization")


def run(X: np.ndarray, spec: dict) -> RunOutput:
    """Fit openTSNE.

    Parameters
    ----------
    X : numpy.ndarray of shape (n, d)
        Data.
    spec : dict
        The run spec; ``max_iter`` sets the total number of iterations (250 of them
        exaggerated when it allows), None keeps openTSNE's 250 + 500.

    Returns
    -------
    RunOutput
    """
    if spec["method"] != "tsne":
        raise Unavailable(f"openTSNE has no {spec['method']!r}")
    opentsne, affinity, initialization = preload(spec)

    seed = spec.get("seed", 0)
    perplexity = float(spec["perplexity"])
    n = X.shape[0]
    k = min(n - 1, int(3 * perplexity))
    t0 = time.perf_counter()
    index = affinity.get_knn_index(X, "auto", k, "euclidean", n_jobs=-1, random_state=seed)
    neighbors, distances = index.build()
    t1 = time.perf_counter()
    P = affinity.joint_probabilities_nn(
        neighbors, distances, [min(perplexity, (k - 1) / 3)], symmetrize=True, n_jobs=-1
    )
    aff = affinity.PrecomputedAffinities(P, normalize=False)
    t2 = time.perf_counter()

    total = spec.get("max_iter")
    ee_iter = 250 if total is None else min(250, total // 3)
    n_iter = 500 if total is None else total - ee_iter
    init = initialization.pca(X, random_state=seed)
    tsne = opentsne.TSNE(
        perplexity=perplexity,
        early_exaggeration_iter=ee_iter,
        n_iter=n_iter,
        n_jobs=-1,
        random_state=seed,
    )
    emb = tsne.fit(affinities=aff, initialization=init)
    t3 = time.perf_counter()
    return RunOutput(
        np.asarray(emb, dtype=np.float32),
        {"knn": t1 - t0, "affinity": t2 - t1, "optimize": t3 - t2},
        ee_iter + n_iter,
        {"params": {"perplexity": perplexity, "knn": type(index).__name__, "n_jobs": -1}},
    )
