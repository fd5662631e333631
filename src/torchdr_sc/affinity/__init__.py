"""Input affinities P of the neighbor embeddings.

The value they return, :class:`SparseAffinity` (P as CSR-ordered edges), is defined here
too and read by every objective. Every affinity is a callable ``P = affinity(X)`` and
also exposes :meth:`~Affinity.from_knn` (sparse P from a
:class:`~torchdr_sc.knn.KNNGraph`, no distance recomputed) and
:meth:`~Affinity.from_distances` (dense P from an ``(n, n)`` distance matrix).

- :class:`EntropicAffinity`: rows sum to 1, row entropy log(perplexity); kNN (default)
  or all pairs (Hinton & Roweis 2002; van der Maaten & Hinton 2008).
- :class:`SymmetricEntropicAffinity`: symmetric, rows sum to 1, row entropy at least
  log(perplexity); dense or on a kNN graph (Van Assel et al. 2023).
- :class:`SinkhornAffinity`: symmetric, doubly stochastic; dense (Cuturi 2013), built on
  :func:`log_sinkhorn_potentials`.
- :class:`UMAPAffinity`: UMAP's fuzzy simplicial set; kNN (McInnes et al. 2018).
- :class:`NormalizedGaussianAffinity`: Gaussian kernel normalised by rows, columns or in
  total; dense or on a kNN graph.
- :class:`DoublyStochasticQuadraticAffinity`: symmetric, doubly stochastic and sparse;
  dense (Zhang et al. 2023).
"""

from ._base import Affinity
from .entropic import EntropicAffinity
from .gaussian import NormalizedGaussianAffinity
from .quadratic import DoublyStochasticQuadraticAffinity
from .sinkhorn import SinkhornAffinity, log_sinkhorn_potentials
from .sparse import SparseAffinity
from .symmetric_entropic import SymmetricEntropicAffinity
from .umap import UMAPAffinity

__all__ = [
    "Affinity",
    "DoublyStochasticQuadraticAffinity",
    "EntropicAffinity",
    "NormalizedGaussianAffinity",
    "SinkhornAffinity",
    "SparseAffinity",
    "SymmetricEntropicAffinity",
    "UMAPAffinity",
    "log_sinkhorn_potentials",
]
