"""sklearn-style neighbor-embedding estimators."""

from ._base import Embedder
from .contrastive import UMAP, LargeVis, find_ab_params
from .cosne import COSNE
from .incremental_pca import ExactIncrementalPCA, IncrementalPCA
from .infotsne import InfoTSNE
from .matcher import AffinityMatcher, GaussianKernel, NeighborEmbedding, StudentKernel
from .pacmap import PACMAP
from .pca import PCA
from .tsne import SNE, TSNE
from .tsnekhorn import TSNEkhorn

__all__ = [
    "COSNE",
    "PACMAP",
    "PCA",
    "SNE",
    "TSNE",
    "UMAP",
    "AffinityMatcher",
    "Embedder",
    "ExactIncrementalPCA",
    "GaussianKernel",
    "IncrementalPCA",
    "InfoTSNE",
    "LargeVis",
    "NeighborEmbedding",
    "StudentKernel",
    "TSNEkhorn",
    "find_ab_params",
]
