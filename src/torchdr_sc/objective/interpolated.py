"""t-SNE repulsion in O(n): kernel sums interpolated on a regular grid, convolved by FFT.

The repulsive part of the t-SNE gradient needs, for every point ``i``, sums over all the
other points of the Cauchy kernel ``w_ij = 1 / (1 + |z_i - z_j|^2)`` and of its square
(:func:`~torchdr_sc.objective.exact.student_repulsion_terms` computes them exactly, in
``O(n^2)``). Following Linderman, Rachh, Hoskins, Steinerberger & Kluger, *Fast
interpolation-based t-SNE for improved visualization of single-cell RNA-seq data*, Nature
Methods 2019 (FIt-SNE), the embedding's bounding box is cut into equal boxes, each holding
``p`` equispaced interpolation nodes per dimension, so that all nodes form one regular grid:

1. every point spreads its charges (``1`` and its coordinates) onto the ``p^d`` nodes of its
   box with Lagrange interpolation weights;
2. the kernel sums between grid nodes are a discrete convolution with the kernel sampled at
   the node offsets, computed by FFT on a zero-padded grid (a Toeplitz product);
3. every point reads its sums back from the nodes of its box with the same weights.

Cost ``O(n p^d + G log G)`` for ``G`` grid nodes; one torch code path (``torch.fft``) for CPU
and CUDA, for 1-D and 2-D embeddings. Boxes are at most ``ints_in_interval`` wide and there
are at least ``min_num_intervals`` of them per dimension (openTSNE's names). The defaults
are openTSNE's, 3 nodes per box of width 1: on 5,000 points of a t-SNE-like layout the
gradient's relative error is about 1.2e-2 in 2-D (2.2e-2 in 1-D; tested against the exact
sums); 4 nodes give 3e-3 on a grid with 1.8x more nodes per dimension pair, and no better
embeddings of the simulated atlas (``benchmarks/README.md``).
"""

from __future__ import annotations

import functools
import math

import torch

from .._reduce import fixed_order_sum
from ..distributed import RowShard

#: Embedding dimensions the interpolation supports.
SUPPORTED_DIMS = (1, 2)
#: Upper bound of the boxes per dimension (2-D): the padded grid then holds
#: ``(2 * 4 * 400)^2`` = 10M nodes. Wider embeddings get wider boxes (less accurate).
MAX_BOXES_2D = 400
#: The same bound for 1-D embeddings.
MAX_BOXES_1D = 100_000


def fft_size(n: int) -> int:
    """The smallest ``2^a 3^b 5^c >= n``: FFT lengths with large prime factors are slow."""
    best = 1 << max(0, (n - 1).bit_length())
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


def lagrange_weights(t: torch.Tensor, p: int) -> torch.Tensor:
    """Weights of the ``p`` Lagrange polynomials on nodes ``(j + 1/2) / p`` at points ``t``.

    Parameters
    ----------
    t
        Positions inside a unit box, any shape.
    p
        Number of interpolation nodes.

    Returns
    -------
    ``t.shape + (p,)`` weights; they sum to 1 and reproduce polynomials of degree < p.
    """
    nodes = (torch.arange(p, dtype=t.dtype, device=t.device) + 0.5) / p
    diff = t[..., None] - nodes  # (..., p)
    weights = torch.ones_like(diff)
    for j in range(p):
        for m in range(p):
            if m != j:
                weights[..., j] *= diff[..., m] / float(nodes[j] - nodes[m])
    return weights


def _grid(z: torch.Tensor, p: int, min_boxes: int, box_width: float) -> tuple[float, float, int]:
    """Origin, box width and boxes per dimension of the square grid covering ``z``.

    Boxes are exactly ``box_width`` wide once the layout spans ``min_boxes`` of them (so
    that the kernel's spectrum, which depends only on the grid's size and spacing, is
    reused from one iteration to the next); narrower while the layout is small; wider
    only past the cap on the number of boxes.
    """
    lo = float(z.min())
    span = max(float(z.max()) - lo, 1e-12) * (1.0 + 1e-7)  # every point strictly inside
    cap = MAX_BOXES_2D if z.shape[1] == 2 else MAX_BOXES_1D
    if span <= min_boxes * box_width:
        return lo, span / min_boxes, min_boxes
    boxes = math.ceil(span / box_width)
    if boxes > cap:
        return lo, span / cap, cap
    return lo, box_width, boxes


