"""TorchDR from PyPI, run inside ``benchmarks/.venv-torchdr`` (see ``setup_torchdr_venv.sh``).

TorchDR computes the kNN inside its input affinity, so kNN and affinity are reported together
(``knn_affinity``), measured through its ``on_affinity_computation_start/end`` hooks; the rest of
``fit_transform`` is the optimisation.
"""

from __future__ import annotations

import time

import numpy as np

from . import RunOutput, Unavailable, require, sync

CLASSES = {"umap": "UMAP", "tsne": "TSNE", "infotsne": "InfoTSNE", "largevis": "LargeVis"}


def _timed(cls, device: str):
    """Subclass ``cls`` so that the affinity phase is timed through TorchDR's hooks."""

    class Timed(cls):
        def on_affinity_computation_start(self):
            sync(device)
            self._bench_t0 = time.perf_counter()
            return super().on_affinity_computation_start()

        def on_affinity_computation_end(self):
            out = super().on_affinity_computation_end()
            sync(device)
            self._bench_t1 = time.perf_counter()
            return out

    Timed.__name__ = cls.__name__
    return Timed


def run(X: np.ndarray, spec: dict) -> RunOutput:
    """Fit a TorchDR estimator.

    Parameters
    ----------
    X : numpy.ndarray of shape (n, d)
        Data.
    spec : dict
        The run spec: ``backend`` is TorchDR's (``'faiss'``, ``'keops'`` or None for dense
        torch), ``max_iter`` None keeps TorchDR's default.

    Returns
    -------
    RunOutput
    """
    torch, torchdr = require("torch", "torchdr", package="torchdr")
    device = spec.get("device") or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Unavailable("CUDA is not available to TorchDR")
    backend = spec.get("backend")
    backend = None if backend in (None, "torch", "none") else backend
    kwargs = {"backend": backend, "device": device, "random_state": spec.get("seed", 0)}
    if spec.get("max_iter") is not None:
        kwargs["max_iter"] = int(spec["max_iter"])
    if spec["method"] == "umap":
        kwargs.update(n_neighbors=int(spec["n_neighbors"]), min_dist=spec["min_dist"])
    else:
        kwargs["perplexity"] = spec["perplexity"]
    est = _timed(getattr(torchdr, CLASSES[spec["method"]]), device)(**kwargs)

    sync(device)
    t0 = time.perf_counter()
    emb = est.fit_transform(torch.as_tensor(np.asarray(X, dtype=np.float32), device=device))
    emb = emb.detach().cpu().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb)
    t_end = time.perf_counter()
    t_aff0 = getattr(est, "_bench_t0", t0)
    t_aff1 = getattr(est, "_bench_t1", t0)
    n_iter = getattr(est, "n_iter_", None)
    n_iter = None if n_iter is None else int(n_iter) + 1  # TorchDR stores the last step index
    return RunOutput(
        emb.astype(np.float32),
        {"knn_affinity": t_aff1 - t_aff0, "optimize": t_end - t_aff1},
        n_iter,
        {"params": {k: v for k, v in kwargs.items() if k != "random_state"}},
    )
