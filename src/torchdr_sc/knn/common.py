"""Pieces shared by every kNN backend: the search contract, exact re-ranking, self exclusion.

:class:`SearchTask` states once what a backend search function receives (the keyword
options of ``fn(X, k, **options)``, their meaning and defaults) and the steps every
built-in backend shares around its own candidate selection: the search coordinates, the
``k + 1`` candidates of a self search, the exclusion of the query row
(:func:`drop_self`) and :func:`finalize`, which recomputes the candidates' distances
exactly from the coordinates in the data's dtype, clamps round-off at 0 and sorts each
row. :class:`CandidateSearch` turns a backend's selection (blockwise matmul, faiss index,
keops reduction) into its search function, so all backends return distances in the same
units and with the same accuracy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

from .._validation import missing_dependency
from .graph import METRICS, KNNGraph

#: Upper bound, in bytes, of the temporaries a backend allocates at once on CPU (distance
#: blocks, gathered neighbour coordinates): memory stays bounded whatever the sample count.
BLOCK_BYTES = 256 * 2**20
#: The same bound on GPU, where bigger blocks pay (fewer, larger matrix products).
CUDA_BLOCK_BYTES = 2**30

#: A backend's search function, ``fn(X, k, **options) -> KNNGraph``: its keyword options,
#: their meaning and defaults are the fields of :class:`SearchTask` after ``k``.
SearchFn = Callable[..., KNNGraph]


def import_backend_module(module: str, backend: str, package: str) -> ModuleType:
    """Import ``module``, needed by ``backend``, or raise the project's ImportError.

    The error names the ``package`` to install and the extra (named like the backend).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_dependency(backend, package, backend) from err


def _always_available() -> None:
    """Requirement check of a backend that needs no optional package."""


@dataclass(frozen=True)
class KNNBackend:
    """A registered kNN backend.

    Calling it runs the search: ``backend(X, k, **options) -> KNNGraph`` (a
    :data:`SearchFn`). Inputs are already validated by :func:`torchdr_sc.knn.knn`.

    Attributes
    ----------
    name
        Registry name, e.g. ``'faiss'``.
    search
        The search function.
    metrics
        Metrics the backend supports.
    require
        Raises :class:`ImportError` (in the project style) when the backend's optional
        package is missing; returns nothing otherwise.
    """

    name: str
    search: SearchFn
    metrics: tuple[str, ...] = METRICS
    require: Callable[[], None] = field(default=_always_available)

    def __call__(self, X: torch.Tensor, k: int, **options: Any) -> KNNGraph:
        """Run the search (``options``: the keyword fields of :class:`SearchTask`)."""
        return self.search(X, k, **options)

    def is_available(self) -> bool:
        """Whether the backend's optional package can be imported."""
        try:
            self.require()
        except ImportError:
            return False
        return True


