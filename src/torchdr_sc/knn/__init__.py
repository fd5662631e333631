"""k-nearest-neighbour search: one call signature, several backends, one registry.

The package's public seam for the kNN stage: :func:`knn`, the registry
(:data:`BACKENDS`, :func:`register_backend`, :func:`check_backend`), the value
:class:`KNNGraph` and the metric vocabulary :data:`METRICS`.

>>> from torchdr_sc.knn import knn
>>> graph = knn(X, 15)                      # backend='auto', squared Euclidean
>>> graph = knn(X, 15, backend="faiss", metric="cosine", index="ivf")

Backends (:data:`BACKENDS`):

- ``'torch'`` (also ``backend=None``, TorchDR's meaning): exact, blockwise with bounded
  memory, any device; or approximate with ``index='ivf'``: on CPU k-means cells probed per
  query and scanned list by list with a shrinking bound (``knn.probed_ivf``, faster than
  faiss's IVF and pynndescent at 15 and at 90 neighbours), on GPUs cells probed per cell (batched
  matrix products: the fast search without faiss's GPU build).
- ``'faiss'``: exact flat index or approximate IVF index, CPU or GPU (needs ``faiss``).
- ``'keops'``: exact, linear memory, lazy tensors (needs ``pykeops``).

``backend='auto'`` picks: CUDA data -> faiss with a GPU index when faiss has GPU support,
else torch (exact up to :data:`AUTO_CUDA_EXACT_MAX_SAMPLES` samples, its IVF index above);
CPU data -> torch (exact) up to :data:`AUTO_TORCH_MAX_SAMPLES` samples, torch's IVF index
probed per query above (faster than faiss's IVF index and pynndescent at a recall of at
least 0.95, for 15 neighbours and for 90). ``'manhattan'``, which no IVF
index supports, is always searched exactly. The choice is logged at INFO level. A backend
named explicitly is used or fails with a clear error: never a silent fallback.

Every backend returns a :class:`~torchdr_sc.knn.KNNGraph` with distances recomputed
exactly from the coordinates in the data's dtype, rows sorted by increasing distance.
:class:`SearchTask` states what a backend's search function (:data:`SearchFn`) receives;
:class:`CandidateSearch` builds one from a candidate selection, as the built-in ones are.
Ties between exact duplicate rows are broken at random in every result, in memory and
streamed (:func:`row_hashes`, :func:`groups_from_hashes`, :func:`spread_ties`).
"""

from .common import CandidateSearch, KNNBackend, SearchFn, SearchTask, drop_self
from .graph import METRICS, KNNGraph
from .registry import (
    AUTO_CUDA_EXACT_MAX_SAMPLES,
    AUTO_TORCH_MAX_SAMPLES,
    BACKENDS,
    INDEXES,
    auto_backend,
    available_backends,
    check_backend,
    knn,
    register_backend,
    resolve_backend,
)
from .ties import (
    duplicate_groups,
    groups_from_hashes,
    row_hashes,
    spread_duplicate_ties,
    spread_ties,
)
from .transformer import KNNTransformer

__all__ = [
    "AUTO_CUDA_EXACT_MAX_SAMPLES",
    "AUTO_TORCH_MAX_SAMPLES",
    "BACKENDS",
    "INDEXES",
    "METRICS",
    "CandidateSearch",
    "KNNBackend",
    "KNNGraph",
    "KNNTransformer",
    "SearchFn",
    "SearchTask",
    "auto_backend",
    "available_backends",
    "check_backend",
    "drop_self",
    "duplicate_groups",
    "groups_from_hashes",
    "knn",
    "register_backend",
    "resolve_backend",
    "row_hashes",
    "spread_duplicate_ties",
    "spread_ties",
]
