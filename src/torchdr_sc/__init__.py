"""torchdr-sc: fast neighbor embeddings in PyTorch for AnnData / scanpy.

>>> import torchdr_sc as tdr
>>> tdr.tl.umap(adata)                      # AnnData layer (scanpy conventions)
>>> Z = tdr.UMAP(n_neighbors=15).fit_transform(X)   # sklearn-style estimators
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import pp, tl
from .affinity import (
    DoublyStochasticQuadraticAffinity,
    EntropicAffinity,
    NormalizedGaussianAffinity,
    SinkhornAffinity,
    SparseAffinity,
    SymmetricEntropicAffinity,
    UMAPAffinity,
)
from .estimators import (
    PCA,
    SNE,
    TSNE,
    UMAP,
    AffinityMatcher,
    GaussianKernel,
    InfoTSNE,
    LargeVis,
    NeighborEmbedding,
    StudentKernel,
    TSNEkhorn,
)
from .knn import KNNGraph

try:
    __version__ = version("torchdr-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "PCA",
    "SNE",
    "TSNE",
    "UMAP",
    "AffinityMatcher",
    "DoublyStochasticQuadraticAffinity",
    "EntropicAffinity",
    "GaussianKernel",
    "InfoTSNE",
    "KNNGraph",
    "LargeVis",
    "NeighborEmbedding",
    "NormalizedGaussianAffinity",
    "SinkhornAffinity",
    "SparseAffinity",
    "StudentKernel",
    "SymmetricEntropicAffinity",
    "TSNEkhorn",
    "UMAPAffinity",
    "__version__",
    "pp",
    "tl",
]
