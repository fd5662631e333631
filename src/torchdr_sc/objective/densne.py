"""den-SNE: t-SNE's gradient plus a term that keeps each cell's local density.

den-SNE (Narayan, Berger & Cho, *Assessing single-cell transcriptomic variability through
density-preserving data visualization*, Nat. Biotechnol. 39, 2021; the ``densne`` program of
the ``densvis`` package) gives every point a *local radius* in the data and in the
embedding and rewards their correlation across points.

- In the data, ``R_j = log(sum_k P_jk d_jk^2 / sum_k P_jk)`` over the edges of row ``j`` of
  t-SNE's symmetric input affinity P (squared distances in the data), standardised across
  points (mean 0, sample standard deviation 1).
- In the embedding, ``r_j = log(sum_k phi_jk e_jk^2 / sum_k phi_jk)`` over the same edges,
  with t-SNE's Cauchy kernel ``phi_jk = 1 / (1 + e_jk^2)`` and ``e_jk = |z_j - z_k|`` (the
  normaliser of Q cancels in the ratio, so these are the Q-weighted mean squared distances).
- The term rewards ``corr = sum_j (r_j - mean r) R_j / ((n - 1) s)``, with ``s^2`` the
  sample variance of ``r`` plus ``dens_var_shift`` (which keeps the term bounded while the
  radii are nearly equal; without it, ``corr`` is Pearson's), weighted by ``dens_lambda``
  as below.

The gradient is the closed form of that correlation over P's edges: an edge ``(j, k)``
moves ``z_j`` by ``2 phi_jk^2 (u_j + u_k) (z_j - z_k)`` times the weight below, where
``u_m = (d corr / d r_m) (1 + x_m) / ((eps + x_m) sum_k phi_mk)`` and ``x_m`` is the Cauchy-
weighted mean squared distance of point ``m`` (``eps``: :data:`~.density.RADIUS_EPS`, added
in the logarithm as densMAP's radii do; den-SNE adds none). The weight: the ``densne``
program adds ``dens_lambda`` times *half* the correlation's gradient to *a quarter* of the
KL gradient (Barnes-Hut t-SNE's scaling); this package's t-SNE gradient is the full one, so
the term here is ``2 * dens_lambda`` times the correlation's gradient, the same balance
between the two terms, i.e. the loss ``KL(P || Q) - 2 dens_lambda corr``.

Where this stands against ``densne``. Its radii in the embedding are, as here, sums over the
edges of the (sparse, kNN-based) P at the current positions, not over all pairs: its
Barnes-Hut tree only serves the KL repulsion (here exact or FFT-interpolated). What
differs: the ``eps`` above; the first iteration with the term, ``(t + 1) / max_iter > 1 -
dens_frac`` (densMAP's rule, exactly the last ``dens_frac`` of the iterations; ``densne``
starts one iteration earlier); every row's sums run in the edges' order (the same bits for
any number of threads); and under ``torchrun`` a process sums the rows it owns, the
per-point radii gathered from all processes (as :mod:`~torchdr_sc.objective.density`
does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._logging import get_logger
from .._reduce import fixed_order_sum
from ..affinity import SparseAffinity
from ..distributed import RowShard
from .density import (
    BLOCK_EDGES,
    RADIUS_EPS,
    edge_sq_distances,
    first_density_epoch,
    log_radius,
    row_blocks,
    row_sums,
)

__all__ = ["DenSNEObjective", "DenSNETerm", "sample_standardised"]

logger = get_logger(__name__)


def sample_standardised(values: torch.Tensor) -> torch.Tensor:
    """``(v - mean) / std`` with the sample (``n - 1``) standard deviation, summed in a
    fixed order (den-SNE's standardisation of the data's radii)."""
    n = values.numel()
    mean = fixed_order_sum(values) / n
    centred = values - mean
    std = torch.sqrt(fixed_order_sum(centred.square()) / max(n - 1, 1))
    return centred / std.clamp_min(torch.finfo(values.dtype).tiny)


class DenSNETerm:
    """The gradient of den-SNE's correlation term over the rows one process owns.

    Parameters
    ----------
    P
        t-SNE's symmetric input affinity, edges grouped by row (both directions stored).
    input_sq_dist
        ``(P.nnz,)`` squared distances in the data at P's edges
        (:func:`~torchdr_sc.objective.density.edge_sq_distances`).
    dens_lambda
        Weight of the correlation term (den-SNE's ``dens_lambda``).
    dens_var_shift
        Added to the sample variance of the embedding's log radii (den-SNE's ``var_shift``).
    shard
        Rows this process owns (default: all).
    gather
        Assembles an ``(n,)`` vector from every process's owned rows (``None``: one
        process).

    Attributes
    ----------
    input_log_radius
        ``(n,)`` log local radius of every point in the data (den-SNE's ``ro``).
    """

    def __init__(
        self,
        P: SparseAffinity,
        input_sq_dist: torch.Tensor,
        *,
        dens_lambda: float,
        dens_var_shift: float,
        shard: RowShard | None = None,
        gather: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    ) -> None:
        self.n = P.n
        self.rows, self.cols, self.weights = P.rows, P.cols, P.weights
        self.counts = torch.bincount(self.rows, minlength=self.n)
        self.crow = torch.cat([self.counts.new_zeros(1), self.counts.cumsum(0)])
        self.shard = shard if shard is not None else RowShard.full(self.n)
        self.gather = gather
        self.dens_lambda, self.var_shift = float(dens_lambda), float(dens_var_shift)
        self.input_log_radius = log_radius(
            self.weights, input_sq_dist.to(self.weights), self.counts
        )
        self.input_std_radius = sample_standardised(self.input_log_radius)
        self.blocks = row_blocks(self.crow, self.shard.start, self.shard.stop, BLOCK_EDGES)

    def _block_edges(self) -> list[tuple[int, int, slice]]:
        crow = self.crow
        pairs = zip(self.blocks[:-1], self.blocks[1:], strict=True)
        return [(r0, r1, slice(int(crow[r0]), int(crow[r1]))) for r0, r1 in pairs]

    def _kernel(
        self, z: torch.Tensor, edges: slice
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``diff = z_j - z_k``, ``e^2 = |diff|^2`` and ``phi = 1 / (1 + e^2)`` on ``edges``."""
        diff = z[self.rows[edges]] - z[self.cols[edges]]
        d2 = diff.square().sum(1)
        return diff, d2, 1.0 / (1.0 + d2)

    def embedding_radii(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, phi_sum)`` of every point of ``z``: the Cauchy-weighted mean squared
        distance over its edges (``log(eps + x)`` is its log radius) and its kernel sum."""
        parts_x, parts_s = [], []
        for r0, r1, edges in self._block_edges():
            _, d2, phi = self._kernel(z, edges)
            counts = self.counts[r0:r1]
            total = row_sums(phi, counts)
            parts_x.append(row_sums(phi * d2, counts) / total)
            parts_s.append(total)
        mean_sq = torch.cat(parts_x) if parts_x else z.new_zeros(0)
        phi_sum = torch.cat(parts_s) if parts_s else z.new_zeros(0)
        if self.gather is not None:
            mean_sq, phi_sum = self.gather(mean_sq, self.n), self.gather(phi_sum, self.n)
        return mean_sq, phi_sum

    def correlation(self, z: torch.Tensor) -> float:
        """The term's correlation at ``z`` (the loss adds ``-2 dens_lambda`` times it)."""
        radius = torch.log(RADIUS_EPS + self.embedding_radii(z)[0])
        return float(self._statistics(radius)[2])

    def _statistics(self, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(r - mean r, s, corr)`` of the embedding's log radii."""
        n = self.n
        centred = radius - fixed_order_sum(radius) / n
        std = torch.sqrt(fixed_order_sum(centred.square()) / (n - 1) + self.var_shift)
        corr = fixed_order_sum(centred * self.input_std_radius) / ((n - 1) * std)
        return centred, std, corr

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """The term's gradient ``(n, d)`` (zero outside the owned rows; descend along it)."""
        mean_sq, phi_sum = self.embedding_radii(z)
        radius = torch.log(RADIUS_EPS + mean_sq)
        centred, std, corr = self._statistics(radius)
        n = self.n
        # d corr / d r_m, then through r_m = log(eps + x_m) and x_m's ratio of sums
        d_corr = (self.input_std_radius - corr * centred / std) / ((n - 1) * std)
        u = d_corr * (1.0 + mean_sq) / ((RADIUS_EPS + mean_sq) * phi_sum)
        scale = -4.0 * self.dens_lambda  # -2 lambda corr, and d e^2 / d z_j = 2 (z_j - z_k)
        grad = torch.zeros_like(z)
        for r0, r1, edges in self._block_edges():
            diff, _, phi = self._kernel(z, edges)
            coeff = scale * phi.square() * (u[self.rows[edges]] + u[self.cols[edges]])
            terms = coeff[:, None] * diff
            counts = self.counts[r0:r1]
            for c in range(z.shape[1]):
                grad[r0:r1, c] = row_sums(terms[:, c].contiguous(), counts)
        return grad


class DenSNEObjective:
    """t-SNE's objective plus den-SNE's density term over its last ``dens_frac`` iterations.

    Parameters
    ----------
    P
        t-SNE's symmetric input affinity.
    data
        ``(n, d)`` the data P was built on (the radii in the data are measured in it).
    metric
        P's metric, one of :data:`~torchdr_sc.objective.density.DENSITY_METRICS`.
    dens_lambda, dens_var_shift, gather
        As for :class:`DenSNETerm`.
    dens_frac
        Fraction of the iterations, at the end, with the density term.
    max_iter
        Iterations of the fit.
    **tsne
        The keyword arguments of :class:`~torchdr_sc.objective.methods.TSNEObjective`
        (``shard`` included; not ``reference``).
    """

    def __init__(
        self,
        P: SparseAffinity,
        *,
        data: torch.Tensor,
        metric: str,
        dens_lambda: float,
        dens_frac: float,
        dens_var_shift: float,
        max_iter: int,
        gather: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        **tsne: Any,
    ) -> None:
        from .methods import TSNEObjective

        if tsne.get("reference") is not None:
            msg = "den-SNE's term has no transform form: pass reference=None."
            raise ValueError(msg)
        self.tsne = TSNEObjective(P, **tsne)
        input_sq_dist = edge_sq_distances(data.to(P.device), P.rows, P.cols, metric)
        self.term = DenSNETerm(
            P,
            input_sq_dist,
            dens_lambda=dens_lambda,
            dens_var_shift=dens_var_shift,
            shard=tsne.get("shard"),
            gather=gather,
        )
        self.first_iteration = first_density_epoch(int(max_iter), float(dens_frac))
        self._warned = False

    @property
    def path(self) -> str:
        """t-SNE's path, with the density term."""
        return f"{self.tsne.path}, density term"

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient of iteration ``iteration`` at ``z``."""
        grad = self.tsne(z, iteration, phase)
        if iteration >= self.first_iteration and self.term.dens_lambda > 0:
            if phase.exaggeration != 1 and not self._warned:
                self._warned = True
                logger.warning(
                    "den-SNE's density term starts at iteration %d, inside early "
                    "exaggeration, while the embedding is still compact: there it outweighs "
                    "t-SNE's loss and can break the clusters. Lower dens_frac (the term "
                    "should start after the exaggeration phase).",
                    iteration,
                )
            grad = grad.add_(self.term(z))
        return grad