@dataclass(frozen=True, eq=False)
class SearchTask:
    """One kNN search as a backend receives it: the contract of every search function.

    A :data:`SearchFn` is called ``fn(X, k, **options)``; ``options`` are the fields after
    ``k``, with the defaults below. Inputs arrive validated by :func:`torchdr_sc.knn.knn`
    (``k`` in range, ``query`` on ``X``'s device and in its dtype). The result holds the
    ``(m, k)`` neighbours of every query row, the row itself excluded in a self search,
    distances in ``metric`` units and ``X``'s dtype, rows sorted by increasing distance.

    Attributes
    ----------
    X
        ``(n, d)`` float data; results are on its device, distances in its dtype.
    k
        Number of neighbours.
    metric
        One of :data:`~torchdr_sc.knn.METRICS`.
    query
        ``(m, d)`` rows to search among ``X``; ``None`` searches every row of ``X`` among
        the others (the row itself excluded, by index, so exact duplicates are kept).
    index
        ``'auto'``, ``'flat'`` (exact) or ``'ivf'`` (approximate); backends without an
        index ignore it.
    nprobe
        IVF lists visited per query or cell; ``None``: the backend's default.
    generator
        Seeds the training of approximate indexes; deterministic without.
    """

    X: torch.Tensor
    k: int
    metric: str = "sqeuclidean"
    query: torch.Tensor | None = None
    index: str = "auto"
    nprobe: int | None = None
    generator: torch.Generator | None = None

    @property
    def self_search(self) -> bool:
        """Whether every row of ``X`` is searched among the others (``query=None``)."""
        return self.query is None

    @property
    def queries(self) -> torch.Tensor:
        """The rows searched for: ``query``, or ``X`` itself in a self search."""
        return self.X if self.query is None else self.query

    @property
    def n_search(self) -> int:
        """Candidates to ask for when the query row cannot be skipped by index.

        ``k + 1`` in a self search (:meth:`finish` drops the row), else ``k``.
        """
        return self.k + 1 if self.query is None else self.k

    def coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Search coordinates of ``X`` and of the queries (``search_coordinates``)."""
        return search_coordinates(self.X, self.query, self.metric)

    def finish(self, indices: torch.Tensor) -> KNNGraph:
        """The graph of the candidate ``indices``: query row dropped, ties between exact
        duplicates spread over their group (``knn.ties.spread_duplicate_ties``),
        exact distances, sorted.

        ``indices`` has ``k`` columns (query row already skipped), or :attr:`n_search`
        columns from a self search that may hold it (then dropped by :func:`drop_self`).
        """
        from .ties import spread_duplicate_ties  # (ties builds on this module)

        if indices.shape[1] > self.k:
            indices = drop_self(indices)
        indices = spread_duplicate_ties(indices, self.X, self.self_search)
        return finalize(self.queries, self.X, indices, self.metric)


@dataclass(frozen=True)
class CandidateSearch:
    """The :data:`SearchFn` of a backend, built from its candidate selection.

    Attributes
    ----------
    select
        ``select(task) -> indices``: the int64 candidate indices of a :class:`SearchTask`,
        on ``X``'s device, in the shape :meth:`SearchTask.finish` takes.
    """

    select: Callable[[SearchTask], torch.Tensor]

    def __call__(self, X: torch.Tensor, k: int, **options: Any) -> KNNGraph:
        """Run the search (``options``: the keyword fields of :class:`SearchTask`)."""
        task = SearchTask(X, k, **options)
        return task.finish(self.select(task))


def block_bytes(device: torch.device) -> int:
    """Temporary-memory bound for a device (:data:`BLOCK_BYTES` / :data:`CUDA_BLOCK_BYTES`)."""
    return CUDA_BLOCK_BYTES if device.type == "cuda" else BLOCK_BYTES


def rows_per_block(n_cols: int, bytes_per_row_item: int, budget: int = BLOCK_BYTES) -> int:
    """Number of rows of a ``(rows, n_cols)`` temporary that fit in ``budget`` bytes."""
    return max(1, budget // max(1, n_cols * bytes_per_row_item))


def normalize_rows(X: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (cosine distance 1 to anything)."""
    norms = torch.linalg.vector_norm(X, dim=1, keepdim=True)
    return X / norms.clamp_min(torch.finfo(X.dtype).tiny)


