"""scanpy: ``sc.pp.neighbors`` + ``sc.tl.umap``, and ``sc.tl.tsne``, as a scanpy user runs them.

``sc.pp.neighbors`` finds the kNN and computes the fuzzy graph in one call, so those two phases
are reported together (``knn_affinity``). ``sc.tl.tsne`` (scikit-learn's Barnes-Hut t-SNE) only
gives a total.
"""

from __future__ import annotations

import os
import time

import numpy as np

from . import RunOutput, Unavailable, require

#: Rows of the warm-up fit: above 4096 cells ``sc.pp.neighbors`` switches from scikit-learn's
#: exact search to pynndescent, whose numba functions must be compiled in the warm-up too.
WARMUP_ROWS = 5000


def needs_warmup(spec: dict) -> bool:
    """UMAP compiles numba functions on first use; scikit-learn's t-SNE (Cython) does not.

    Parameters
    ----------
    spec : dict
        The run spec.

    Returns
    -------
    bool
    """
    return spec["method"] == "umap"


def preload(spec: dict) -> list:
    """Import anndata and scanpy (and the t-SNE it calls) before the timed fit.

    Parameters
    ----------
    spec : dict
        The run spec.

    Returns
    -------
    list of module
    """
    return require("anndata", "scanpy", "sklearn.manifold")[:2]


def run(X: np.ndarray, spec: dict) -> RunOutput:
    """Run scanpy's UMAP or t-SNE on ``X`` (``use_rep='X'``).

    Parameters
    ----------
    X : numpy.ndarray of shape (n, d)
        Data.
    spec : dict
        The run spec; ``max_iter`` sets ``sc.tl.umap``'s ``maxiter`` (ignored for t-SNE).

    Returns
    -------
    RunOutput
    """
    ad, sc = preload(spec)
    sc.settings.n_jobs = os.cpu_count() or 1
    sc.settings.verbosity = 0
    seed = spec.get("seed", 0)
    adata = ad.AnnData(np.asarray(X, dtype=np.float32))

    if spec["method"] == "umap":
        t0 = time.perf_counter()
        k = int(spec["n_neighbors"])
        sc.pp.neighbors(adata, n_neighbors=k, use_rep="X", random_state=seed)
        t1 = time.perf_counter()
        maxiter = spec.get("max_iter")
        sc.tl.umap(adata, min_dist=spec["min_dist"], maxiter=maxiter, random_state=seed)
        t2 = time.perf_counter()
        n_iter = spec.get("max_iter") or (500 if X.shape[0] <= 10_000 else 200)
        return RunOutput(
            adata.obsm["X_umap"].astype(np.float32),
            {"knn_affinity": t1 - t0, "optimize": t2 - t1},
            int(n_iter),
            {"params": {"n_neighbors": spec["n_neighbors"], "min_dist": spec["min_dist"]}},
        )
    if spec["method"] == "tsne":
        sc.tl.tsne(
            adata,
            use_rep="X",
            perplexity=spec["perplexity"],
            random_state=seed,
            n_jobs=sc.settings.n_jobs,
        )
        return RunOutput(
            adata.obsm["X_tsne"].astype(np.float32),
            {},
            None,
            {"params": {"perplexity": spec["perplexity"]}},
        )
    raise Unavailable(f"scanpy has no {spec['method']!r}")
