"""Preconditioned conjugate gradient, for the Newton steps of the dual solvers."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["conjugate_gradient"]


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    rtol: float = 1e-6,
    max_iter: int = 200,
) -> torch.Tensor:
    """Solve ``A x = b`` for a symmetric positive (semi-)definite operator ``A``.

    Hestenes & Stiefel (1952) with a preconditioner ``M^{-1}`` (``precond``); stops when
    ``||r|| <= rtol * ||b||``. Only matrix-vector products are needed, so the Newton systems
    of the dual problems are solved without forming their Hessians.

    Parameters
    ----------
    matvec
        ``v -> A v``.
    b
        Right-hand side (any shape; treated as a flat vector).
    precond
        ``r -> M^{-1} r`` (identity by default).
    rtol
        Relative residual tolerance.
    max_iter
        Maximum number of iterations.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    z = precond(r) if precond is not None else r
    p = z.clone()
    rz = torch.sum(r * z)
    stop = rtol * torch.linalg.vector_norm(b)
    for _ in range(max_iter):
        if torch.linalg.vector_norm(r) <= stop:
            break
        ap = matvec(p)
        curv = torch.sum(p * ap)
        if not curv > 0:
            break
        alpha = rz / curv
        x = x + alpha * p
        r = r - alpha * ap
        z = precond(r) if precond is not None else r
        rz_new = torch.sum(r * z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x
