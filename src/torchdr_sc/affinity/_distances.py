"""Dense pairwise distances and metric conversions for the affinities.

The kNN search lives in :mod:`torchdr_sc.knn`: the affinities call
:func:`torchdr_sc.knn.knn` and read its graphs with :func:`distances_in`.
"""

from __future__ import annotations

import torch

from ..knn import KNNGraph


def pairwise_distances(
    x: torch.Tensor, y: torch.Tensor | None = None, metric: str = "sqeuclidean"
) -> torch.Tensor:
    """Distances between the rows of ``x`` and the rows of ``y`` (default ``x``).

    Parameters
    ----------
    x, y
        ``(n, d)`` and ``(m, d)`` float tensors.
    metric
        ``'sqeuclidean'``, ``'euclidean'``, ``'cosine'`` (``1 - cos``) or ``'manhattan'``.

    Returns
    -------
    torch.Tensor
        ``(n, m)`` distances. With ``y=None`` the matrix is exactly symmetric with a zero
        diagonal.
    """
    same = y is None
    if same and metric in ("sqeuclidean", "euclidean"):
        x = x - x.mean(dim=0)  # translation-invariant; smaller norms, smaller round-off
    y = x if y is None else y
    if metric in ("sqeuclidean", "euclidean"):
        out = _squared_euclidean(x, y)
    elif metric == "cosine":
        tiny = torch.finfo(x.dtype).tiny
        xn = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(tiny)
        yn = xn if same else y / torch.linalg.vector_norm(y, dim=1, keepdim=True).clamp_min(tiny)
        out = (1.0 - xn @ yn.T).clamp_(0.0, 2.0)
    elif metric == "manhattan":
        out = torch.cdist(x, y, p=1.0)
    else:
        msg = f"Unknown metric {metric!r}."
        raise ValueError(msg)
    if same:
        out = 0.5 * (out + out.T)
        out.fill_diagonal_(0.0)
    if metric == "euclidean":
        out = out.sqrt()
    return out


def _squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>``, with round-off noise snapped to 0.

    Values below the rounding error of that formula, ``4 eps (|x_i|^2 + |y_j|^2)``, cannot
    be told from 0; setting them to 0 keeps duplicated points at distance exactly 0.
    """
    xx = (x * x).sum(1)[:, None]
    yy = (y * y).sum(1)[None, :]
    sq = xx + yy - 2.0 * (x @ y.T)
    noise = (xx + yy).mul_(4.0 * torch.finfo(x.dtype).eps)
    return sq.masked_fill_(sq <= noise, 0.0)


def distances_in(knn: KNNGraph, metric: str) -> torch.Tensor:
    """Distances of a kNN graph in the units of ``metric``.

    Squared and plain euclidean distances convert into each other; any other mismatch is
    an error, since it would need a new neighbour search.
    """
    return convert_distances(knn.distances, knn.metric, metric)


def convert_distances(d: torch.Tensor, source: str, metric: str) -> torch.Tensor:
    """Distances ``d`` in the units of ``source`` converted to those of ``metric``
    (``d`` itself when they agree; see :func:`distances_in`)."""
    if source == metric:
        return d
    if (source, metric) == ("sqeuclidean", "euclidean"):
        return d.clamp_min(0.0).sqrt()
    if (source, metric) == ("euclidean", "sqeuclidean"):
        return d.square()
    msg = (
        f"The kNN graph holds {source!r} distances but the affinity uses "
        f"metric={metric!r}; compute the graph with metric={metric!r}."
    )
    raise ValueError(msg)


def off_diagonal(mat: torch.Tensor) -> torch.Tensor:
    """The ``(n, n - 1)`` matrix of the off-diagonal entries of a square matrix, by row."""
    n = mat.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=mat.device)
    return mat[keep].view(n, n - 1)


def scatter_off_diagonal(rows: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`off_diagonal`: a square matrix with a zero diagonal."""
    n = rows.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=rows.device)
    out = torch.zeros(n, n, dtype=rows.dtype, device=rows.device)
    out[keep] = rows.reshape(-1)
    return out
