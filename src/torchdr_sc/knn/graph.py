"""The kNN graph value and the metric vocabulary.

:class:`KNNGraph` is a k-nearest-neighbour graph (self excluded, rows sorted by distance).
It lives on a torch device and converts to and from scipy CSR without recomputation, which
is how the AnnData layer stores it in ``adata.obsp``. :data:`METRICS` is the one list of
input-space metrics of the package: the kNN backends, the affinities, the estimators'
``metric_in`` and ``pp.neighbors`` all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

#: The input-space metrics, in the units of the distances a :class:`KNNGraph` holds.
METRICS = ("sqeuclidean", "euclidean", "cosine", "manhattan")


@dataclass(frozen=True)
class KNNGraph:
    """k nearest neighbours of every sample.

    Attributes
    ----------
    indices
        ``(n, k)`` int64 neighbour indices; the sample itself is excluded; rows are sorted
        by increasing distance.
    distances
        ``(n, k)`` distances in the units of ``metric`` (squared distances for
        ``'sqeuclidean'``, ``1 - cos`` for ``'cosine'``).
    metric
        Name of the metric, one of :data:`METRICS`.
    """

    indices: torch.Tensor
    distances: torch.Tensor
    metric: str

    @property
    def n_samples(self) -> int:
        """Number of samples (rows)."""
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        """Number of neighbours per row."""
        return int(self.indices.shape[1])

    def to(self, device: torch.device | str) -> KNNGraph:
        """Return the graph on ``device``."""
        return KNNGraph(self.indices.to(device), self.distances.to(device), self.metric)

    def truncate(self, k: int) -> KNNGraph:
        """Keep the ``k`` nearest neighbours of every row."""
        if k > self.k:
            msg = f"Cannot keep {k} neighbours from a kNN graph with k={self.k}."
            raise ValueError(msg)
        return KNNGraph(self.indices[:, :k], self.distances[:, :k], self.metric)

    def to_scipy(self) -> sp.csr_matrix:
        """CSR matrix of distances (n x n, float32), one row per sample.

        Zero distances (exact duplicates) are stored explicitly so that no edge is lost.
        """
        n, k = self.indices.shape
        indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
        data = self.distances.detach().cpu().numpy().astype(np.float32).ravel()
        cols = self.indices.detach().cpu().numpy().astype(np.int64).ravel()
        return sp.csr_matrix((data, cols, indptr), shape=(n, n))

    @classmethod
    def from_scipy(
        cls,
        matrix: sp.spmatrix,
        *,
        metric: str = "euclidean",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> KNNGraph:
        """Read a kNN distance matrix (such as scanpy's ``obsp['distances']``).

        Rows may hold different numbers of stored entries (scanpy drops zero distances);
        the graph keeps the smallest row count for every row, sorted by distance.
        The diagonal (self) is ignored.

        Parameters
        ----------
        matrix
            Square sparse matrix whose row ``i`` stores the distances to the neighbours of i:
            finite and non-negative (negatives within float rounding of the largest
            distance, such as ``1 - cos`` computed as ``-1e-7``, are read as 0).
        metric
            The metric of the stored distances.
        device, dtype
            Where and how the tensors are created.

        Raises
        ------
        ValueError
            A matrix that is not square, holds NaN / inf or negative distances (the
            message counts the rows holding them), or has a row without neighbours.
        """
        csr = sp.csr_matrix(matrix, copy=True)
        if csr.shape[0] != csr.shape[1]:
            msg = f"A kNN distance matrix must be square; got shape {csr.shape}."
            raise ValueError(msg)
        csr.setdiag(0)
        coo = csr.tocoo()
        keep = coo.row != coo.col
        rows, cols, vals = coo.row[keep], coo.col[keep], coo.data[keep]
        n = csr.shape[0]
        vals = _checked_distances(rows, vals, n)
        counts = np.bincount(rows, minlength=n)
        k = int(counts.min()) if n else 0
        if k < 1:
            msg = "The kNN distance matrix has a row without neighbours."
            raise ValueError(msg)
        order = np.lexsort((vals, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        take = (starts[:, None] + np.arange(k)[None, :]).ravel()
        idx = torch.as_tensor(cols[take].reshape(n, k), dtype=torch.int64, device=device)
        dist = torch.as_tensor(vals[take].reshape(n, k), dtype=dtype, device=device)
        return cls(idx, dist, metric)


#: Negative distances down to ``-NEGATIVE_TOLERANCE`` times the largest one are float
#: rounding (``1 - cos`` of a vector with itself, squared distances by expansion): read as 0.
NEGATIVE_TOLERANCE = 1e-5


def _checked_distances(rows: np.ndarray, vals: np.ndarray, n: int) -> np.ndarray:
    """The stored distances, checked: finite and non-negative (rounding clipped to 0).

    Raises
    ------
    ValueError
        NaN / inf or negative distances, with the number of rows holding them.
    """
    bad = ~np.isfinite(vals)
    if bad.any():
        n_bad = len(np.unique(rows[bad]))
        msg = f"The kNN distance matrix holds NaN or inf distances in {n_bad} of {n} rows."
        raise ValueError(msg)
    scale = float(np.abs(vals).max()) if vals.size else 0.0
    negative = vals < -NEGATIVE_TOLERANCE * scale
    if negative.any():
        n_bad = len(np.unique(rows[negative]))
        msg = (
            f"The kNN distance matrix holds negative distances in {n_bad} of {n} rows (smallest "
            f"{float(vals.min()):g}); distances must be >= 0."
        )
        raise ValueError(msg)
    return np.maximum(vals, 0) if (vals < 0).any() else vals
