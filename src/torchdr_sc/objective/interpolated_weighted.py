r"""Cauchy kernel sums with per-point charges on the FFT grid, and symmetric Sinkhorn on it.

TSNEkhorn's embedding affinity is the Student kernel scaled to a doubly stochastic matrix,
:math:`Q_{ij} = e^{f_i + f_j} w_{ij}` with :math:`w_{ij} = (1 + |z_i - z_j|^2)^{-1}` (Van
Assel, Vayer, Flamary & Courty, *SNEkhorn*, NeurIPS 2023). Its Sinkhorn iterations
(Cuturi, *Sinkhorn Distances*, NeurIPS 2013) need :math:`\sum_j w_{ij} e^{f_j}` for every
``i``, and its gradient :math:`\sum_j w_{ij}^2 e^{f_j} (z_i - z_j)`: kernel sums whose
charges are the weights :math:`e^{f_j}` instead of t-SNE's constant 1. They are computed
on the interpolation grid of :mod:`~torchdr_sc.objective.interpolated` (Linderman, Rachh,
Hoskins, Steinerberger & Kluger, *Fast interpolation-based t-SNE*, Nature Methods 2019):
the charges are spread on the grid nodes, convolved with the kernel by FFT and read back,
``O(n p^d + G log G)`` per set of charges and linear memory in ``n``.

:class:`CauchyGrid` computes the grid and the stencils of one embedding once and sums any
number of charge sets on them; :func:`weighted_cauchy_sums` is the one-call form.
"""

from __future__ import annotations

import torch

from .interpolated import (
    _forward,
    _grid,
    _inverse,
    _kernel_spectra,
    _stencils,
    fft_size,
)

__all__ = ["CauchyGrid", "sinkhorn_potentials_fft", "weighted_cauchy_sums"]