def _stencils(
    z: torch.Tensor, lo: float, width: float, boxes: int, p: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat grid index and interpolation weight of the ``p^d`` nodes of every point's box."""
    n, d = z.shape
    u = (z - lo) / width
    box = u.floor().clamp_(0, boxes - 1)
    weights = lagrange_weights(u - box, p)  # (n, d, p)
    nodes = box.long()[..., None] * p + torch.arange(p, device=z.device)  # (n, d, p)
    if d == 1:
        return nodes[:, 0], weights[:, 0]
    side = boxes * p
    index = nodes[:, 0, :, None] * side + nodes[:, 1, None, :]
    weight = weights[:, 0, :, None] * weights[:, 1, None, :]
    return index.reshape(n, p * p), weight.reshape(n, p * p)


def _offsets_d2(side: int, d: int, h: float, dtype: torch.dtype, device) -> torch.Tensor:
    """Squared distances of the node offsets of a padded grid (``size`` per dimension)."""
    size = fft_size(2 * side - 1)
    offsets = torch.arange(size, dtype=dtype, device=device)
    # offsets 0 .. side - 1, then -(side - 1) .. -1 at the end; what lies between never
    # meets a pair of nodes (the padding keeps the circular convolution a linear one)
    offsets = torch.where(offsets < side, offsets, offsets - size) * h
    d2 = offsets.square()
    return d2[:, None] + d2[None, :] if d == 2 else d2


@functools.lru_cache(maxsize=4)
def _gaussian_spectrum(side: int, d: int, h: float, dtype: torch.dtype, device) -> torch.Tensor:
    """FFT of the Gaussian kernel ``exp(-r^2)`` at the node offsets of a padded grid."""
    kernel = torch.exp(-_offsets_d2(side, d, h, dtype, device))
    return torch.fft.rfftn(kernel, dim=tuple(range(-d, 0)))


@functools.lru_cache(maxsize=4)
def _kernel_spectra(side: int, d: int, h: float, dtype: torch.dtype, device) -> torch.Tensor:
    """FFTs of the Cauchy kernel and its square at the node offsets of a padded grid.

    Cached: with boxes of fixed width, successive iterations mostly share the grid.
    """
    cauchy = 1.0 / (1.0 + _offsets_d2(side, d, h, dtype, device))
    kernels = torch.stack([cauchy, cauchy.square()])
    return torch.fft.rfftn(kernels, dim=tuple(range(-d, 0)))


def _forward(x: torch.Tensor, size: int) -> torch.Tensor:
    """Real FFT of ``(C, side[, side])`` grids zero-padded to ``size`` per dimension.

    The first transform runs on the ``side`` non-zero rows only (rows of zeros transform to
    zeros), which saves about a quarter of the work of ``rfftn`` on the padded grid.
    """
    out = torch.fft.rfft(x, n=size, dim=-1)
    return torch.fft.fft(out, n=size, dim=-2) if x.ndim == 3 else out


def _inverse(spectrum: torch.Tensor, size: int, side: int) -> torch.Tensor:
    """The first ``side`` nodes per dimension of the inverse of :func:`_forward`."""
    if spectrum.ndim == 3:
        spectrum = torch.fft.ifft(spectrum, dim=-2)[:, :side]
    return torch.fft.irfft(spectrum, n=size, dim=-1)[..., :side]


def _spread(z: torch.Tensor, p: int, min_boxes: int, box_width: float) -> dict:
    """Charges ``[1, z]`` of every point spread on the grid, and their spectra."""
    d = z.shape[1]
    lo, width, boxes = _grid(z.detach(), p, min_boxes, box_width)
    side = boxes * p
    index, weight = _stencils(z, lo, width, boxes, p)
    flat = index.reshape(-1)
    # one channel at a time: (n * p^d,) values per channel instead of an (n, p^d, 1 + d)
    # temporary (less memory traffic, faster on CPU)
    grid = torch.zeros(1 + d, side**d, dtype=z.dtype, device=z.device)
    grid[0].index_add_(0, flat, weight.reshape(-1))  # charge 1
    for c in range(d):
        grid[1 + c].index_add_(0, flat, (weight * z[:, c : c + 1]).reshape(-1))
    size = fft_size(2 * side - 1)
    charge_hat = _forward(grid.reshape((1 + d,) + (side,) * d), size)
    kernel_hat = _kernel_spectra(side, d, width / p, z.dtype, z.device)
    return {
        "index": index, "weight": weight, "side": side, "size": size,
        "charge_hat": charge_hat, "kernel_hat": kernel_hat,
    }  # fmt: skip


def _read_back(spread: dict, products: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``(channels, m)`` sums at the points ``rows`` from the products' spectra."""
    side = spread["side"]
    potentials = _inverse(products, spread["size"], side).reshape(products.shape[0], -1)
    index, weight = spread["index"], spread["weight"]
    if rows is not None:
        index, weight = index[rows], weight[rows]
    # per channel, the p^d node values times the weights as a batched dot product: no
    # (channels, m, p^d) temporary (faster than gather-multiply-sum on CPU)
    weight = weight.unsqueeze(2)
    return torch.stack(
        [torch.bmm(pot[index].unsqueeze(1), weight).reshape(-1) for pot in potentials]
    )


def _total_cauchy_sum(spread: dict) -> torch.Tensor:
    """``sum_i sum_j w_ij`` (self terms included) in the frequency domain (Parseval).

    ``sum_i s1_i = sum_g c_g (K * c)_g`` for the grid charges ``c`` of the constant charge,
    which is ``sum_f |c^_f|^2 K^_f / size^d``: no inverse transform is needed.
    """
    c_hat, k_hat = spread["charge_hat"][0], spread["kernel_hat"][0]
    size = spread["size"]
    energy = c_hat.real.square() + c_hat.imag.square()
    terms = energy * k_hat.real
    half = terms.shape[-1]
    twice = torch.full((half,), 2.0, dtype=terms.dtype, device=terms.device)
    twice[0] = 1.0
    if size % 2 == 0:
        twice[-1] = 1.0  # the Nyquist column has no mirror
    return fixed_order_sum(terms * twice) / size**c_hat.ndim


def cauchy_sums(
    z: torch.Tensor,
    rows: torch.Tensor | None = None,
    *,
    n_interpolation_points: int = 3,
    min_num_intervals: int = 50,
    ints_in_interval: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolated ``sum_j w_ij`` and ``sum_j w_ij^2 [1, z_j]`` for the points ``rows``.

    Parameters
    ----------
    z
        ``(n, d)`` embedding, ``d`` in :data:`SUPPORTED_DIMS`.
    rows
        Indices of the points whose sums are wanted (``None``: all); the charges always come
        from every point.
    n_interpolation_points, min_num_intervals, ints_in_interval
        Nodes per box and dimension, fewest boxes per dimension, widest box.

    Returns
    -------
    ``(s1, s2)``: ``s1`` of shape ``(m,)`` holds ``sum_j w_ij`` and ``s2`` of shape
    ``(m, 1 + d)`` holds ``sum_j w_ij^2`` and ``sum_j w_ij^2 z_j``; both include ``j = i``.
    """
    spread = _spread(z, n_interpolation_points, min_num_intervals, ints_in_interval)
    c_hat, k_hat = spread["charge_hat"], spread["kernel_hat"]
    # channel 0 (charge 1) with both kernels, the coordinate channels with the squared one
    products = torch.cat([c_hat[:1] * k_hat, c_hat[1:] * k_hat[1:]])
    sums = _read_back(spread, products, rows)  # (2 + d, m)
    return sums[0], sums[1:].T


def student_repulsion_terms_fft(
    z: torch.Tensor,
    shard: RowShard,
    *,
    n_interpolation_points: int = 3,
    min_num_intervals: int = 50,
    ints_in_interval: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolated counterpart of :func:`~torchdr_sc.objective.exact.student_repulsion_terms`.

    Returns ``(rep, zsum)``: ``rep_i = sum_j w_ij^2 (z_i - z_j)`` for the shard's rows (zero
    elsewhere) and the shard's share of ``Z = sum_{i != j} w_ij`` (``Z * rows / n``, so that
    the shares of all processes add up to ``Z``; ``Z`` comes from the spectra directly).
    Every process holds the whole embedding, so each spreads all charges and reads back its
    own rows only.
    """
    n = z.shape[0]
    full = shard.start == 0 and shard.stop == n
    rows = None if full else torch.arange(shard.start, shard.stop, device=z.device)
    spread = _spread(z, n_interpolation_points, min_num_intervals, ints_in_interval)
    total = _total_cauchy_sum(spread)  # before the charges' spectra are overwritten
    # squared kernel on the [1, z] charges, in place: the charges' spectra are not reused
    products = spread["charge_hat"].mul_(spread["kernel_hat"][1])
    s2 = _read_back(spread, products, rows).T  # (m, 1 + d)
    owned = z if full else z[shard.start : shard.stop]
    rep_owned = owned * s2[:, :1] - s2[:, 1:]
    zsum = (total - n) * (owned.shape[0] / n)  # remove w_ii = 1
    if full:
        return rep_owned, zsum
    rep = torch.zeros_like(z)
    rep[shard.start : shard.stop] = rep_owned
    return rep, zsum


# ---- sums at points that are not the charges (transform: new points, fixed reference) ---


def grid_potentials(y: torch.Tensor, lo: float, width: float, boxes: int, p: int) -> torch.Tensor:
    """Kernel sums of the charges ``[1, y]`` of fixed points at every node of a fixed grid.

    The grid has its origin at ``lo``, ``boxes`` boxes of width ``width`` per dimension and
    ``p`` nodes per box; every point of ``y`` must lie inside it. Computed once for a fixed
    reference, the potentials give the sums at any point of the grid by
    :func:`read_potentials` (openTSNE's ``prepare_interpolation_grid``, Poličar et al. 2023).

    Returns
    -------
    ``(2 + d, side^d)`` with ``side = boxes * p``: ``sum_j w(node, y_j)``,
    ``sum_j w(node, y_j)^2`` and ``sum_j w(node, y_j)^2 y_j`` (one row per coordinate),
    ``w`` the Cauchy kernel.
    """
    n, d = y.shape
    side = boxes * p
    index, weight = _stencils(y, lo, width, boxes, p)
    charges = torch.cat([torch.ones(n, 1, dtype=y.dtype, device=y.device), y], 1)
    grid = torch.zeros(side**d, 1 + d, dtype=y.dtype, device=y.device)
    grid.index_add_(
        0, index.reshape(-1), (weight[..., None] * charges[:, None, :]).reshape(-1, 1 + d)
    )
    size = fft_size(2 * side - 1)
    charge_hat = _forward(grid.T.reshape((1 + d,) + (side,) * d), size)
    kernel_hat = _kernel_spectra(side, d, width / p, y.dtype, y.device)
    products = torch.cat([charge_hat[:1] * kernel_hat, charge_hat[1:] * kernel_hat[1:]])
    return _inverse(products, size, side).reshape(products.shape[0], -1)


def read_potentials(
    potentials: torch.Tensor, z: torch.Tensor, lo: float, width: float, boxes: int, p: int
) -> torch.Tensor:
    """The :func:`grid_potentials` interpolated at the points ``z`` (inside the grid).

    Returns ``(channels, m)``, the channels of ``potentials`` at each of the ``m`` points.
    """
    index, weight = _stencils(z, lo, width, boxes, p)
    return (potentials[:, index] * weight).sum(-1)


def gaussian_sums(
    z: torch.Tensor,
    charges: torch.Tensor,
    rows: torch.Tensor | None = None,
    *,
    n_interpolation_points: int = 4,
    min_num_intervals: int = 50,
    ints_in_interval: float = 1.0,
) -> torch.Tensor:
    """Interpolated ``sum_j exp(-|z_i - z_j|^2) c_j`` for the points ``rows`` (j = i included).

    The Gaussian kernel of SNE on the same grid as the Cauchy sums, with any charges (e.g.
    ``[1, z]``, or ``[1 / s_j, z_j / s_j]`` weighted by a per-point normaliser).

    Parameters
    ----------
    z
        ``(n, d)`` embedding, ``d`` in :data:`SUPPORTED_DIMS`.
    charges
        ``(n, C)`` charges of the points.
    rows
        Points whose sums are wanted (``None``: all).
    n_interpolation_points, min_num_intervals, ints_in_interval
        As in :func:`cauchy_sums`.

    Returns
    -------
    ``(m, C)`` sums.
    """
    d, p = z.shape[1], n_interpolation_points
    lo, width, boxes = _grid(z.detach(), p, min_num_intervals, ints_in_interval)
    side = boxes * p
    index, weight = _stencils(z, lo, width, boxes, p)
    flat = index.reshape(-1)
    grid = torch.zeros(charges.shape[1], side**d, dtype=z.dtype, device=z.device)
    for c in range(charges.shape[1]):
        grid[c].index_add_(0, flat, (weight * charges[:, c : c + 1]).reshape(-1))
    size = fft_size(2 * side - 1)
    spectra = _forward(grid.reshape((charges.shape[1],) + (side,) * d), size)
    spectra.mul_(_gaussian_spectrum(side, d, width / p, z.dtype, z.device))
    spread = {"index": index, "weight": weight, "side": side, "size": size}
    return _read_back(spread, spectra, rows).T


def sne_repulsion_fft(
    z: torch.Tensor,
    shard: RowShard,
    *,
    n_interpolation_points: int = 4,
    min_num_intervals: int = 50,
    ints_in_interval: float = 1.0,
) -> torch.Tensor:
    """SNE's repulsion ``sum_j (q_{j|i} + q_{i|j}) (z_i - z_j)`` of the shard's rows, in O(n).

    ``q_{j|i} = g_ij / s_i`` with ``g_ij = exp(-|z_i - z_j|^2)`` and ``s_i = sum_{k != i}
    g_ik``. Two interpolated Gaussian sums: ``[1, z]`` charges give ``s_i`` and the first
    term; charges ``[1 / s_j, z_j / s_j]`` give the second (Hinton & Roweis 2002's
    gradient; the grid of Linderman et al. 2019 with the Gaussian kernel). Rows outside the
    shard are zero.
    """
    grid = {
        "n_interpolation_points": n_interpolation_points,
        "min_num_intervals": min_num_intervals,
        "ints_in_interval": ints_in_interval,
    }
    n = z.shape[0]
    ones = torch.ones(n, 1, dtype=z.dtype, device=z.device)
    first = gaussian_sums(z, torch.cat([ones, z], 1), **grid)
    s = (first[:, 0] - 1.0).clamp_min(torch.finfo(z.dtype).tiny)  # remove g_ii = 1
    inv = (1.0 / s)[:, None]
    rows = slice(shard.start, shard.stop)
    owned = z[rows]
    index = (
        None
        if shard.start == 0 and shard.stop == n
        else torch.arange(shard.start, shard.stop, device=z.device)
    )
    second = gaussian_sums(z, torch.cat([inv, z * inv], 1), index, **grid)
    # sum_j q_{j|i} (z_i - z_j) = z_i - (sum_j g_ij z_j) / s_i  (the j = i terms cancel)
    term1 = owned - (first[rows, 1:] - owned) * inv[rows]
    # sum_j g_ij / s_j (z_i - z_j), j = i removed: z_i (t_i - 1/s_i) - (tz_i - z_i / s_i)
    t = second[:, :1] - inv[rows]
    tz = second[:, 1:] - owned * inv[rows]
    term2 = owned * t - tz
    rep = torch.zeros_like(z)
    rep[rows] = term1 + term2
    return rep
