"""densMAP: UMAP's epoch plus a term that keeps each cell's local density.

densMAP (Narayan, Berger & Cho, *Assessing single-cell transcriptomic variability through
density-preserving data visualization*, Nat. Biotechnol. 39, 2021) measures every point's
*local radius*: the weighted mean of the squared distances to its neighbours in the UMAP
graph, ``log(sum_k w_jk d_jk^2 / sum_k w_jk)``. In the data the weights are the graph's
memberships; in the embedding they are the embedding kernel ``phi = 1 / (1 + a d^{2b})``.
Over the last ``dens_frac`` of the epochs, the loss gains ``-dens_lambda`` times the
correlation between the two log radii (standardised in the data; in the embedding with a
variance floor ``dens_var_shift``), so that tight populations stay tight and diffuse ones
diffuse.

How this module applies it. umap-learn adds the term's gradient to every edge it samples in
an epoch (edge ``e`` with rate ``r_e = w_e / max w``); here every edge of the graph
contributes ``r_e`` times its clipped term in each epoch - the expected step of the sampled
scheme, without its noise - summed row by row in the graph's order (the same bits whatever
the thread count). The per-point radii of the embedding and the correlation's statistics
are taken once per epoch from the positions at its start, as umap-learn does. The sampled
attraction and repulsion are the UMAP epoch's own
(:class:`~torchdr_sc.objective.methods.NegativeSamplingObjective`). Under ``torchrun`` a
process sums the rows it owns and the per-point radii are gathered from all processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._reduce import fixed_order_sum
from ..affinity import SparseAffinity
from ..distributed import RowShard

#: Added inside the logarithm of a local radius (umap-learn's constant).
RADIUS_EPS = 1e-8
#: Coordinate-wise bound on one edge's density step (umap-learn's ``clip``).
DENSITY_CLIP = 4.0
#: Edges per block of rows: the per-edge temporaries stay small.
BLOCK_EDGES = 1 << 21
#: Squared distances are clamped at this before a power is taken.
POW_FLOOR = 1e-12
#: The input metrics whose pair distance :func:`edge_sq_distances` computes.
DENSITY_METRICS = ("sqeuclidean", "euclidean", "cosine", "manhattan")


def row_blocks(crow: torch.Tensor, start: int, stop: int, block_edges: int) -> list[int]:
    """Row boundaries ``[start, ..., stop]`` cutting rows ``start:stop`` into blocks of about
    ``block_edges`` edges (whole rows)."""
    first, last = int(crow[start]), int(crow[stop])
    targets = torch.tensor(list(range(first + block_edges, last, block_edges)), dtype=crow.dtype)
    inner = torch.searchsorted(crow, targets).tolist()
    return sorted({start, *[min(max(r, start), stop) for r in inner], stop})


def edge_sq_distances(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, metric: str
) -> torch.Tensor:
    """The squared ``metric`` distance between the ends of every edge, ``(n_edges,)``.

    densMAP's radius in the data averages squared distances in the metric of the graph
    (the Euclidean one for ``'sqeuclidean'``, as UMAP's graph uses it); computed in blocks
    of edges.
    """
    if metric not in DENSITY_METRICS:
        msg = f"densMAP supports the metrics {DENSITY_METRICS}; got {metric!r}."
        raise ValueError(msg)
    out = torch.empty(rows.shape[0], dtype=x.dtype, device=x.device)
    if metric == "cosine":
        norms = torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12)
    step = max(1, BLOCK_EDGES // max(1, x.shape[1]))
    for s in range(0, rows.shape[0], step):
        a, b = x[rows[s : s + step]], x[cols[s : s + step]]
        if metric in ("sqeuclidean", "euclidean"):
            out[s : s + step] = (a - b).square_().sum(1)
        elif metric == "manhattan":
            out[s : s + step] = (a - b).abs_().sum(1).square_()
        else:
            cos = (a * b).sum(1) / (norms[rows[s : s + step]] * norms[cols[s : s + step]])
            out[s : s + step] = (1.0 - cos).square_()
    return out


def power(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """``x ** exponent`` for ``x > 0`` as ``exp(exponent log x)``: PyTorch's ``pow`` rounds
    the last elements of each thread's range differently, this gives the same bits whatever
    the thread count."""
    return torch.exp(torch.log(x) * exponent)


def row_sums(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each row's sum of its edges' ``values`` (edges grouped by row), in the edges' order."""
    return torch.segment_reduce(values, "sum", lengths=counts, unsafe=True)


def log_radius(weights: torch.Tensor, sq_dist: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``log(eps + sum_k w_jk d_jk^2 / sum_k w_jk)`` for every row ``j`` (edges by row)."""
    total = row_sums(weights, counts)
    spread = row_sums(weights * sq_dist, counts)
    return torch.log(RADIUS_EPS + spread / total.clamp_min(torch.finfo(total.dtype).tiny))


def standardised(values: torch.Tensor) -> torch.Tensor:
    """``(v - mean) / std`` with the population standard deviation, in a fixed order."""
    n = values.numel()
    mean = fixed_order_sum(values) / n
    std = torch.sqrt(fixed_order_sum((values - mean).square()) / n)
    return (values - mean) / std.clamp_min(torch.finfo(values.dtype).tiny)


class DensityTerm:
    """The gradient of densMAP's correlation term over the rows one process owns.

    Parameters
    ----------
    P
        The symmetric UMAP graph, edges grouped by row (both directions stored).
    input_sq_dist
        ``(P.nnz,)`` squared distances in the data at P's edges (:func:`edge_sq_distances`).
    a, b
        The UMAP embedding kernel's constants.
    dens_lambda
        Weight of the correlation term.
    dens_var_shift
        Added to the variance of the embedding's log radii (keeps the term bounded while
        the embedding's radii are nearly equal).
    shard
        Rows this process owns.
    gather
        Assembles an ``(n,)`` vector from every process's owned rows (``None``: one
        process).

    Attributes
    ----------
    input_log_radius
        ``(n,)`` log local radius of every point in the data (densMAP's ``rad_orig``).
    """

    def __init__(
        self,
        P: SparseAffinity,
        input_sq_dist: torch.Tensor,
        *,
        a: float,
        b: float,
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
        self.a, self.b = float(a), float(b)
        self.dens_lambda, self.var_shift = float(dens_lambda), float(dens_var_shift)
        self.input_log_radius = log_radius(
            self.weights, input_sq_dist.to(self.weights), self.counts
        )
        self.input_std_radius = standardised(self.input_log_radius)
        self.total_weight = float(fixed_order_sum(self.weights, dtype=torch.float64))
        self.rate = (self.weights / self.weights.max()).clamp_(max=1.0)
        self.blocks = row_blocks(self.crow, self.shard.start, self.shard.stop, BLOCK_EDGES)

    def _edges(self, r0: int, r1: int) -> slice:
        return slice(int(self.crow[r0]), int(self.crow[r1]))

    def _kernel(
        self, z: torch.Tensor, edges: slice
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``diff = z_j - z_k``, ``d2 = |diff|^2`` and ``phi`` for the edges ``edges``."""
        diff = z[self.rows[edges]] - z[self.cols[edges]]
        d2 = diff.square().sum(1)
        phi = 1.0 / (1.0 + self.a * power(d2.clamp_min(POW_FLOOR), self.b))
        return diff, d2, phi

    def embedding_radii(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log radius, kernel row sum)`` of every point in the embedding ``z``."""
        parts_r, parts_s = [], []
        for r0, r1 in zip(self.blocks[:-1], self.blocks[1:], strict=True):
            edges = self._edges(r0, r1)
            _, d2, phi = self._kernel(z, edges)
            counts = self.counts[r0:r1]
            parts_r.append(log_radius(phi, d2, counts))
            parts_s.append(row_sums(phi, counts))
        radius = torch.cat(parts_r) if parts_r else z.new_zeros(0)
        phi_sum = torch.cat(parts_s) if parts_s else z.new_zeros(0)
        if self.gather is not None:
            radius, phi_sum = self.gather(radius, self.n), self.gather(phi_sum, self.n)
        return radius, phi_sum

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """The term's gradient ``(n, d)`` (zero outside the owned rows; descend along it)."""
        radius, phi_sum = self.embedding_radii(z)
        # umap-learn counts every edge at both of its ends: twice a row's sum here
        phi_sum = 2.0 * phi_sum
        n = self.n
        mean = fixed_order_sum(radius) / n
        var = fixed_order_sum((radius - mean).square()) / n
        std = torch.sqrt(var + self.var_shift)
        cov = fixed_order_sum(radius * self.input_std_radius) / (n - 1)
        weight = self.input_std_radius - cov * (radius - mean) / (std * std)
        scale = self.dens_lambda * self.total_weight / (float(std) * n)
        grad = torch.zeros_like(z)
        for r0, r1 in zip(self.blocks[:-1], self.blocks[1:], strict=True):
            edges = self._edges(r0, r1)
            diff, d2, phi = self._kernel(z, edges)
            j, k = self.rows[edges], self.cols[edges]
            d2c = d2.clamp_min(POW_FLOOR)
            d2b = power(d2c, self.b)
            dphi = self.a * self.b * d2b / d2c / (1.0 + self.a * d2b)
            shape = 1.0 - self.b * (1.0 - phi)
            dr_k = phi / phi_sum[k] * (shape / radius[k].exp() + dphi)
            dr_j = phi / phi_sum[j] * (shape / radius[j].exp() + dphi)
            coeff = scale * (weight[k] * dr_k + weight[j] * dr_j) / self.weights[edges]
            coeff = torch.where(d2 > 0, coeff, torch.zeros_like(coeff))
            terms = (2.0 * coeff[:, None] * diff).clamp_(-DENSITY_CLIP, DENSITY_CLIP)
            terms.mul_(self.rate[edges, None])
            counts = self.counts[r0:r1]
            for c in range(z.shape[1]):
                grad[r0:r1, c] = row_sums(terms[:, c].contiguous(), counts)
        # the step moves a row toward larger correlation; the edge (k, j) adds the same
        return grad.mul_(-2.0)


def first_density_epoch(n_epochs: int, dens_frac: float) -> int:
    """The first epoch (0-based) with the density term: umap-learn's ``(t + 1) / n_epochs >
    1 - dens_frac``."""
    threshold = 1.0 - float(dens_frac)
    return next((t for t in range(n_epochs) if (t + 1) / n_epochs > threshold), n_epochs)


class DensMAPObjective:
    """UMAP's sampled epoch plus densMAP's density term over its last ``dens_frac`` epochs.

    Parameters
    ----------
    P
        The symmetric UMAP graph.
    data
        ``(n, d)`` the data the graph was built on (the radii in the data are measured in
        it, with :func:`edge_sq_distances`).
    metric
        The graph's metric, one of :data:`DENSITY_METRICS`.
    a, b, dens_lambda, dens_var_shift, shard, gather
        As for :class:`DensityTerm`.
    dens_frac
        Fraction of the epochs, at the end, with the density term.
    n_epochs
        Epochs of the fit.
    **sampled
        The keyword arguments of
        :class:`~torchdr_sc.objective.methods.NegativeSamplingObjective`.
    """

    def __init__(
        self,
        P: SparseAffinity,
        *,
        data: torch.Tensor,
        metric: str,
        a: float,
        b: float,
        dens_lambda: float,
        dens_frac: float,
        dens_var_shift: float,
        n_epochs: int,
        gather: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        **sampled: Any,
    ) -> None:
        from .methods import NegativeSamplingObjective

        self.sampled = NegativeSamplingObjective(P, **sampled)
        input_sq_dist = edge_sq_distances(data.to(P.device), P.rows, P.cols, metric)
        self.term = DensityTerm(
            P,
            input_sq_dist,
            a=a,
            b=b,
            dens_lambda=dens_lambda,
            dens_var_shift=dens_var_shift,
            shard=sampled.get("shard"),
            gather=gather,
        )
        self.first_epoch = first_density_epoch(int(n_epochs), float(dens_frac))
        self.work = self.sampled.work

    @property
    def path(self) -> str:
        """The sampled epoch's path, with the density term."""
        return f"{self.sampled.path}, density term"

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient of epoch ``iteration`` at ``z``."""
        grad = self.sampled(z, iteration, phase)
        if iteration >= self.first_epoch and self.term.dens_lambda > 0:
            grad = grad.add_(self.term(z))
        return grad