class CauchyGrid:
    """The interpolation grid of an embedding, for Cauchy kernel sums with any charges.

    Parameters
    ----------
    z
        ``(n, d)`` embedding, ``d`` in 1 or 2.
    n_interpolation_points, min_num_intervals, ints_in_interval
        Nodes per box and dimension, fewest boxes per dimension, widest box (as in
        :func:`~torchdr_sc.objective.interpolated.cauchy_sums`).
    """

    def __init__(
        self,
        z: torch.Tensor,
        *,
        n_interpolation_points: int = 4,
        min_num_intervals: int = 50,
        ints_in_interval: float = 1.0,
    ) -> None:
        p = n_interpolation_points
        self.d = z.shape[1]
        lo, width, boxes = _grid(z.detach(), p, min_num_intervals, ints_in_interval)
        self.side = boxes * p
        self.size = fft_size(2 * self.side - 1)
        self.index, self.weight = _stencils(z, lo, width, boxes, p)
        self.flat = self.index.reshape(-1)
        self.kernel_hat = _kernel_spectra(self.side, self.d, width / p, z.dtype, z.device)

    def _spectra(self, charges: torch.Tensor) -> torch.Tensor:
        """FFT of the ``(n, C)`` charges spread on the grid, ``(C, ...)``."""
        n_ch = charges.shape[1]
        grid = torch.zeros(n_ch, self.side**self.d, dtype=charges.dtype, device=charges.device)
        for c in range(n_ch):
            grid[c].index_add_(0, self.flat, (self.weight * charges[:, c : c + 1]).reshape(-1))
        return _forward(grid.reshape((n_ch,) + (self.side,) * self.d), self.size)

    def _read(self, spectra: torch.Tensor) -> torch.Tensor:
        """``(n, C)`` values at the points of the potentials whose spectra are given."""
        potentials = _inverse(spectra, self.size, self.side).reshape(spectra.shape[0], -1)
        weight = self.weight.unsqueeze(2)
        return torch.stack(
            [torch.bmm(pot[self.index].unsqueeze(1), weight).reshape(-1) for pot in potentials],
            dim=1,
        )

    def sums(self, charges: torch.Tensor, *, squared: bool = False) -> torch.Tensor:
        """``sum_j w_ij c_j`` (or ``w_ij^2`` with ``squared``) for every point, ``j = i`` included.

        Parameters
        ----------
        charges
            ``(n, C)`` charges of the points (any sign).
        squared
            Use the squared kernel ``w^2`` (the t-SNE gradient's) instead of ``w``.

        Returns
        -------
        ``(n, C)`` sums.
        """
        spectra = self._spectra(charges)
        return self._read(spectra.mul_(self.kernel_hat[1 if squared else 0]))

    def both_sums(self, charges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sum_j w_ij c_j0`` and ``sum_j w_ij^2 c_j`` from one spreading of the charges.

        Returns
        -------
        ``(n,)`` sums of the first charge with ``w`` and ``(n, C)`` sums with ``w^2``.
        """
        spectra = self._spectra(charges)
        products = torch.cat([spectra[:1] * self.kernel_hat[0], spectra * self.kernel_hat[1]])
        out = self._read(products)
        return out[:, 0], out[:, 1:]


def weighted_cauchy_sums(
    z: torch.Tensor,
    charges: torch.Tensor,
    *,
    squared: bool = False,
    n_interpolation_points: int = 4,
    min_num_intervals: int = 50,
    ints_in_interval: float = 1.0,
) -> torch.Tensor:
    """Interpolated ``sum_j w_ij c_j`` (``w_ij^2`` with ``squared``), ``j = i`` included.

    Parameters
    ----------
    z
        ``(n, d)`` embedding, ``d`` in 1 or 2.
    charges
        ``(n, C)`` charges, e.g. ``[e^{f_j}, e^{f_j} z_j]``.
    squared
        Sum the squared kernel.
    n_interpolation_points, min_num_intervals, ints_in_interval
        As in :func:`~torchdr_sc.objective.interpolated.cauchy_sums`.

    Returns
    -------
    ``(n, C)`` sums.
    """
    grid = CauchyGrid(
        z,
        n_interpolation_points=n_interpolation_points,
        min_num_intervals=min_num_intervals,
        ints_in_interval=ints_in_interval,
    )
    return grid.sums(charges, squared=squared)


def sinkhorn_potentials_fft(grid: CauchyGrid, f0: torch.Tensor | None, n_iter: int) -> torch.Tensor:
    r"""Symmetric Sinkhorn potential of the Cauchy kernel (diagonal excluded), on the grid.

    The interpolated counterpart of :func:`~torchdr_sc.affinity.log_sinkhorn_potentials`
    with ``log_K = -log(1 + D)``: ``n_iter`` averaged updates
    :math:`f \leftarrow (f + T(f)) / 2`, :math:`T(f)_i = -\log \sum_{j \neq i} w_{ij} e^{f_j}`
    (Feydy et al. 2019), from ``f0`` or from :math:`-\tfrac12 \log \sum_{j \neq i} w_{ij}`.
    The charges are :math:`e^{f_j - \max f} \leq 1` and the shift is added back in the log
    domain, so nothing overflows; the self term :math:`w_{ii} e^{f_i}` is removed.

    Parameters
    ----------
    grid
        The grid of the embedding.
    f0
        ``(n,)`` warm start (the previous step's potential), or ``None``.
    n_iter
        Number of updates.

    Returns
    -------
    ``(n,)`` potential (detached).
    """
    tiny = torch.finfo(grid.weight.dtype).tiny
    n = grid.index.shape[0]
    if f0 is None:
        ones = torch.ones(n, 1, dtype=grid.weight.dtype, device=grid.weight.device)
        s = grid.sums(ones)[:, 0] - 1.0
        f = -0.5 * torch.log(s.clamp_min(tiny))
    else:
        f = f0.detach().to(grid.weight.dtype).clone()
    for _ in range(int(n_iter)):
        shift = f.max()
        charge = torch.exp(f - shift)
        s = grid.sums(charge[:, None])[:, 0] - charge
        update = -(shift + torch.log(s.clamp_min(tiny)))
        f = 0.5 * (f + update)
    return f.detach()
