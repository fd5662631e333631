"""torchdr-sc's AnnData layer: ``tdr.tl.<method>(adata)`` on an AnnData holding the data in X."""

from __future__ import annotations

import numpy as np

from . import RunOutput, Unavailable, require
from .ours import params, phase_timings


def run(X: np.ndarray, spec: dict) -> RunOutput:
    """Run ``tdr.tl.umap`` (or ``tsne``, ``infotsne``, ``largevis``) end to end.

    Parameters
    ----------
    X : numpy.ndarray of shape (n, d)
        Data, put in ``adata.X`` (and used through ``use_rep='X'``).
    spec : dict
        The run spec.

    Returns
    -------
    RunOutput
        Timings and epochs are read from ``adata.uns[method]`` when the function records them
        there (keys ``'timings'`` and ``'n_iter'``); otherwise only the total is known.
    """
    ad, tl = require("anndata", "torchdr_sc.tl")
    func = getattr(tl, spec["method"], None)
    if func is None:
        raise Unavailable(f"torchdr_sc.tl.{spec['method']} is not importable yet")
    adata = ad.AnnData(np.asarray(X, dtype=np.float32))
    kwargs = params(spec)
    if kwargs["backend"] == "auto":
        del kwargs["backend"]
    func(adata, use_rep="X", **kwargs)
    method = spec["method"]
    uns = adata.uns.get(method, {})
    raw = {k: float(v) for k, v in dict(uns.get("timings", {})).items()}
    n_iter = uns.get("n_iter")
    return RunOutput(
        np.asarray(adata.obsm[f"X_{method}"], dtype=np.float32),
        phase_timings(raw),
        None if n_iter is None else int(n_iter),
        {"params": {k: v for k, v in kwargs.items() if k != "random_state"}, "timings_": raw},
    )
