"""torchdr-sc: fast neighbor embeddings in PyTorch for AnnData / scanpy."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .graph import KNNGraph, SparseAffinity

try:
    __version__ = version("torchdr-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["KNNGraph", "SparseAffinity", "__version__"]
