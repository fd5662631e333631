"""torchdr-sc: fast neighbor embeddings in PyTorch for AnnData / scanpy.

>>> import torchdr_sc as tdr
>>> tdr.tl.umap(adata)                      # AnnData layer (scanpy conventions)
>>> Z = tdr.UMAP(n_neighbors=15).fit_transform(X)   # sklearn-style estimators

``import torchdr_sc`` is light: every name of the facade is imported on first use
(:pep:`562`). The estimators, affinities and kNN values load torch; ``tdr.tl``, ``tdr.pp``
and the rest of the AnnData layer load anndata and scanpy; matplotlib is loaded only to draw.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        COSNE,
        PACMAP,
        PCA,
        SNE,
        TSNE,
        UMAP,
        AffinityMatcher,
        ExactIncrementalPCA,
        GaussianKernel,
        IncrementalPCA,
        InfoTSNE,
        LargeVis,
        NeighborEmbedding,
        StudentKernel,
        TSNEkhorn,
    )
    from .knn import KNNGraph, KNNTransformer

    __version__: str

#: Public name of the facade -> the subpackage that defines it (imported on first access).
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "DoublyStochasticQuadraticAffinity",
            "EntropicAffinity",
            "NormalizedGaussianAffinity",
            "SinkhornAffinity",
            "SparseAffinity",
            "SymmetricEntropicAffinity",
            "UMAPAffinity",
        ),
        "affinity",
    ),
    **dict.fromkeys(
        (
            "COSNE",
            "PACMAP",
            "PCA",
            "SNE",
            "TSNE",
            "UMAP",
            "AffinityMatcher",
            "ExactIncrementalPCA",
            "GaussianKernel",
            "IncrementalPCA",
            "InfoTSNE",
            "LargeVis",
            "NeighborEmbedding",
            "StudentKernel",
            "TSNEkhorn",
        ),
        "estimators",
    ),
    "KNNGraph": "knn",
    "KNNTransformer": "knn",
}

__all__ = [
    "COSNE",
    "PACMAP",
    "PCA",
    "SNE",
    "TSNE",
    "UMAP",
    "AffinityMatcher",
    "DoublyStochasticQuadraticAffinity",
    "EntropicAffinity",
    "ExactIncrementalPCA",
    "GaussianKernel",
    "IncrementalPCA",
    "InfoTSNE",
    "KNNGraph",
    "KNNTransformer",
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


def _submodules() -> list[str]:
    """Public modules of the package (``tl``, ``pp``, ``knn``, ...), reachable as attributes."""
    import pkgutil

    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def __getattr__(name: str) -> Any:
    """Import a name of the facade on first access and keep it (:pep:`562`).

    Raises
    ------
    AttributeError
        ``name`` is neither a name of the facade nor a public module of the package, or
        the module that exports it does not define it.
    """
    if name == "__version__":
        from ._version import package_version

        value: Any = package_version()
    elif name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        try:
            value = getattr(module, name)
        except AttributeError:
            msg = f"module {__name__!r} has no attribute {name!r} ({module.__name__} lacks it)"
            raise AttributeError(msg) from None
    elif name in _submodules():
        value = importlib.import_module(f".{name}", __name__)
    else:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The facade's names, loaded or not (for ``dir(tdr)`` and tab completion)."""
    return sorted({*globals(), *__all__, *_submodules()})
