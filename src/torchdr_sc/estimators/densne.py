"""den-SNE's options for :class:`~torchdr_sc.estimators.TSNE` (Narayan et al. 2021).

The density term itself is an objective (:mod:`~torchdr_sc.objective.densne`); this module
holds what the estimator adds around it: the parameters (named as densMAP's options of
:class:`~torchdr_sc.estimators.UMAP`, with den-SNE's defaults), their checks, the
objective's options, and the local radii reported with ``output_dens``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..affinity import EntropicAffinity, SparseAffinity
from ..affinity.knn_union import sorted_neighbour_lists, symmetrize_sorted_knn
from ..distributed import DistContext
from ..knn import knn
from ..quality import graph_log_radius
from .densmap import check_density_options


@dataclass(kw_only=True, eq=False, repr=False)
class DenSNEOptions:
    """den-SNE's parameters: densMAP's names, the ``densne`` program's defaults.

    Parameters
    ----------
    densne
        Add den-SNE's density-preservation term (Narayan, Berger & Cho, Nat. Biotechnol.
        2021): the embedding then keeps which populations are tight and which diffuse.
    dens_lambda
        Weight of the density term against t-SNE's loss (den-SNE's default 0.1).
    dens_frac
        Fraction of the iterations, at the end, that include the density term (0.3).
    dens_var_shift
        Added to the variance of the embedding's log radii in the term (den-SNE's fixed
        ``var_shift``, 0.1).
    output_dens
        Also compute every point's log local radius in the data and in the embedding
        (``rad_orig_``, ``rad_emb_``; with or without ``densne``).
    """

    densne: bool = False
    dens_lambda: float = 0.1
    dens_frac: float = 0.3
    dens_var_shift: float = 0.1
    output_dens: bool = False

    def _check_density_params(self) -> None:
        check_density_options(self, "densne")

    def needs_data_distances(self) -> bool:
        """Whether the fit needs the data's distances at P's edges."""
        return bool(self.densne or self.output_dens)


def densne_options(est: Any, data: Any, ctx: DistContext, max_iter: int) -> dict[str, Any]:
    """The keyword arguments of the ``'densne'`` objective beyond t-SNE's."""
    return {
        "data": data,
        "metric": est.metric_in,
        "dens_lambda": float(est.dens_lambda),
        "dens_frac": float(est.dens_frac),
        "dens_var_shift": float(est.dens_var_shift),
        "max_iter": int(max_iter),
        "gather": ctx.all_gather_rows if ctx.active else None,
    }


def embedding_affinity(z: torch.Tensor, perplexity: float) -> SparseAffinity:
    """t-SNE's symmetric entropic P of the points ``z`` (Euclidean, ``3 * perplexity``
    neighbours, at most ``n - 1``), as ``densne`` builds it on the embedding for its
    reported radii."""
    n = z.shape[0]
    k = min(math.ceil(3 * perplexity), n - 1)
    graph = knn(z, k, backend="torch", metric="sqeuclidean")
    affinity = EntropicAffinity(perplexity=min(float(perplexity), k), metric="sqeuclidean")
    rows = affinity.rows_from_knn(graph, 0, n)
    parts = list(sorted_neighbour_lists(graph.indices[:, : rows.shape[1]], rows))
    return symmetrize_sorted_knn(parts, "mean")


def record_radii(est: Any, P: SparseAffinity, data: torch.Tensor, z: torch.Tensor) -> None:
    """Set ``rad_orig_`` (P-weighted, on the fit's P and data) and ``rad_emb_`` (on the
    embedding's own entropic P of the same perplexity, as ``densne`` reports them),
    numpy ``(n,)``."""
    est.rad_orig_ = graph_log_radius(P, data, est.metric_in)
    points = z.detach().float().cpu()
    est.rad_emb_ = graph_log_radius(
        embedding_affinity(points, float(est.perplexity)), points, "euclidean"
    )
