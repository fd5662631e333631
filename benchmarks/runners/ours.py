"""torchdr-sc's estimators (``tdr.UMAP``, ``tdr.TSNE``, ``tdr.InfoTSNE``, ``tdr.LargeVis``,
``tdr.PACMAP``; ``tdr.UMAP(densmap=True)`` as ``densmap``)."""

from __future__ import annotations

import numpy as np

from . import RunOutput, Unavailable, require

CLASSES = {
    "umap": "UMAP",
    "tsne": "TSNE",
    "infotsne": "InfoTSNE",
    "largevis": "LargeVis",
    "pacmap": "PACMAP",
    "densmap": "UMAP",
}


def estimator_class(method: str):
    """Return the torchdr-sc estimator class of a method.

    Parameters
    ----------
    method : str
        A key of :data:`CLASSES`.

    Returns
    -------
    type

    Raises
    ------
    Unavailable
        When torchdr-sc or that estimator cannot be imported (e.g. not written yet).
    """
    (tdr,) = require("torchdr_sc")
    cls = getattr(tdr, CLASSES[method], None)
    if cls is None:
        raise Unavailable(
            f"torchdr_sc.{CLASSES[method]} is not importable yet (torchdr-sc {tdr.__version__})"
        )
    return cls


def params(spec: dict) -> dict:
    """Constructor arguments for a run spec.

    Parameters
    ----------
    spec : dict
        The run spec (see :mod:`benchmarks.worker`).

    Returns
    -------
    dict
    """
    out = {
        "backend": spec.get("backend") or "auto",
        "device": spec.get("device") or "auto",
        "random_state": spec.get("seed", 0),
    }
    if spec.get("max_iter") is not None:
        out["max_iter"] = int(spec["max_iter"])
    if spec["method"] in ("umap", "densmap"):
        out.update(n_neighbors=spec["n_neighbors"], min_dist=spec["min_dist"])
        if spec["method"] == "densmap":  # umap-learn's densMAP defaults
            out["densmap"] = True
    elif spec["method"] != "pacmap":  # PaCMAP: its own defaults, as the pacmap package's
        out["perplexity"] = spec["perplexity"]
    return out


def phase_timings(raw: dict) -> dict:
    """Map our ``timings_`` onto the benchmark's phases.

    The initialisation (``'init'``) is counted in the optimisation, as it is for the peers
    (umap-learn's spectral init happens inside its optimisation call).

    Parameters
    ----------
    raw : dict
        ``timings_`` of a fitted estimator (seconds per stage).

    Returns
    -------
    dict
        Keys among ``'knn'``, ``'affinity'``, ``'optimize'``.
    """
    raw = {k: float(v) for k, v in (raw or {}).items()}
    out = {k: raw[k] for k in ("knn", "affinity") if k in raw}
    if "optimize" in raw:
        out["optimize"] = raw["optimize"] + raw.get("init", 0.0)
    return out


def run(X: np.ndarray, spec: dict) -> RunOutput:
    """Fit one of our estimators.

    Parameters
    ----------
    X : numpy.ndarray of shape (n, d)
        Data.
    spec : dict
        The run spec.

    Returns
    -------
    RunOutput
        Timings come from the estimator's ``timings_`` and ``n_iter`` from ``n_iter_``.
    """
    cls = estimator_class(spec["method"])
    kwargs = params(spec)
    est = cls(**kwargs)
    emb = est.fit_transform(X)
    raw = {k: float(v) for k, v in (getattr(est, "timings_", None) or {}).items()}
    timings = phase_timings(raw)
    n_iter = getattr(est, "n_iter_", None)
    notes = {"params": {k: v for k, v in kwargs.items() if k != "random_state"}, "timings_": raw}
    for attr in ("backend_", "device_"):
        if hasattr(est, attr):
            notes[attr] = str(getattr(est, attr))
    return RunOutput(np.asarray(emb), timings, None if n_iter is None else int(n_iter), notes)
