"""Dense affinity matching by autograd: a named loss between P and a differentiable Q.

The objective of ``AffinityMatcher`` and ``NeighborEmbedding`` (dense ``n x n`` matrices,
small n), built by :func:`~torchdr_sc.objective.make_objective` as ``'autograd'``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._validation import check_option
from ..affinity import SparseAffinity

__all__ = ["MATCHING_LOSSES", "AutogradObjective"]


#: Losses of :class:`AutogradObjective` between a dense P (summing to 1) and an output
#: affinity Q, with ``e`` the exaggeration.
def _square_loss(p: torch.Tensor, q: torch.Tensor, e: float) -> torch.Tensor:
    """``sum (e P - Q)^2``."""
    return ((e * p - q) ** 2).sum()


def _cross_entropy(p: torch.Tensor, q: torch.Tensor, e: float) -> torch.Tensor:
    """``-e sum P log(Q / sum Q)``."""
    q = q / q.sum()
    return -(e * p * torch.log(q.clamp_min(1e-30))).sum()


def _kl(p: torch.Tensor, q: torch.Tensor, e: float) -> torch.Tensor:
    """``e KL(P || Q / sum Q)``."""
    q = q / q.sum()
    log_q = torch.log(q.clamp_min(1e-30))
    return (p * (torch.log(p.clamp_min(1e-30)) - log_q)).sum() * e


def _neighbor_embedding(p: torch.Tensor, q: torch.Tensor, e: float) -> torch.Tensor:
    """``-e sum P_sym log Q + log sum Q`` (TorchDR's neighbour-embedding loss)."""
    p = (p + p.T) / 2
    return -(e * p * torch.log(q.clamp_min(1e-30))).sum() + torch.log(q.sum())


#: The autograd objective's losses by name (``AffinityMatcher.loss_fn`` takes the first three).
MATCHING_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "cross_entropy": _cross_entropy,
    "kl": _kl,
    "square_loss": _square_loss,
    "neighbor_embedding": _neighbor_embedding,
}


class AutogradObjective:
    """Any differentiable output affinity matched to a dense P by a named loss, the gradient
    by autograd (``AffinityMatcher``, ``NeighborEmbedding``; dense, small n).

    Parameters
    ----------
    P
        The input affinity (made dense and scaled to sum 1).
    output
        ``output(z)``: the dense output affinity, differentiable in ``z``.
    loss
        A key of :data:`MATCHING_LOSSES`.
    dtype
        The embedding's dtype.
    """

    path = "autograd"

    def __init__(
        self,
        P: SparseAffinity,
        *,
        output: Callable[[torch.Tensor], torch.Tensor],
        loss: str,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_option("loss", loss, tuple(MATCHING_LOSSES))
        p = P.to(dtype=dtype).to_dense()
        self.p, self.output, self.loss = p / p.sum(), output, MATCHING_LOSSES[loss]

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient at ``z``."""
        zz = z.detach().requires_grad_(True)
        value = self.loss(self.p, self.output(zz), phase.exaggeration)
        return torch.autograd.grad(value, zz)[0]
