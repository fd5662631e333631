"""Gaussian affinity normalised along rows, columns or as a whole."""

from __future__ import annotations

from typing import Any

import torch

from .._validation import check_number
from ..knn import KNNGraph
from ._base import Affinity
from ._distances import distances_in
from .sparse import SparseAffinity

__all__ = ["NormalizedGaussianAffinity"]


def _check_normalization_dim(value: Any) -> tuple[int, int] | int | None:
    shown = "(0, 1), 0, 1, None"
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and sorted(value) == [0, 1]:
        return (0, 1)
    if value is None or (type(value) is int and value in (0, 1)):
        return value
    msg = f"`normalization_dim` must be one of {shown}; got {value!r}."
    raise ValueError(msg)


class NormalizedGaussianAffinity(Affinity):
    r"""Gaussian kernel :math:`K_{ij} = \exp(-D_{ij} / \sigma)`, zero diagonal, normalised.

    ``normalization_dim`` chooses the normalisation: ``(0, 1)`` divides by the sum of all
    entries (P sums to 1, the symmetric SNE affinity, van der Maaten & Hinton 2008);
    ``1`` makes every row sum to 1 (a Markov matrix, as in diffusion maps, Coifman & Lafon
    2006); ``0`` every column; ``None`` leaves K unnormalised. Marginals are controlled,
    not the entropy (compare :class:`EntropicAffinity`).

    Parameters
    ----------
    sigma
        Bandwidth, a float in (0, inf), in the units of ``D`` (squared distances for
        ``'sqeuclidean'``).
    normalization_dim
        ``(0, 1)``, ``0``, ``1`` or ``None``.
    metric, device, verbose
        See :class:`~torchdr_sc.affinity.Affinity`.

    Notes
    -----
    TorchDR divides the row- or column-normalised matrix by n as well; here rows (columns)
    sum to 1, like the other affinities of this package.
    """

    def __init__(
        self,
        sigma: float = 1.0,
        *,
        normalization_dim: tuple[int, int] | int | None = (0, 1),
        metric: str = "sqeuclidean",
        backend: str | None = "auto",
        device: Any = "auto",
        verbose: bool = False,
    ) -> None:
        super().__init__(metric=metric, backend=backend, device=device, verbose=verbose)
        self.sigma = check_number("sigma", sigma, low=0.0)
        self.normalization_dim = _check_normalization_dim(normalization_dim)

    def from_distances(self, D: torch.Tensor) -> torch.Tensor:
        """Dense normalised Gaussian affinity (diagonal excluded)."""
        D = self._check_distances(D)
        log_k = (-D / self.sigma).fill_diagonal_(float("-inf"))
        dim = self.normalization_dim
        if dim is not None:
            log_k = log_k - torch.logsumexp(log_k, dim=dim, keepdim=True)
        return log_k.exp()

    def from_knn(self, knn: KNNGraph) -> SparseAffinity:
        """Sparse version on the edges of a kNN graph (normalised over the stored edges)."""
        d = distances_in(knn, self.metric)
        log_k = -d / self.sigma
        dim = self.normalization_dim
        if dim == (0, 1):
            log_k = log_k - torch.logsumexp(log_k.reshape(-1), dim=0)
        elif dim == 1:
            log_k = log_k - torch.logsumexp(log_k, dim=1, keepdim=True)
        P = SparseAffinity.from_knn(knn.indices, log_k.exp())
        if dim == 0:
            # Column-wise log-sum-exp over the stored edges.
            flat = log_k.reshape(-1)
            top = torch.full((P.n,), float("-inf"), dtype=flat.dtype, device=flat.device)
            top = top.scatter_reduce(0, P.cols, flat, "amax")
            w = torch.exp(flat - top[P.cols])
            col = torch.zeros_like(top).index_add_(0, P.cols, w)
            P = SparseAffinity(P.rows, P.cols, w / col[P.cols], P.n)
        return P
