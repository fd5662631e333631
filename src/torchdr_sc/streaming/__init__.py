"""Streamed input: embed data that is read chunk by chunk and never held whole in memory.

Every estimator's ``fit_transform`` accepts, besides an in-memory matrix:

- a :class:`torch.utils.data.DataLoader` that yields tensors ``(batch, features)``, or tuples /
  lists whose first element is such a tensor (TorchDR's contract). It is iterated several
  times, so it must yield the same rows in the same order every time (``shuffle=False``);
- an on-disk matrix read by row slices: the ``X`` of an AnnData opened with
  ``read_h5ad(path, backed='r')`` (an h5py dataset or anndata's backed CSR / CSC matrix:
  sparse chunks are densified one at a time), a zarr or h5py array, or any row-sliceable
  matrix wrapped in :class:`Chunked` (a numpy memmap, for instance).

Only the stages that need the data read it: the kNN graph and the PCA initialisation.
The input affinity and the optimisation then run as usual on the graph (``n x k`` values)
and the initial embedding (``n x n_components``).

kNN search (``backend`` of the estimator):

- ``'faiss'`` (``'auto'`` when faiss is installed): two passes. The first adds every chunk
  to a faiss index (exact ``IndexFlat`` up to :data:`~torchdr_sc.knn.faiss_search.FLAT_MAX_SAMPLES`
  rows, else ``IndexIVFFlat`` trained on the first chunks); the second queries the rows
  chunk by chunk. The index stores the rows in float32, so its memory is that of the data
  in float32 (no other copy is made).
- ``'torch'`` (``None``; ``'auto'`` without faiss): exact blockwise search with bounded
  memory. The rows to query are taken in blocks of ``QUERY_BYTES / 2`` (the block searched
  and the next one, filled meanwhile, fit :data:`QUERY_BYTES`); each block is compared
  with every chunk in one further pass over the data, distances in slices of
  :data:`SCORE_BYTES`. Memory stays ``O(QUERY_BYTES + CHUNK_BYTES + SCORE_BYTES)`` whatever
  the data size, at the cost of ``1 + n_blocks`` passes (two when the rows fit one block).

Memory besides the data: the PCA statistics are ``O(d^2)`` (a ``d x d`` float64 scatter
matrix and its eigendecomposition), and the graph and embedding ``O(n k)``.

PCA initialisation (``init='pca'``) is an exact incremental PCA (:class:`IncrementalPCA`:
streamed mean and covariance in float64, merged chunk by chunk), then the same
deterministic signs and rescaling as the in-memory initialisation.

The PCA estimators (``PCA``, ``ExactIncrementalPCA``, ``IncrementalPCA``) and ``pp.pca``
compute with the block readers and statistics of this package as well: exact statistics
(:func:`exact_statistics`, merged over ranks by :meth:`IncrementalPCA.reduced`), randomised
subspace iteration for many features (:func:`randomized_axes`), the approximate single-pass
update (:class:`IncrementalSVD`), and projections (:func:`project_rows`).

Under ``torchrun`` every rank builds the whole index (or reads every chunk) but queries and
projects only the rows it owns; the rows are then all-gathered.
"""

from ._constants import CHUNK_BYTES, QUERY_BYTES
from ._decompose import (
    BLOCK_BYTES,
    EXACT_MAX_FEATURES,
    PCA_SOLVERS,
    column_moments,
    exact_statistics,
    n_rows,
    pick_solver,
    prepare_matrix,
    project_rows,
    randomized_axes,
    reduce_moments,
    row_blocks,
    top_axes,
)
from ._fit import fit_streamed, streamed_knn
from ._incremental_svd import SVD_DRIVERS, IncrementalSVD, randomized_svd
from ._pca import IncrementalPCA
from ._sources import Chunked, is_streamed

__all__ = [
    "BLOCK_BYTES",
    "CHUNK_BYTES",
    "EXACT_MAX_FEATURES",
    "PCA_SOLVERS",
    "QUERY_BYTES",
    "SVD_DRIVERS",
    "Chunked",
    "IncrementalPCA",
    "IncrementalSVD",
    "column_moments",
    "exact_statistics",
    "fit_streamed",
    "is_streamed",
    "n_rows",
    "pick_solver",
    "prepare_matrix",
    "project_rows",
    "randomized_axes",
    "randomized_svd",
    "reduce_moments",
    "row_blocks",
    "streamed_knn",
    "top_axes",
]
