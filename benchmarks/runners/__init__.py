"""One module per benchmarked tool, each with ``run(X, spec) -> RunOutput``.

A module may also define ``needs_warmup(spec) -> bool``: whether a first call pays one-off costs
(JIT compilation, lazy initialisation) that a warm-up on a small subset takes out of the timing
(without it, a warm-up is made), and ``preload(spec)``: import what ``run`` needs, so that the
import time is not counted in the fit either.

A runner imports its tool inside ``run`` and raises :class:`Unavailable` when the tool (or the
requested method / backend / device) cannot be had, so that the harness reports it as skipped.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

# tool -> (runner module, methods it provides)
TOOLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ours": ("ours", ("umap", "tsne", "infotsne", "largevis", "pacmap", "densmap")),
    "ours-tl": ("ours_tl", ("umap", "tsne", "infotsne", "largevis", "pacmap")),
    "umap-learn": ("umap_learn", ("umap", "densmap")),
    "opentsne": ("opentsne", ("tsne",)),
    "scanpy": ("scanpy_runner", ("umap", "tsne")),
    "torchdr": ("torchdr_runner", ("umap", "tsne", "infotsne", "largevis")),
    "pacmap": ("pacmap_runner", ("pacmap",)),
}


class Unavailable(RuntimeError):
    """The tool, method, backend or device is not available in this environment."""


@dataclass
class RunOutput:
    """What a runner returns.

    Attributes
    ----------
    embedding : numpy.ndarray of shape (n, 2)
        The embedding.
    timings : dict
        Seconds per phase: any of ``'knn'``, ``'affinity'``, ``'knn_affinity'`` (kNN and
        affinity measured together) and ``'optimize'``.
    n_iter : int or None
        Number of optimisation epochs run.
    notes : dict
        Anything worth recording (parameters used, backend chosen ...).
    """

    embedding: np.ndarray
    timings: dict = field(default_factory=dict)
    n_iter: int | None = None
    notes: dict = field(default_factory=dict)


def get_runner(tool: str):
    """Import and return the runner module of a tool.

    Parameters
    ----------
    tool : str
        A key of :data:`TOOLS`.

    Returns
    -------
    module
        With ``run(X, spec) -> RunOutput`` and optionally ``needs_warmup(spec) -> bool``.
    """
    if tool not in TOOLS:
        options = ", ".join(map(repr, sorted(TOOLS)))
        raise ValueError(f"`tool` must be one of {options}; got {tool!r}.")
    return importlib.import_module(f"{__name__}.{TOOLS[tool][0]}")


def require(*modules: str, package: str | None = None) -> list:
    """Import modules, or raise :class:`Unavailable` naming the missing package.

    Only a module that is not installed makes the run unavailable; one that is installed but
    fails to import (a bug, a broken install) propagates its error, and the run fails.

    Parameters
    ----------
    *modules : str
        Dotted module names.
    package : str, optional
        Name given in the message (default: the first module's top-level name).

    Returns
    -------
    list of module
        In the order asked.
    """
    try:
        return [importlib.import_module(name) for name in modules]
    except ModuleNotFoundError as exc:
        wanted = {part for name in modules for part in _prefixes(name)}
        if exc.name not in wanted:
            raise
        name = package or modules[0].split(".")[0]
        raise Unavailable(f"{name} is not installed here: {exc}") from exc


def _prefixes(name: str) -> list[str]:
    """``'a.b.c'`` -> ``['a', 'a.b', 'a.b.c']``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def sync(device: str) -> None:
    """Wait for queued CUDA work, so that a timestamp taken next is honest.

    Parameters
    ----------
    device : str
        The device in use; nothing happens unless it is a CUDA device.
    """
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()
