"""The sparse affinity value: P as CSR-ordered edges.

:class:`SparseAffinity` is what every affinity returns and every objective reads. It lives
on a torch device and converts to and from scipy CSR without recomputation, which is how
the AnnData layer caches it in ``adata.obsp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass(frozen=True)
class SparseAffinity:
    """A sparse affinity matrix P stored as CSR-ordered edges.

    Attributes
    ----------
    rows, cols
        ``(E,)`` endpoints of every stored entry, grouped by row in increasing row order;
        int64, or int32 in the compact form the t-SNE family builds
        (``affinity.knn_union.symmetrize_knn_compact``, whose rows hold
        two runs of increasing columns). Code that computes with them (not only indexes)
        converts them with ``.long()``.
    weights
        ``(E,)`` float values P[rows, cols].
    n
        Number of samples (P is n x n).
    row_range
        ``None`` when every row of P is stored; ``(start, stop)`` when only those rows are
        (one process's block of a row-sharded P under ``torchrun``: columns keep their
        global ids, ``rows`` lie in ``[start, stop)``).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    weights: torch.Tensor
    n: int
    row_range: tuple[int, int] | None = None

    @property
    def holds_all_rows(self) -> bool:
        """Whether every row of P is stored (see ``row_range``)."""
        return self.row_range is None

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.weights.device

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.weights.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Return the affinity on ``device`` with weights of ``dtype``."""
        return SparseAffinity(
            self.rows.to(device),
            self.cols.to(device),
            self.weights.to(device=device, dtype=dtype or self.weights.dtype),
            self.n,
            self.row_range,
        )

    def row_sums(self) -> torch.Tensor:
        """Sum of every row, shape ``(n,)``."""
        out = torch.zeros(self.n, dtype=self.weights.dtype, device=self.device)
        return out.index_add_(0, self.rows, self.weights)

    def scaled(self, factor: float) -> SparseAffinity:
        """Return ``factor * P``."""
        return SparseAffinity(self.rows, self.cols, self.weights * factor, self.n, self.row_range)

    def to_dense(self) -> torch.Tensor:
        """Dense ``(n, n)`` tensor (small n only)."""
        out = torch.zeros(self.n, self.n, dtype=self.weights.dtype, device=self.device)
        out.index_put_((self.rows, self.cols), self.weights, accumulate=True)
        return out

    def to_scipy(self, dtype: np.dtype = np.float32) -> sp.csr_matrix:
        """CSR matrix holding P (float32 by default)."""
        rows = self.rows.detach().cpu().numpy()
        cols = self.cols.detach().cpu().numpy()
        vals = self.weights.detach().cpu().numpy().astype(dtype)
        return sp.csr_matrix((vals, (rows, cols)), shape=(self.n, self.n))

    @classmethod
    def from_scipy(
        cls,
        matrix: sp.spmatrix,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> SparseAffinity:
        """Build from any scipy sparse matrix (duplicates summed, explicit zeros dropped)."""
        csr = sp.csr_matrix(matrix)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        coo = csr.tocoo()
        return cls(
            torch.as_tensor(coo.row.astype(np.int64), device=device),
            torch.as_tensor(coo.col.astype(np.int64), device=device),
            torch.as_tensor(coo.data, dtype=dtype, device=device),
            int(csr.shape[0]),
        )

    @classmethod
    def from_dense(cls, matrix: torch.Tensor, *, threshold: float = 0.0) -> SparseAffinity:
        """Keep the entries of a dense matrix above ``threshold``."""
        rows, cols = torch.nonzero(matrix > threshold, as_tuple=True)
        return cls(rows, cols, matrix[rows, cols], int(matrix.shape[0]))

    @classmethod
    def from_knn(cls, indices: torch.Tensor, weights: torch.Tensor) -> SparseAffinity:
        """Directed affinity with ``weights[i, j]`` on the edge ``i -> indices[i, j]``."""
        n, k = indices.shape
        rows = torch.arange(n, device=indices.device).repeat_interleave(k)
        return cls(rows, indices.reshape(-1), weights.reshape(-1), int(n))

    def symmetrize(self, mode: str = "mean") -> SparseAffinity:
        """Symmetric version of P, computed on P's device.

        Parameters
        ----------
        mode
            ``'mean'``: (P + P^T) / 2 (t-SNE, van der Maaten 2014); ``'sum'``: P + P^T;
            ``'fuzzy_union'``: P + P^T - P * P^T (UMAP, McInnes et al. 2018).

        Notes
        -----
        P must hold each ``(row, col)`` at most once (a kNN graph does). The cost is one
        sort of the ``2 nnz`` flat positions.
        """
        if mode not in ("mean", "sum", "fuzzy_union"):
            msg = f"`mode` must be one of 'fuzzy_union', 'mean', 'sum'; got {mode!r}."
            raise ValueError(msg)
        n = self.n
        # every entry of P and of P^T, keyed by its flat position; one sort groups the pairs
        rows, cols = self.rows.long(), self.cols.long()  # int32 ids would overflow n^2
        keys = torch.cat([rows * n + cols, cols * n + rows])
        vals = torch.cat([self.weights, self.weights])
        keys, slot = torch.unique(keys, return_inverse=True)
        if n < 2**24:  # n^2 << 2^52: the float64 quotient floors exactly; faster than int64
            rows = torch.floor(keys.double() / n).long()
        else:
            rows = keys // n
        cols = keys - rows * n
        w = torch.zeros(keys.numel(), dtype=vals.dtype, device=vals.device)
        w.index_add_(0, slot, vals)  # P_ij + P_ji
        if mode == "mean":
            w *= 0.5
        elif mode == "fuzzy_union":
            prod = torch.ones_like(w).scatter_reduce_(0, slot, vals, "prod")
            both = torch.bincount(slot, minlength=keys.numel()) == 2
            w -= torch.where(both, prod, torch.zeros_like(prod))  # - P_ij P_ji
        keep = w > 0
        return SparseAffinity(rows[keep], cols[keep], w[keep], n)
