"""Preprocessing: the kNN graph of the cells (``pp.neighbors``), in scanpy's format."""

from ._neighbors import neighbors

__all__ = ["neighbors"]
