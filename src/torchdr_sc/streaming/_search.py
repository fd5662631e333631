"""Streamed kNN search: an incremental faiss index or an exact blockwise torch pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._logging import get_logger
from ..distributed import RowShard
from ..knn import drop_self, groups_from_hashes, row_hashes, spread_ties
from . import _constants as limits
from ._pca import _PCAHolder
from ._sources import _Source

logger = get_logger(__name__)


class _Coordinates:
    """Search coordinates: rows normalised (cosine), else shifted by the first chunk's mean.

    The shift (any fixed vector: L2 and L1 distances are translation invariant) keeps the
    ``|x|^2 + |y|^2 - 2 x.y`` evaluation of float32 distances well conditioned for data far
    from the origin, as the in-memory search does with the exact mean.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.shift: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.metric == "cosine":
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            return x / norms.clamp_min(torch.finfo(x.dtype).tiny)
        if self.shift is None:
            self.shift = x.mean(0, keepdim=True)
        return x - self.shift.to(x.device)

    def inplace(self, x: torch.Tensor) -> torch.Tensor:
        """The same transformation, overwriting the float32 tensor ``x``."""
        if self.metric == "cosine":
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            return x.div_(norms.clamp_min_(torch.finfo(x.dtype).tiny))
        if self.shift is None:
            self.shift = x.mean(0, keepdim=True)
        return x.sub_(self.shift.to(x.device))


def _numpy32(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())


