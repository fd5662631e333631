"""The perplexity-calibrated input affinity shared by the t-SNE family.

TSNE, SNE, InfoTSNE, LargeVis and TSNEkhorn take a ``perplexity``; all but TSNEkhorn build
P with :class:`~torchdr_sc.affinity.EntropicAffinity` on a kNN graph of ``3 * perplexity``
neighbours (van der Maaten & Hinton 2008), symmetrised by the mean except for SNE. TSNE,
InfoTSNE and LargeVis therefore share one P for one perplexity (one cache entry).

Under ``torchrun`` TSNE keeps P sharded by rows (:attr:`PerplexityMixin.keeps_row_blocks`):
each process searches, calibrates and symmetrises its own block of rows
(:func:`~torchdr_sc.affinity.shard_union.symmetrize_row_block`) and never holds the whole
graph or the whole P, so the memory they take per process falls as processes are added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .._validation import check_number
from ..affinity import EntropicAffinity, SparseAffinity
from ..affinity.knn_union import sorted_neighbour_lists, symmetrize_sorted_knn
from ..affinity.shard_union import symmetrize_row_block
from ..distributed import DistContext
from ..knn import KNNGraph
from ._stages import search_knn


@dataclass(kw_only=True, eq=False, repr=False)
class PerplexityMixin:
    """``perplexity`` and the entropic input affinity, for an :class:`Embedder` subclass.

    Parameters
    ----------
    perplexity
        Effective number of neighbours of the entropic affinity.
    """

    perplexity: float = 30.0
    #: How the row-stochastic P is symmetrised: ``'mean'`` ((P + P^T) / 2) or ``'none'``.
    p_symmetrization: ClassVar[str] = "mean"
    #: Whether P may stay sharded by rows under ``torchrun``: only for objectives that read
    #: the edges of their own rows alone (TSNE's attraction), with an initialisation that
    #: does not need the whole P (every one but ``'spectral'``).
    keeps_row_blocks: ClassVar[bool] = False

    def holds_row_blocks(self, ctx: DistContext | None) -> bool:
        """Whether a fit in ``ctx`` keeps P sharded by rows (see :attr:`keeps_row_blocks`)."""
        spectral = isinstance(self.init, str) and self.init == "spectral"
        return bool(ctx is not None and ctx.active and self.keeps_row_blocks and not spectral)

    def _search_knn(self, x: Any, ctx: DistContext) -> KNNGraph:
        """The kNN graph: this process's rows only when P stays sharded."""
        return search_knn(self, x, ctx, gather=not self.holds_row_blocks(ctx))

    def _check_perplexity(self) -> None:
        check_number("perplexity", self.perplexity, low=0)

    def _base_neighbours(self) -> int:
        return math.ceil(3 * self.perplexity)

    def neighbours_needed(self, n: int) -> int:
        """Neighbours per sample for P: ``3 * perplexity``, at most ``n - 1``."""
        return min(math.ceil(3 * self.perplexity), n - 1)

    def check_n_samples(self, n: int) -> None:
        """Check that ``perplexity`` is below ``n``, then the shared checks."""
        if n >= 2 and self.perplexity >= n:
            msg = (
                f"perplexity ({self.perplexity:g}) must be smaller than the number of "
                f"samples ({n})."
            )
            raise ValueError(msg)
        super().check_n_samples(n)

    def _min_samples_text(self) -> str:
        return f"perplexity ({self.perplexity:g})"

    def affinity_params(self) -> dict[str, Any]:
        """Parameters that determine P (TSNE, InfoTSNE and LargeVis share them)."""
        return {
            "affinity": "EntropicAffinity",
            "perplexity": float(self.perplexity),
            "metric": self.metric_in,
            "symmetrize": self.p_symmetrization,
        }

    def _entropic_affinity(self) -> EntropicAffinity:
        return EntropicAffinity(
            perplexity=self.perplexity,
            tol=self.tol_affinity,
            max_iter=self.max_iter_affinity,
            metric=self.metric_in,
        )

    def _affinity_from_knn(self, knn: KNNGraph) -> SparseAffinity:
        return self._affinity_from_parts(self._affinity_parts(knn, None), None)

    def _affinity_parts(self, knn: KNNGraph, ctx: DistContext | None) -> list:
        """The calibrated rows of P and their neighbours, all the graph is needed for.

        Under ``torchrun`` each process calibrates its block of rows, then all gather:
        the rows are calibrated independently, so the gathered P is the one-process P.
        The neighbour lists are sorted (int32 ids) for the symmetrisation.
        """
        affinity = self._entropic_affinity()
        if self.holds_row_blocks(ctx):
            start, stop = ctx.shard.start, ctx.shard.stop
            if knn.n_samples == ctx.n:  # a whole graph (given, or gathered from a stream)
                knn = KNNGraph(knn.indices[start:stop], knn.distances[start:stop], knn.metric)
            p = affinity.rows_from_knn(knn, 0, knn.n_samples)  # this process's rows
            return list(sorted_neighbour_lists(knn.indices[:, : p.shape[1]], p))
        if ctx is not None and ctx.active:
            rows = affinity.rows_from_knn(knn, ctx.shard.start, ctx.shard.stop)
            p = ctx.all_gather_rows(rows, knn.n_samples)
        else:
            p = affinity.rows_from_knn(knn, 0, knn.n_samples)
        indices = knn.indices[:, : p.shape[1]]
        if self.p_symmetrization == "none":
            return [indices, p]
        return list(sorted_neighbour_lists(indices, p))

    def _affinity_from_parts(self, parts: list, ctx: DistContext | None) -> SparseAffinity:
        """P from :meth:`_affinity_parts`' list (emptied, so that it is freed when used):
        directed (SNE) or symmetrised with
        :func:`~torchdr_sc.affinity.knn_union.symmetrize_sorted_knn` (12 bytes per edge)."""
        if self.p_symmetrization == "none":
            indices, p = parts
            parts.clear()
            return SparseAffinity.from_knn(indices, p)
        if ctx is not None and self.holds_row_blocks(ctx):
            cols, p = parts
            parts.clear()
            return symmetrize_row_block(
                cols,
                p,
                self.p_symmetrization,
                start=ctx.shard.start,
                n=ctx.n,
                block_starts=ctx.block_starts(),
                exchange=ctx.exchange,
            )
        return symmetrize_sorted_knn(parts, self.p_symmetrization)
