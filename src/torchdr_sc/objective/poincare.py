"""The Poincaré ball of curvature -1: distances, the exponential map, parallel transport.

Points are rows ``y`` with ``|y| < 1``; the metric is the Euclidean one scaled by the
conformal factor ``lambda_y = 2 / (1 - |y|^2)``, so that

- the distance is ``d(x, y) = arccosh(1 + 2 |x - y|^2 / ((1 - |x|^2)(1 - |y|^2)))``, and
  ``d(0, y) = 2 artanh |y|``;
- the Riemannian gradient is the Euclidean one divided by ``lambda_y^2``, i.e. scaled by
  ``(1 - |y|^2)^2 / 4``;
- a step along a tangent vector ``u`` follows the geodesic, ``exp_y(u) = y (+)
  tanh(lambda_y |u| / 2) u / |u|`` with Möbius addition ``(+)``, and a tangent vector moves
  from ``x`` to ``y`` by the gyration ``gyr[y, -x]`` times ``lambda_x / lambda_y``.

Ganea, Bécigneul & Hofmann, *Hyperbolic Neural Networks*, NeurIPS 2018 (the formulas);
Bécigneul & Ganea, *Riemannian Adaptive Optimization Methods*, ICLR 2019 (their use in
Riemannian Adam). Every operation is elementwise (``sqrt``, ``log1p``, ``tanh``: the same
bits in PyTorch's vectorised and scalar loops) or a sum over the ``d`` coordinates of a row
(one thread per row): the same bits whatever the number of threads.
"""

from __future__ import annotations

import torch

__all__ = [
    "BOUNDARY_MARGIN",
    "acosh_ratio",
    "conformal_factor",
    "distance_to_origin",
    "expmap",
    "expmap0",
    "max_norm",
    "mobius_add",
    "project",
    "sqdist",
    "transport",
]

#: How far inside the unit sphere points are kept, by dtype: ``|y| <= 1 - margin``. In
#: float32, ``1 - |y|^2`` keeps about 3 significant digits at the float32 bound (a point
#: there is 12.2 from the origin, hyperbolic units); in float64, 9 digits (18.4 from it).
BOUNDARY_MARGIN = {torch.float32: 1e-5, torch.float64: 1e-8}


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a_i, b_i>`` of every row, as a column ``(n, 1)``."""
    return (a * b).sum(-1, keepdim=True)


def max_norm(dtype: torch.dtype) -> float:
    """The largest norm :func:`project` leaves a point of ``dtype`` with."""
    return 1.0 - BOUNDARY_MARGIN.get(dtype, 1e-5)


def project(y: torch.Tensor) -> torch.Tensor:
    """``y`` with every row longer than :func:`max_norm` shortened to it (a new tensor)."""
    limit = max_norm(y.dtype)
    norm = torch.sqrt(_rowdot(y, y))
    scale = torch.where(norm > limit, limit / norm.clamp_min(limit), torch.ones_like(norm))
    return y * scale


def conformal_factor(y: torch.Tensor) -> torch.Tensor:
    """``lambda_y = 2 / (1 - |y|^2)`` of every row, as a column."""
    return 2.0 / (1.0 - _rowdot(y, y))


def mobius_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Möbius addition ``x (+) y`` row by row."""
    xy, x2, y2 = _rowdot(x, y), _rowdot(x, x), _rowdot(y, y)
    numerator = (1.0 + 2.0 * xy + y2) * x + (1.0 - x2) * y
    return numerator / (1.0 + 2.0 * xy + x2 * y2)


def expmap(y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The point reached from ``y`` along the geodesic of initial velocity ``u``."""
    norm = torch.sqrt(_rowdot(u, u))
    safe = norm.clamp_min(torch.finfo(u.dtype).tiny)
    step = torch.tanh(conformal_factor(y) * norm / 2.0) * u / safe
    return mobius_add(y, step)


def expmap0(u: torch.Tensor) -> torch.Tensor:
    """``exp_0(u) = tanh(|u|) u / |u|``: Euclidean coordinates into the ball, the
    hyperbolic distance to the origin equal to ``2 |u|``."""
    norm = torch.sqrt(_rowdot(u, u))
    return torch.tanh(norm) * u / norm.clamp_min(torch.finfo(u.dtype).tiny)


def transport(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Parallel transport of the tangent vectors ``v`` at ``x`` to ``y`` (row by row):
    ``gyr[y, -x] v * lambda_x / lambda_y``."""
    u, w = y, -x
    uw, uv, wv = _rowdot(u, w), _rowdot(u, v), _rowdot(w, v)
    u2, w2 = _rowdot(u, u), _rowdot(w, w)
    a = -uv * w2 + wv + 2.0 * uw * wv
    b = -wv * u2 - uv
    gyrated = v + 2.0 * (a * u + b * w) / (1.0 + 2.0 * uw + u2 * w2)
    return gyrated * (conformal_factor(x) / conformal_factor(y))


def acosh_ratio(t: torch.Tensor) -> torch.Tensor:
    """``arccosh(1 + t) / sqrt(t (t + 2))`` for ``t >= 0``, 1 at ``t = 0`` (its limit)."""
    root = torch.sqrt(t * (t + 2.0))
    ratio = torch.log1p(t + root) / root.clamp_min(torch.finfo(t.dtype).tiny)
    return torch.where(t > 0, ratio, torch.ones_like(t))


def sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared hyperbolic distances between all rows of ``x`` and of ``y``: ``(m, n)``
    (for tests and evaluation; the objective computes them block by block)."""
    u = torch.cdist(x, y).square()
    ax = 1.0 - (x * x).sum(-1)
    ay = 1.0 - (y * y).sum(-1)
    t = 2.0 * u / (ax[:, None] * ay[None, :])
    return torch.log1p(t + torch.sqrt(t * (t + 2.0))).square()


def distance_to_origin(y: torch.Tensor) -> torch.Tensor:
    """``d(0, y) = 2 artanh |y| = log1p(2 |y| / (1 - |y|))`` of every row, ``(n,)``
    (``log1p``: PyTorch's ``atanh`` rounds differently in the vectorised and scalar parts of
    a thread's range, so its bits would depend on the thread count)."""
    r = torch.sqrt((y * y).sum(-1))
    return torch.log1p(2.0 * r / (1.0 - r))
