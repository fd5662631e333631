"""The perplexity-calibrated input affinity shared by the t-SNE family.

TSNE, SNE, InfoTSNE, LargeVis and TSNEkhorn take a ``perplexity``; all but TSNEkhorn build
P with :class:`~torchdr_sc.affinity.EntropicAffinity` on a kNN graph of ``3 * perplexity``
neighbours (van der Maaten & Hinton 2008), symmetrised by the mean except for SNE. TSNE,
InfoTSNE and LargeVis therefore share one P for one perplexity (one cache entry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .._validation import check_number
from ..affinity import EntropicAffinity, SparseAffinity
from ..affinity.knn_union import sorted_neighbour_lists, symmetrize_sorted_knn
from ..distributed import DistContext
from ..knn import KNNGraph


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
        return symmetrize_sorted_knn(parts, self.p_symmetrization)
