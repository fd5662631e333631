"""Preprocessing in scanpy's format: the kNN graph of the cells (``pp.neighbors``) and the
PCA before it (``pp.pca``)."""

from ._neighbors import neighbors
from ._pca import pca

__all__ = ["neighbors", "pca"]