def search_coordinates(
    X: torch.Tensor, Q: torch.Tensor | None, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates in which candidates are searched, for the data and the queries.

    Cosine: rows normalised. Other metrics (translation invariant): centred on the mean of
    ``X``, which keeps the matmul formula ``||x||^2 + ||y||^2 - 2 x.y`` well conditioned
    for data far from the origin. ``Q=None`` (self search) returns ``X``'s coordinates twice.
    """
    if metric == "cosine":
        Xs = normalize_rows(X)
        return Xs, (Xs if Q is None else normalize_rows(Q))
    mean = X.mean(dim=0, keepdim=True)
    Xs = X - mean
    return Xs, (Xs if Q is None else Q - mean)


def exact_distances(
    Q: torch.Tensor, X: torch.Tensor, indices: torch.Tensor, metric: str
) -> torch.Tensor:
    """Distances in ``metric`` units between ``Q[i]`` and ``X[indices[i, j]]``.

    Computed directly from coordinate differences (no ``||x||^2 + ||y||^2 - 2 x.y``
    cancellation), in chunks of rows bounded by :data:`BLOCK_BYTES`.
    """
    m, k = indices.shape
    out = torch.empty((m, k), dtype=X.dtype, device=X.device)
    step = rows_per_block(k * X.shape[1], X.element_size())
    for s in range(0, m, step):
        q = Q[s : s + step, None, :]
        y = X[indices[s : s + step]]
        # y - q in place of the gathered block (the same squares and absolute values as
        # q - y, bitwise): one block-sized write less
        if metric in ("sqeuclidean", "euclidean"):
            d = y.sub_(q).square_().sum(-1)
            if metric == "euclidean":
                d = d.sqrt_()
        elif metric == "manhattan":
            d = y.sub_(q).abs_().sum(-1)
        else:  # cosine: 1 - cos = ||q/|q| - y/|y|||^2 / 2 (accurate for close pairs)
            qn = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
            yn = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
            tiny = torch.finfo(X.dtype).tiny
            d = 0.5 * (q / qn.clamp_min(tiny) - y / yn.clamp_min(tiny)).square_().sum(-1)
            zero = (qn == 0).squeeze(-1) | (yn == 0).squeeze(-1)
            d = torch.where(zero, torch.ones((), dtype=d.dtype, device=d.device), d)
        out[s : s + step] = d
    return out.clamp_min_(0)


#: Rows per block of the row-wise steps of :meth:`SearchTask.finish` (self removal, sort):
#: their temporaries stay small instead of several times the graph (the whole-array forms
#: held int64 temporaries many times the graph's size at once).
FINISH_ROWS = 1 << 16


def finalize(Q: torch.Tensor, X: torch.Tensor, indices: torch.Tensor, metric: str) -> KNNGraph:
    """Exact distances of the candidate ``indices``, rows sorted by increasing distance.

    ``indices`` (a temporary of the search) is reordered in place, in blocks of rows.
    """
    dist = exact_distances(Q, X, indices, metric)
    for s in range(0, indices.shape[0], FINISH_ROWS):
        block, order = torch.sort(dist[s : s + FINISH_ROWS], dim=1, stable=True)
        dist[s : s + FINISH_ROWS] = block
        indices[s : s + FINISH_ROWS] = torch.gather(indices[s : s + FINISH_ROWS], 1, order)
    return KNNGraph(indices, dist, metric)


def drop_self(
    indices: torch.Tensor,
    start: int = 0,
    *,
    query_ids: torch.Tensor | None = None,
    distances: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Remove each query's own index from its ``k + 1`` sorted candidates, keeping ``k``.

    The one self-exclusion of the package (backends, sharded and streamed searches). If
    the query is among its candidates (the usual case) that entry goes; otherwise (many
    exact duplicates) the farthest candidate goes, so the result never holds the query.

    Parameters
    ----------
    indices
        ``(..., m, k + 1)`` candidates, each row sorted by increasing distance.
    start
        Row ``r`` is sample ``start + r`` (ignored when ``query_ids`` is given).
    query_ids
        ``(..., m)`` sample id of every row, for rows that are not consecutive samples.
    distances
        Optional ``(..., m, k + 1)`` distances of the candidates, filtered the same way.

    Returns
    -------
    The ``(..., m, k)`` indices, and the matching distances when ``distances`` is given.
    """
    if query_ids is None:
        m = indices.shape[-2]
        query_ids = torch.arange(start, start + m, device=indices.device)
    if indices.dim() == 2 and indices.shape[0] > FINISH_ROWS:  # in blocks of rows
        return _drop_self_in_blocks(indices, query_ids, distances)
    is_self = indices == query_ids[..., None]
    matches = is_self.sum(-1)
    is_self[..., -1] |= matches == 0
    if bool((matches > 1).any()):  # repeated candidates (padded IVF lists): remove one
        is_self &= torch.cumsum(is_self, -1) == 1
    keep = ~is_self
    shape = (*indices.shape[:-1], indices.shape[-1] - 1)
    if distances is None:
        return indices[keep].view(shape)
    return indices[keep].view(shape), distances[keep].view(shape)


def _drop_self_in_blocks(
    indices: torch.Tensor, query_ids: torch.Tensor, distances: torch.Tensor | None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`drop_self` of a 2-D array, :data:`FINISH_ROWS` rows at a time."""
    m, width = indices.shape
    out = torch.empty((m, width - 1), dtype=indices.dtype, device=indices.device)
    out_d = None if distances is None else distances.new_empty((m, width - 1))
    for s in range(0, m, FINISH_ROWS):
        e = s + FINISH_ROWS
        if out_d is None:
            out[s:e] = drop_self(indices[s:e], query_ids=query_ids[s:e])
        else:
            out[s:e], out_d[s:e] = drop_self(
                indices[s:e], query_ids=query_ids[s:e], distances=distances[s:e]
            )
    return out if out_d is None else (out, out_d)
