"""``KNNTransformer``: scikit-learn's ``KNeighborsTransformer`` contract over :func:`knn`.

scanpy's extension point for the neighbour search is ``sc.pp.neighbors(adata,
transformer=...)``, which takes any object with that contract: this class runs the
package's backends (torch, faiss, keops; CPU or GPU) inside scanpy's own pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._device import as_float_tensor, resolve_device
from .._random import make_generator, resolve_seed
from .._validation import check_number, check_option
from .graph import METRICS
from .registry import INDEXES, _check_index_options, check_backend, knn, resolve_backend

__all__ = ["MODES", "KNNTransformer"]

#: Values of ``mode``, as in scikit-learn.
MODES = ("connectivity", "distance")


class KNNTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Sparse k-nearest-neighbour graph with scikit-learn's ``KNeighborsTransformer`` API.

    A drop-in for :class:`sklearn.neighbors.KNeighborsTransformer` whose search runs on
    this package's kNN backends (:func:`torchdr_sc.knn.knn`), so that scanpy's own
    ``sc.pp.neighbors`` searches with faiss, torch or keops, on the GPU when there is one::

        import scanpy as sc
        import torchdr_sc as tdr

        sc.pp.neighbors(adata, transformer=tdr.KNNTransformer(15, backend="faiss"))

    scanpy does not set ``n_neighbors`` on a transformer instance: it reads it with
    ``get_params()`` and ignores its own ``n_neighbors``, ``metric`` and ``random_state``
    arguments (they only configure the transformers it builds itself), and it stores the
    transformer's output as ``obsp['distances']`` as it is. So ``n_neighbors`` here has
    scanpy's meaning and default: the size of the neighbourhood *counting the cell
    itself*, 15. ``KNNTransformer()`` gives exactly scanpy's own ``n_neighbors=15`` graph:
    14 other cells in every row, the cell itself not stored. (scikit-learn's
    ``KNeighborsTransformer(n_neighbors=k)`` counts the others only, and stores the sample
    too: ``k + 1`` entries.) scanpy still records its own ``metric`` argument
    (``'euclidean'`` unless given) in ``uns['neighbors']['params']``.

    Parameters
    ----------
    n_neighbors
        Size of the neighbourhood, counting the sample itself (scanpy's convention): every
        row of the output holds the ``n_neighbors - 1`` nearest *other* training samples
        (for new data, the ``n_neighbors - 1`` nearest training samples), in both modes.
    mode
        ``'distance'`` (the distances, in ``metric`` units) or ``'connectivity'`` (ones).
    metric
        ``'euclidean'`` (L2), ``'sqeuclidean'`` (squared L2), ``'cosine'`` (1 - cosine
        similarity) or ``'manhattan'`` (L1), with scikit-learn's meaning of each name.
    backend
        ``'auto'`` (choice by device, size and installed packages, logged), ``'torch'`` or
        ``None`` (exact), ``'faiss'`` (exact flat or approximate IVF index), ``'keops'``
        (exact), or a backend added with :func:`~torchdr_sc.knn.register_backend`. The
        exact backends return scikit-learn's graph (up to ties); an approximate index (the
        IVF of faiss or torch, which ``'auto'`` picks above 20 000 samples on CPU, 100 000
        on CUDA without faiss) trades recall for speed.
    index
        faiss and torch: ``'flat'`` (exact), ``'ivf'`` (approximate) or ``'auto'`` (see
        :func:`~torchdr_sc.knn.knn`).
    nprobe
        IVF only: inverted lists visited per query; ``None`` for the backend's default.
    device
        ``'auto'`` (a torch input keeps its device, other input goes to CUDA when
        available), ``'cpu'`` or ``'cuda'``. The training data is kept there.
    random_state
        Seeds the training of approximate indexes (int, numpy or torch generator); ``None``
        keeps the backends' own deterministic seed. Exact searches do not use it.

    Attributes
    ----------
    n_samples_fit_ : int
        Number of training samples (the columns of the transformed matrix).
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    device_used_ : torch.device
        Where the training data is kept and searched.

    Notes
    -----
    The output is a ``scipy.sparse.csr_matrix`` of float64 (scikit-learn's dtype) with the
    same number of entries in every row, each row in increasing distance (column indices
    are not sorted): scanpy reads the rows in this order and, the sample itself being
    absent, puts it first. No index is kept between calls: every :meth:`transform` searches
    the training data anew (an IVF index is trained again, from the same seed).
    """

    def __init__(
        self,
        n_neighbors: int = 15,
        *,
        mode: str = "distance",
        metric: str = "euclidean",
        backend: str | None = "auto",
        index: str = "auto",
        nprobe: int | None = None,
        device: str | torch.device = "auto",
        random_state: Any = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.mode = mode
        self.metric = metric
        self.backend = backend
        self.index = index
        self.nprobe = nprobe
        self.device = device
        self.random_state = random_state

    def _check_params(self) -> None:
        """Validate the parameters that do not depend on the data."""
        check_number("n_neighbors", self.n_neighbors, kind=int, low=2, closed="left")
        check_option("mode", self.mode, MODES)
        check_option("metric", self.metric, METRICS)
        check_backend(self.backend)
        check_option("index", self.index, INDEXES)
        if self.nprobe is not None:
            check_number("nprobe", self.nprobe, kind=int, low=1, closed="left")

    def _row_size(self) -> int:
        """Entries per row of the output (the sample itself not counted, not stored)."""
        return int(self.n_neighbors) - 1

    def _check_n_samples(self, n: int) -> None:
        k = int(self.n_neighbors)
        if k > n:
            msg = (
                f"n_neighbors ({k}) must be at most the number of training samples ({n}): "
                "it counts the sample itself; lower n_neighbors."
            )
            raise ValueError(msg)

    def fit(self, X: Any, y: Any = None) -> KNNTransformer:
        """Validate the parameters and keep the training data for the search.

        Parameters
        ----------
        X
            ``(n_samples, n_features)`` numpy array, torch tensor or array-like (dense,
            finite). float64 stays float64, anything else is searched in float32.
        y
            Ignored.

        Returns
        -------
        The fitted transformer.
        """
        self._check_params()
        seed = None if self.random_state is None else resolve_seed(self.random_state)
        dev = resolve_device(self.device, X)
        x = as_float_tensor(X, device=dev)
        n = x.shape[0]
        self._check_n_samples(n)
        if self.backend != "auto":  # metric support, package installed, index options
            name = resolve_backend(self.backend, n=n, device=dev, metric=self.metric)
            _check_index_options(name, self.index, self.nprobe, self.metric)
        self._fit_X = x
        self._seed = seed
        self.device_used_ = dev
        self.n_samples_fit_ = n
        self.n_features_in_ = int(x.shape[1])
        self._n_features_out = n
        return self

    def _search(self, k: int, query: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, distances)`` of the ``k`` nearest training samples (rows sorted)."""
        gen = None if self._seed is None else make_generator(self._seed, "cpu")
        graph = knn(
            self._fit_X,
            k,
            backend=self.backend,
            metric=self.metric,
            query=query,
            index=self.index,
            nprobe=self.nprobe,
            generator=gen,
        )
        return graph.indices, graph.distances

    def _to_csr(self, indices: torch.Tensor, distances: torch.Tensor) -> sp.csr_matrix:
        """Rows of neighbours (sorted by distance) as scikit-learn's CSR graph."""
        m, k = indices.shape
        cols = indices.cpu().numpy().astype(np.int64, copy=False).ravel()
        if self.mode == "connectivity":
            data = np.ones(m * k, dtype=np.float64)
        else:
            data = distances.cpu().numpy().astype(np.float64).ravel()
        indptr = np.arange(0, m * k + 1, k, dtype=np.int64)
        return sp.csr_matrix((data, cols, indptr), shape=(m, self.n_samples_fit_))

    def transform(self, X: Any) -> sp.csr_matrix:
        """Graph of the nearest training samples of every row of ``X``.

        Parameters
        ----------
        X
            ``(n_queries, n_features_in_)`` data (dense, finite).

        Returns
        -------
        scipy.sparse.csr_matrix
            ``(n_queries, n_samples_fit_)`` float64: row ``i`` holds the distances to (or,
            with ``mode='connectivity'``, ones at) the ``n_neighbors - 1`` nearest training
            samples of ``X[i]``, in increasing distance.
        """
        check_is_fitted(self)
        self._check_params()
        q = as_float_tensor(X, device=self._fit_X.device, dtype=self._fit_X.dtype)
        if q.shape[1] != self.n_features_in_:
            msg = (
                f"`X` has {q.shape[1]} features, but KNNTransformer was fitted with "
                f"{self.n_features_in_}; transform data with the training data's features."
            )
            raise ValueError(msg)
        self._check_n_samples(self.n_samples_fit_)
        return self._to_csr(*self._search(self._row_size(), q))

    def fit_transform(self, X: Any, y: Any = None) -> sp.csr_matrix:
        """Fit on ``X`` and return the graph of ``X`` itself.

        Row ``i`` holds the ``n_neighbors - 1`` nearest samples other than ``i`` (``i``
        itself is not stored): scanpy's ``obsp['distances']`` layout.

        Parameters
        ----------
        X
            ``(n_samples, n_features)`` training data (dense, finite).
        y
            Ignored.

        Returns
        -------
        scipy.sparse.csr_matrix
            ``(n_samples, n_samples)`` float64 graph (see :meth:`transform`).
        """
        self.fit(X)
        return self._to_csr(*self._search(self._row_size(), None))
