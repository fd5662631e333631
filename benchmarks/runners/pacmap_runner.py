"""The pacmap package (Wang et al., JMLR 2021), split into pairs and optimisation.

The steps of ``pacmap.PaCMAP.fit`` with its defaults (``n_neighbors=10``, ``MN_ratio=0.5``,
``FP_ratio=2.0``, 450 iterations, PCA initialisation, faiss kNN), called one by one with the
package's own functions so that the pair construction (kNN search, scaled distances, mid-near
and further pairs: ``'knn_affinity'``) and the optimisation are timed apart. It runs with
``random_state=None``: a fixed seed makes the package search its neighbours on one thread
(``faiss.omp_set_num_threads(1)``), as umap-learn's runner avoids for the same reason.
"""

from __future__ import annotations

import time

import numpy as np

from . import RunOutput, Unavailable, require


def needs_warmup(spec: dict) -> bool:
    """The package's numba functions compile on the first call (or load from numba's cache):
    a warm-up takes that out of the timing.

    Parameters
    ----------
    spec : dict
        The run spec.

    Returns
    -------
    bool
    """
    return True


def preload(spec: dict) -> list:
    """Import the package (numba, faiss) before the timed fit.

    Parameters
    ----------
    spec : dict
        The run spec.

    Returns
    -------
    list of module
    """
    return require("pacmap", "pacmap.pacmap")


def run(X: np.ndarray, spec: dict) -> RunOutput:
    """Fit the pacmap package's PaCMAP.

    Parameters
    ----------
    X : numpy.ndarray of shape (n, d)
        Data.
    spec : dict
        The run spec; ``max_iter`` sets the last phase's length (the package's
        ``num_iters=(100, 100, max_iter - 200)``; None: its default 450 in all).

    Returns
    -------
    RunOutput
    """
    if spec["method"] != "pacmap":
        raise Unavailable(f"the pacmap package has no {spec['method']!r}")
    _, core = require("pacmap", "pacmap.pacmap")
    num_iters = (100, 100, 250)
    if spec.get("max_iter") is not None:
        num_iters = (100, 100, max(0, int(spec["max_iter"]) - 200))
    reducer = core.PaCMAP(n_components=2, random_state=None, num_iters=num_iters)
    x = np.array(X, dtype=np.float32, copy=True)
    t0 = time.perf_counter()
    n, dim = x.shape
    x, pca_solution, tsvd, *_ = core.preprocess_X(
        x, reducer.distance, reducer.apply_pca, False, reducer.random_state, dim, 2
    )
    reducer.decide_num_pairs(n)
    reducer.sample_pairs(x, False)
    t1 = time.perf_counter()
    emb, *_ = core.pacmap(
        x,
        2,
        reducer.pair_neighbors,
        reducer.pair_MN,
        reducer.pair_FP,
        reducer.lr,
        reducer.num_iters,
        "pca",
        False,
        False,
        reducer.intermediate_snapshots,
        pca_solution,
        tsvd,
    )
    t2 = time.perf_counter()
    params = {"n_neighbors": reducer.n_neighbors, "MN_ratio": reducer.MN_ratio}
    params.update(FP_ratio=reducer.FP_ratio, num_iters=list(num_iters), knn_backend="faiss")
    return RunOutput(
        np.asarray(emb, dtype=np.float32),
        {"knn_affinity": t1 - t0, "optimize": t2 - t1},
        int(sum(num_iters)),
        {"params": params},
    )