class _FaissSearch:
    """Flat or IVF faiss index filled chunk by chunk, then queried chunk by chunk.

    IVF (more than ``FLAT_MAX_SAMPLES`` rows, when the row count is known up front): the
    coarse quantizer is trained on the first ``40 * nlist`` rows, which are kept until then.
    """

    def __init__(self, metric: str, n: int | None, seed: int) -> None:
        from ..knn.faiss_search import FLAT_MAX_SAMPLES, default_nlist, faiss_metric, require_faiss

        self.faiss = require_faiss()
        self.metric = metric
        self.fmetric = faiss_metric(self.faiss, metric)
        ivf = n is not None and n > FLAT_MAX_SAMPLES and metric != "manhattan"
        self.kind = "ivf" if ivf else "flat"
        self.nlist = default_nlist(n) if ivf else 0
        self.n_train = min(n, 40 * self.nlist) if ivf else 0
        self.seed = seed
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.index: Any = None
        self.quantizer: Any = None

    def add(self, xs: torch.Tensor) -> None:
        arr = _numpy32(xs)
        if self.index is None and self.kind == "flat":
            self.index = self.faiss.IndexFlat(arr.shape[1], self.fmetric)
        if self.index is not None:
            self.index.add(arr)
            return
        self.pending.append(arr)
        self.n_pending += arr.shape[0]
        if self.n_pending >= self.n_train:
            self._train()

    def _train(self) -> None:
        faiss = self.faiss
        train = np.concatenate(self.pending, 0)
        self.pending, self.n_pending = [], 0
        n, d = train.shape
        self.nlist = max(1, min(self.nlist, n))
        cp = faiss.ClusteringParameters()
        cp.niter, cp.seed, cp.max_points_per_centroid = 10, self.seed, 40
        cp.spherical = self.metric == "cosine"
        assign = faiss.IndexFlat(d, faiss.METRIC_INNER_PRODUCT if cp.spherical else faiss.METRIC_L2)
        clustering = faiss.Clustering(d, self.nlist, cp)
        clustering.train(train, assign)
        self.quantizer = faiss.IndexFlat(d, self.fmetric)  # the IVF index does not own it
        self.quantizer.add(faiss.vector_to_array(clustering.centroids).reshape(self.nlist, d))
        self.index = faiss.IndexIVFFlat(self.quantizer, d, self.nlist, self.fmetric)
        self.index.add(train)
        logger.info(
            "streamed kNN: faiss IVF index (nlist=%d) trained on the first %d rows", self.nlist, n
        )

    def finish(self) -> None:
        """Called after the last chunk (trains an IVF index that saw fewer rows than planned)."""
        if self.index is None:
            self._train()

    def search(self, xs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``(values, indices)`` of the ``k`` nearest rows of every row of ``xs``."""
        from ..knn.faiss_search import default_nprobe

        arr = _numpy32(xs)
        if self.kind == "flat":
            return self.index.search(arr, k)
        nprobe = min(self.nlist, default_nprobe(self.nlist))
        self.index.nprobe = nprobe
        val, ind = self.index.search(arr, k)
        short = np.flatnonzero((ind < 0).any(axis=1))
        while short.size and nprobe < self.nlist:  # rows short of k hits: visit more lists
            nprobe = min(self.nlist, 4 * nprobe)
            self.index.nprobe = nprobe
            val[short], ind[short] = self.index.search(np.ascontiguousarray(arr[short]), k)
            short = short[(ind[short] < 0).any(axis=1)]
        return val, ind


def _to_metric(raw: torch.Tensor, metric: str) -> torch.Tensor:
    """faiss's values (squared L2, inner product of unit rows, L1) in ``metric`` units."""
    if metric == "cosine":
        return (1.0 - raw).clamp_min_(0.0)
    raw = raw.clamp_min_(0.0)
    return raw.sqrt_() if metric == "euclidean" else raw


# --------------------------------------------------------------------------------------
# kNN search: exact torch, one pass per block of query rows
# --------------------------------------------------------------------------------------
class _TopK:
    """Running ``k`` nearest rows of a block of query rows over the streamed chunks."""

    def __init__(self, q: torch.Tensor, start: int, k: int, metric: str) -> None:
        self.q, self.start, self.k, self.metric = q, start, k, metric
        m = q.shape[0]
        self.dist = torch.full((m, k), float("inf"), dtype=q.dtype, device=q.device)
        self.idx = torch.full((m, k), -1, dtype=torch.int64, device=q.device)
        self.q_sq = (q * q).sum(1)

    def update(self, start: int, xs: torch.Tensor) -> None:
        """Merge the rows ``xs`` (rows ``start...`` of the data) into the running lists.

        Query rows are taken in steps whose ``step x b`` distance block fits
        ``SCORE_BYTES``; the block's own ``k`` best are merged with the running ``k``
        best (``2k`` candidates), so no ``(step, k + b)`` copy is made.
        """
        m, b = self.q.shape[0], xs.shape[0]
        k = self.k
        step = max(1, limits.SCORE_BYTES // max(1, 4 * b))
        x_sq = (xs * xs).sum(1) if self.metric in ("sqeuclidean", "euclidean") else None
        for s in range(0, m, step):
            e = min(s + step, m)
            q = self.q[s:e]
            if self.metric == "manhattan":
                d = torch.cdist(q, xs, p=1.0)
            elif self.metric == "cosine":
                d = torch.addmm(torch.ones((), dtype=q.dtype, device=q.device), q, xs.T, alpha=-1.0)
            else:
                d = torch.addmm(x_sq[None, :], q, xs.T, alpha=-2.0).add_(self.q_sq[s:e, None])
            d.clamp_min_(0.0)
            lo, hi = max(self.start + s, start), min(self.start + e, start + b)
            if hi > lo:  # a query row is never its own neighbour
                own = torch.arange(lo, hi, device=d.device)
                d[own - self.start - s, own - start] = float("inf")
            kb = min(k, b)
            cand_d, cand_p = torch.topk(d, kb, dim=1, largest=False, sorted=False)
            del d
            both_d = torch.cat([self.dist[s:e], cand_d], 1)
            both_i = torch.cat([self.idx[s:e], cand_p.add_(start)], 1)
            best, pos = torch.topk(both_d, k, dim=1, largest=False, sorted=True)
            self.dist[s:e] = best
            self.idx[s:e] = torch.gather(both_i, 1, pos)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, distances)`` in the metric's units."""
        dist = self.dist.sqrt() if self.metric == "euclidean" else self.dist
        return self.idx, dist


# --------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------
@dataclass
class StreamResult:
    """What :func:`streamed_knn` computed for the rows of one shard.

    Attributes
    ----------
    indices, distances
        ``(m, k)`` kNN rows of the shard, on CPU (``None`` when no search was asked).
    projection
        ``(m, n_components)`` PCA coordinates of the shard's rows, on CPU (``None``
        without PCA).
    n
        Number of rows of the whole input.
    shard
        The rows the result is about.
    passes
        Passes made over the input.
    backend
        ``'faiss'`` or ``'torch'`` (``None`` without search).
    like
        The first DataLoader batch (output format), else ``None``.
    """

    indices: torch.Tensor | None
    distances: torch.Tensor | None
    projection: torch.Tensor | None
    n: int
    shard: RowShard
    passes: int
    backend: str | None
    like: Any = None


def _stream_backend(backend: str | None) -> str:
    """Search used for streamed input: faiss for 'auto' when installed, else exact torch."""
    from ..knn.faiss_search import require_faiss

    if backend == "auto":
        try:
            require_faiss()
        except ImportError:
            logger.info("streamed kNN: faiss is not installed; exact blockwise torch search")
            return "torch"
        return "faiss"
    if backend in (None, "torch"):
        return "torch"
    if backend == "faiss":
        require_faiss()
        return "faiss"
    msg = (
        f"backend={backend!r} cannot search a streamed input; use backend='faiss' (an index "
        "filled chunk by chunk), 'torch' (exact, bounded memory) or 'auto'."
    )
    raise ValueError(msg)


class _Search:
    """State of one streamed search: the passes over the input and their bookkeeping."""

    def __init__(
        self,
        src: _Source,
        name: str | None,
        k: Any,
        metric: str,
        shard: Any,
        device: torch.device,
        seed: int,
        check_n: Callable[[int], None] | None,
    ) -> None:
        self.src, self.name, self.k_arg, self.metric = src, name, k, metric
        self.shard_arg, self.device, self.check_n = shard, device, check_n
        self.coords = _Coordinates(metric)
        self.n: int = -1
        self.k = 0
        self.shard = RowShard(0, 0)
        self.passes = 0
        self.block: torch.Tensor | None = None
        self.filled = 0
        self.q_lo = 0
        self.faiss = _FaissSearch(metric, src.n, seed) if name == "faiss" else None
        self.hashes: list[torch.Tensor] = []
        if src.n is not None:
            self._settle(src.n)

    def _settle(self, n: int) -> None:
        """Fix the row count, k and the shard; validate before any search."""
        self.n = n
        if self.check_n is not None:
            self.check_n(n)
        shard = self.shard_arg(n) if callable(self.shard_arg) else self.shard_arg
        self.shard = RowShard.full(n) if shard is None else shard
        self.q_lo = self.shard.start
        if self.k_arg is not None:
            self.k = int(self.k_arg(n) if callable(self.k_arg) else self.k_arg)
            if not 1 <= self.k <= n - 1:
                msg = f"k ({self.k}) must be in [1, n_samples - 1] = [1, {n - 1}]."
                raise ValueError(msg)

    def first_pass(self, pca: _PCAHolder | None) -> None:
        """Validate every row, fill the faiss index and the PCA statistics; the torch
        search also keeps its first block of query rows."""
        bad = rows = 0
        for start, x in self.src.chunks():
            bad += int((~torch.isfinite(x).all(1)).sum())
            rows = start + x.shape[0]
            if bad:
                continue
            if self.name is not None:  # for the ties between duplicate rows (spread_ties)
                self.hashes.append(row_hashes(x.to(torch.float32)).cpu())
            if pca is not None:
                pca.add(x)
            if self.name == "faiss":
                self.faiss.add(self.coords(x))
            elif self.name == "torch" and self.n >= 0:
                self._collect(start, x)
        self.passes += 1
        if bad:
            msg = (
                f"`X` holds NaN or inf values in {bad} of {rows} rows; remove or impute them first."
            )
            raise ValueError(msg)
        if self.n < 0:
            self._settle(rows)
        if pca is not None:
            pca.pca.finalize()

    def spread_ties(self, indices: torch.Tensor) -> torch.Tensor:
        """The shard's neighbours with ties between exact duplicate rows broken at random, as
        the in-memory search does (:func:`~torchdr_sc.knn.spread_ties`)."""
        groups = groups_from_hashes(torch.cat(self.hashes)) if self.hashes else None
        if groups is None:
            return indices
        ids = torch.arange(self.shard.start, self.shard.stop)
        return spread_ties(indices, *groups, self_search=True, query_ids=ids)

    def read_shard(self) -> Iterator[tuple[int, torch.Tensor]]:
        """The shard's rows (a random-access source reads only them)."""
        self.passes += 1
        yield from self.src.chunks(self.shard.start, self.shard.stop)

    def faiss_pass(self, pca: _PCAHolder | None) -> tuple[Any, Any, Any]:
        self.faiss.finish()
        idx_parts, dist_parts, proj_parts = [], [], []
        for start, x in self.read_shard():
            val, ind = self.faiss.search(self.coords(x), self.k + 1)
            i = torch.from_numpy(ind.astype(np.int64, copy=False))
            d = _to_metric(torch.from_numpy(np.asarray(val, dtype=np.float32)), self.metric)
            i, d = drop_self(i, start, distances=d)
            idx_parts.append(i)
            dist_parts.append(d)
            if pca is not None:
                proj_parts.append(pca.transform(x))
        proj = torch.cat(proj_parts) if proj_parts else None
        return torch.cat(idx_parts), torch.cat(dist_parts), proj

    def _collect(self, start: int, x: torch.Tensor) -> None:
        """Copy the rows of ``x`` that belong to the next query block into its buffer.

        The buffer holds about ``QUERY_BYTES / 2`` of float32: the block being searched and
        the next one being collected fit :data:`~._constants.QUERY_BYTES` together.
        """
        if self.block is None:
            rows = max(1, limits.QUERY_BYTES // (8 * x.shape[1]))
            rows = min(rows, self.shard.stop - self.q_lo)
            self.block = torch.empty((rows, x.shape[1]), dtype=torch.float32, device=self.device)
            self.filled = 0
        lo = self.q_lo + self.filled
        hi = self.q_lo + self.block.shape[0]
        a, b = max(lo, start), min(hi, start + x.shape[0])
        if b > a and a == lo:
            self.block[self.filled : self.filled + b - a] = x[a - start : b - start]
            self.filled += b - a

    def torch_passes(self, pca: _PCAHolder | None) -> tuple[Any, Any, Any]:
        """Exact search: each pass compares one block of query rows with every chunk."""
        idx_parts, dist_parts, proj_parts = [], [], []
        while self.q_lo < self.shard.stop:
            top = None
            if self.block is not None:
                if self.filled != self.block.shape[0]:
                    msg = "internal error: a streamed query block was not filled."
                    raise RuntimeError(msg)
                q, self.block = self.block, None
                if pca is not None:
                    proj_parts.append(pca.transform(q))
                top = _TopK(self.coords.inplace(q), self.q_lo, self.k, self.metric)
                self.q_lo += q.shape[0]
            for start, x in self.src.chunks():
                if top is not None:
                    top.update(start, self.coords(x.to(self.device)))
                if self.q_lo < self.shard.stop:
                    self._collect(start, x)
            self.passes += 1
            if top is not None:
                i, d = top.result()
                idx_parts.append(i.cpu())
                dist_parts.append(d.cpu())
        proj = torch.cat(proj_parts) if proj_parts else None
        return torch.cat(idx_parts), torch.cat(dist_parts), proj
