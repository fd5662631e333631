"""Batched, safeguarded Newton root search over one scalar parameter per row.

Entropic affinities (one bandwidth per row, Hinton & Roweis 2002) and UMAP's fuzzy
simplicial sets (one ``sigma`` per row, McInnes et al. 2018) both calibrate every row of a
distance matrix by solving a monotone scalar equation ``f_i(x_i) = target_i``. This module
solves all the rows at once, without a Python loop over rows: every iteration evaluates the
rows that have not converged yet, keeps a bracket ``[lower_i, upper_i]`` around each root
and takes a Newton step when it falls inside the bracket and shrinks fast enough, a
bisection step otherwise (the classic ``rtsafe`` safeguard, Press et al., *Numerical
Recipes*, 3rd ed., section 9.4). The parameter is meant to be searched in the log domain,
which keeps the bracket finite for any distance scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["RootSearchResult", "RowFunction", "root_search"]

#: ``fn(x, rows) -> (f, df)``: values (and derivatives, or None) of the row functions of
#: the rows ``rows`` (int64 indices) at the points ``x`` (one per listed row).
RowFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class RootSearchResult:
    """Outcome of :func:`root_search`.

    Attributes
    ----------
    x
        ``(n,)`` the parameter of every row.
    n_iter
        Number of iterations run (evaluations of the slowest row).
    n_unconverged
        Rows whose residual is still above ``tol``: their root lies outside the bracket
        (the parameter then sits at the nearest bound, the limit of the row) or the
        iteration budget ran out.
    """

    x: torch.Tensor
    n_iter: int
    n_unconverged: int


def _as_rows(value: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    out = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return out.expand(n).clone()


def root_search(
    fn: RowFunction,
    target: float | torch.Tensor,
    lower: float | torch.Tensor,
    upper: float | torch.Tensor,
    *,
    n: int,
    like: torch.Tensor,
    increasing: bool,
    x0: float | torch.Tensor | None = None,
    tol: float = 1e-5,
    max_iter: int = 1000,
) -> RootSearchResult:
    """Solve ``fn_i(x_i) = target_i`` for every row ``i`` at once.

    Parameters
    ----------
    fn
        Row functions, see :data:`RowFunction`. They must be monotone on the bracket.
        Returning derivatives enables Newton steps; ``None`` gives pure bisection.
    target
        Scalar or ``(n,)`` target values.
    lower, upper
        Scalar or ``(n,)`` bracket. A root outside it is not searched for: the parameter
        ends at the nearest bound (and the row counts as unconverged).
    n
        Number of rows.
    like
        Tensor whose dtype and device the parameters take.
    increasing
        Whether every ``fn_i`` increases with ``x``.
    x0
        Starting point (default: middle of the bracket).
    tol
        Stop a row when ``|fn_i(x_i) - target_i| <= tol``.
    max_iter
        Maximum number of iterations.

    Returns
    -------
    RootSearchResult
        Parameters, iteration count and the number of rows that did not reach ``tol``.
    """
    lo = _as_rows(lower, n, like)
    hi = _as_rows(upper, n, like)
    tgt = _as_rows(target, n, like)
    x = 0.5 * (lo + hi) if x0 is None else _as_rows(x0, n, like)
    x = torch.minimum(torch.maximum(x, lo), hi)
    eps = torch.finfo(like.dtype).eps
    # Steps of the last two iterations, for the rtsafe "shrinks fast enough" test.
    step = hi - lo
    step_old = step.clone()
    rows = torch.arange(n, device=like.device)
    converged = torch.zeros(n, dtype=torch.bool, device=like.device)
    n_iter = 0
    while rows.numel() and n_iter < max_iter:
        n_iter += 1
        xa, loa, hia = x[rows], lo[rows], hi[rows]
        f, df = fn(xa, rows)
        err = f - tgt[rows]
        ok = err.abs() <= tol
        # Root to the left of x when f is already above (increasing) / below the target.
        left = err > 0 if increasing else err < 0
        hia = torch.where(left, xa, hia)
        loa = torch.where(left, loa, xa)
        mid = 0.5 * (loa + hia)
        new = mid
        new_step = xa - mid
        if df is not None:
            newton_step = err / df
            newton = xa - newton_step
            use = (
                torch.isfinite(newton)
                & (newton > loa)
                & (newton < hia)
                & (newton_step.abs() <= 0.5 * step_old[rows].abs())
            )
            new = torch.where(use, newton, mid)
            new_step = torch.where(use, newton_step, new_step)
        scale = torch.clamp(xa.abs(), min=1.0)
        stalled = ((hia - loa) <= 4 * eps * scale) | ((new - xa).abs() <= 2 * eps * scale)
        done = ok | stalled | ~torch.isfinite(err)
        converged[rows] = ok
        x[rows] = torch.where(done, xa, new)
        lo[rows], hi[rows] = loa, hia
        step_old[rows] = step[rows]
        step[rows] = new_step
        rows = rows[~done]
    return RootSearchResult(x, n_iter, int((~converged).sum()))
