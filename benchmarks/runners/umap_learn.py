"""umap-learn, split into its three phases with umap-learn's own functions.

``nearest_neighbors`` (pynndescent) -> ``fuzzy_simplicial_set`` -> ``simplicial_set_embedding``,
exactly the calls ``umap.UMAP.fit`` makes for n >= 4096, with ``random_state=None`` so that every
phase runs on all cores (a fixed seed makes umap-learn single-threaded).
"""

from __future__ import annotations

import time

import numpy as np

from . import RunOutput, Unavailable, require


def run(X: np.ndarray, spec: dict) -> RunOutput:
    """Fit umap-learn.

    Parameters
    ----------
    X : numpy.ndarray of shape (n, d)
        Data.
    spec : dict
        The run spec; ``max_iter`` sets ``n_epochs`` (None: umap-learn's default).

    Returns
    -------
    RunOutput
    """
    if spec["method"] not in ("umap", "densmap"):
        raise Unavailable(f"umap-learn has no {spec['method']!r}")
    (umap_,) = require("umap.umap_", package="umap-learn")
    from sklearn.utils import check_random_state

    k = int(spec["n_neighbors"])
    rs = check_random_state(None)
    t0 = time.perf_counter()
    knn_i, knn_d, _ = umap_.nearest_neighbors(
        X, k, "euclidean", {}, False, rs, low_memory=True, use_pynndescent=True, n_jobs=-1
    )
    t1 = time.perf_counter()
    densmap = spec["method"] == "densmap"
    # umap.UMAP(densmap=True)'s defaults, and the graph's distances it passes on
    dens = {"lambda": 2.0, "frac": 0.3, "var_shift": 0.1, "n_neighbors": k}
    graph, *_, graph_dists = umap_.fuzzy_simplicial_set(
        X, k, rs, "euclidean", knn_indices=knn_i, knn_dists=knn_d, return_dists=densmap
    )
    dens["graph_dists"] = graph_dists
    t2 = time.perf_counter()
    a, b = umap_.find_ab_params(1.0, spec["min_dist"])
    n_epochs = spec.get("max_iter")
    emb, _ = umap_.simplicial_set_embedding(
        X,
        graph,
        2,
        1.0,
        a,
        b,
        1.0,
        5,
        n_epochs,
        "spectral",
        rs,
        "euclidean",
        {},
        densmap,
        dens if densmap else {},
        False,
        parallel=True,
    )
    t3 = time.perf_counter()
    if n_epochs is None:
        n_epochs = (500 if X.shape[0] <= 10_000 else 200) + (200 if densmap else 0)
    return RunOutput(
        np.asarray(emb, dtype=np.float32),
        {"knn": t1 - t0, "affinity": t2 - t1, "optimize": t3 - t2},
        int(n_epochs),
        {
            "params": {
                "n_neighbors": k,
                "min_dist": spec["min_dist"],
                "n_jobs": -1,
                "densmap": densmap,
            }
        },
    )
