"""The InfoNC-t-SNE repulsion with negatives shared by blocks of rows.

InfoNC-t-SNE (Damrich, Böhm, Hamprecht & Kobak, *From t-SNE to UMAP with contrastive
learning*, ICLR 2023) replaces t-SNE's normaliser ``Z = sum_kl w_kl`` by a sum over a few
sampled negatives. In the form TorchDR documents for ``InfoTSNE``, the loss is

    L = -e sum_ij P_ij log w_ij + sum_i p_i log S_i,    S_i = sum_{k in Neg(i)} w_ik,

with ``w_ij = 1 / (1 + |z_i - z_j|^2)``, ``P`` symmetric and summing to 1, ``e`` the early
exaggeration and ``p_i = sum_j P_ij`` the row's mass (the weight of row ``i``'s negatives
when its edges are drawn from ``P``, as in the paper; TorchDR's row-stochastic ``P / n``
gives ``1 / n``). With ``m`` uniform negatives ``S_i`` estimates ``(m / n) sum_k w_ik``,
so the gradient is t-SNE's with each row's repulsion normalised by its own estimated sum:
``grad_i = 4 e sum_j P_ij w_ij (z_i - z_j) - 2 (p_i / S_i) sum_{k in Neg(i)} w_ik^2 (z_i -
z_k) - 2 sum_{l: i in Neg(l)} (p_l / S_l) w_li^2 (z_i - z_l)``. The attraction is t-SNE's
(:class:`~torchdr_sc.objective.attraction.StudentAttraction`); this module computes the other
two terms.

Drawing ``m`` negatives per edge (umap-learn's scheme) costs ``edges x m`` pair terms per
epoch; drawing them per point (TorchDR) costs ``n x m`` gathers and a scatter of as many
reactions. Here the rows are shuffled every iteration into blocks of ``m`` and the blocks are
paired: the negatives of a row are the rows of the paired block, ``m`` uniform draws without
replacement that never include the row itself. One dense ``m x m`` matrix of ``w`` per pair
of blocks then holds the terms of both blocks' rows, each pair's action and reaction, so that
an iteration computes ``n m / 2`` kernel values and no scatter. On the CPU one C loop per pair
keeps that matrix in cache (:mod:`~torchdr_sc.objective.native_infonce`; its PyTorch form
with the same bits, :mod:`~torchdr_sc.objective.infonce_exact`, runs without a compiler and
in float64); on other devices batched matrix products compute it (``1 + d^2`` as one
product: fast on a GPU, other rounding). Sharing the draw within a block of randomly
chosen rows correlates no neighbouring rows; a new shuffle every iteration gives every row
new negatives. With ``exclude_neighbours`` a pair of P's edge does not count.

The shuffles come from a :class:`torch.Generator` seeded by the fit, every sum runs in a
fixed order within one pair of blocks (one thread per pair) and the blocks' terms are written
back by a permutation, not accumulated, so a seed gives bitwise the same result with any
number of CPU threads, with or without the C kernel.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..affinity import SparseAffinity
from . import infonce_exact, native_infonce

__all__ = ["BLOCK_ROWS", "InfoNCERepulsion", "SampledStudentRepulsion", "row_mass"]

#: New points of ``transform`` that share one draw of reference negatives.
BLOCK_ROWS = 256
#: Bytes of one chunk of the blocks' pair matrices, small enough to stay in the CPU's cache
#: between the passes over it.
CHUNK_BYTES = 4 * 2**20


def row_mass(P: SparseAffinity, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``p_i = sum_j P_ij`` for every row, summed in edge order (P's edges sorted by row).

    A float64 running sum differenced at the row boundaries: sequential, so the result does
    not depend on the thread count.
    """
    counts = torch.bincount(P.rows, minlength=P.n)
    ends = counts.cumsum(0)
    running = torch.cat([P.weights.new_zeros(1, dtype=dtype), P.weights.to(dtype).cumsum(0)])
    return running[ends] - running[ends - counts]


def _augment_rows(z: torch.Tensor) -> torch.Tensor:
    """``[z, |z|^2 + 1, 1]``: its product with :func:`_augment_negatives` is ``1 + d^2``."""
    sq = (z * z).sum(-1, keepdim=True)
    return torch.cat([z, sq + 1.0, torch.ones_like(sq)], -1)


def _augment_negatives(z: torch.Tensor) -> torch.Tensor:
    """``[-2 z, 1, |z|^2]`` (see :func:`_augment_rows`)."""
    sq = (z * z).sum(-1, keepdim=True)
    return torch.cat([-2.0 * z, torch.ones_like(sq), sq], -1)


def _kernel_block(zb: torch.Tensor, zk: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``w = 1 / (1 + |z_b - z_k|^2)`` of every pair of a batch of blocks, into ``out``.

    ``zb`` is ``(c, B, d)``, ``zk`` is ``(c, m, d)``; ``out`` is ``(c, B, m)``.
    """
    torch.bmm(_augment_rows(zb), _augment_negatives(zk).transpose(1, 2).contiguous(), out=out)
    return out.clamp_min_(1.0).reciprocal_()


def _row_terms(w2: torch.Tensor, zb: torch.Tensor, zk: torch.Tensor) -> torch.Tensor:
    """``sum_k w_bk^2 (z_b - z_k)`` of every row of every block, ``(c, B, d)``.

    The sums are one product ``[1, z_k]^T w2^T`` of ``(d + 1) x m`` by ``m x B``: with the
    thin factor on the left, the CPU kernel streams the rows of ``w2`` several times faster
    than ``w2 [1, z_k]``.
    """
    lhs = torch.cat([torch.ones_like(zk[..., :1]), zk], -1).transpose(1, 2).contiguous()
    sums = torch.bmm(lhs, w2.transpose(1, 2)).transpose(1, 2)
    return zb * sums[..., :1] - sums[..., 1:]


def _pair_terms(
    w2: torch.Tensor, ca: torch.Tensor, cb: torch.Tensor, za: torch.Tensor, zb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repulsion terms of paired blocks ``a`` and ``b`` from their ``w^2``, ``(c, A, B)``.

    Row ``i`` of ``a`` and row ``k`` of ``b`` get ``sum_k (ca_i + cb_k) w_ik^2 (z_i - z_k)``
    and ``sum_i (ca_i + cb_k) w_ik^2 (z_k - z_i)``: each pair carries the term of its row in
    ``a`` (weight ``ca``) and that of its row in ``b`` (``cb``), action and reaction. Two
    products, with the thin factor on the left (the CPU kernel then streams ``w2``'s rows,
    several times faster than with it on the right).
    """

    def factor(c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(c)[..., None]
        parts = [ones, z, c[..., None], c[..., None] * z]
        return torch.cat(parts, -1).transpose(1, 2).contiguous()

    d = za.shape[-1]
    sa = torch.bmm(factor(cb, zb), w2.transpose(1, 2)).transpose(1, 2)  # (c, A, 2d + 2)
    sb = torch.bmm(factor(ca, za), w2).transpose(1, 2)  # (c, B, 2d + 2)

    def side(c: torch.Tensor, z: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
        own = z * sums[..., :1] - sums[..., 1 : d + 1]
        other = z * sums[..., d + 1 : d + 2] - sums[..., d + 2 :]
        return own * c[..., None] + other

    return side(ca, za, sa), side(cb, zb, sb)


class InfoNCERepulsion:
    """The InfoNC-t-SNE repulsion, every row's negatives the rows of a paired block.

    Every iteration the rows are shuffled into blocks of ``n_negatives`` and the blocks are
    paired (the first with the second, and so on; an odd last block with the first, one
    way): a row's negatives are the rows of the block it is paired with, ``n_negatives``
    points drawn uniformly without replacement, never itself. One ``block x block`` matrix of
    ``w`` then serves both blocks' terms, each pair's action and reaction (:func:`_pair_terms`),
    half the pairs a draw per row would need, and no scatter. With fewer than
    ``2 n_negatives`` rows every row takes all the others as negatives (the exact per-row
    normaliser the sampled one estimates).

    Calling it with the embedding returns the gradient of this process's part of
    ``sum_i p_i log S_i`` (module notes) over all rows. Under ``torchrun`` the processes
    draw the same shuffle (``generator`` seeded alike) and split the pairs of blocks, so the
    all-reduced sum is the gradient of the whole objective.

    Parameters
    ----------
    P
        The input affinity (symmetric, edges sorted by row).
    n_negatives
        Negatives per row and iteration (the block size).
    generator
        Source of the shuffles: seeded alike on every process.
    scale
        Factor on P's weights (``1 / sum P``), so that the row masses sum to 1.
    exclude_neighbours
        Drop the pairs ``(i, k)`` of P's edges from the repulsion (TorchDR's
        ``discard_NNs``): a negative that is a neighbour does not count.
    rank, world_size
        This process's share of the pairs of blocks.
    use_kernel
        Use the C kernel on the CPU where it builds (``False``: its PyTorch form, the same
        bits).
    """

    def __init__(
        self,
        P: SparseAffinity,
        n_negatives: int,
        *,
        generator: torch.Generator,
        scale: float = 1.0,
        exclude_neighbours: bool = False,
        rank: int = 0,
        world_size: int = 1,
        use_kernel: bool = True,
    ) -> None:
        self.n, self.generator, self.use_kernel = P.n, generator, use_kernel
        self.mass = row_mass(P) * (2.0 * scale)  # 2: d log w / d z
        self.all_pairs = self.n < 2 * int(n_negatives)
        self.block = self.n if self.all_pairs else int(n_negatives)
        self.n_blocks = math.ceil(self.n / self.block)
        left = list(range(0, self.n_blocks - 1, 2))
        right = [b + 1 for b in left]
        if self.n_blocks % 2:  # the odd block's rows take the first block as negatives
            left.append(self.n_blocks - 1)
            right.append(0 if self.n_blocks > 1 else self.n_blocks - 1)
        lo, hi = rank * len(left) // world_size, (rank + 1) * len(left) // world_size
        # the right block's own terms count in its pair, except the odd pair's block
        odd = len(left) - 1 if self.n_blocks % 2 and not self.all_pairs else -1
        device = self.device = P.rows.device
        self.left = torch.tensor(left[lo:hi], device=device)
        self.right = torch.tensor(right[lo:hi], device=device)
        self.mutual = torch.tensor([i != odd for i in range(lo, hi)], device=device)
        self.edges = (P.rows.long(), P.cols.long()) if exclude_neighbours else None
        self._mass_as: torch.Tensor | None = None

    def _dropped(self, position: torch.Tensor) -> torch.Tensor:
        """Flat indices into the ``(pairs, block, block)`` matrices of the pairs that do not
        count: a row with itself (all-pairs case), a padding row, a neighbour (optional)."""
        B, n_pairs, device = self.block, len(self.left), position.device
        flat = [torch.zeros(0, dtype=torch.long, device=device)]
        if self.all_pairs:
            r = torch.arange(self.n, device=device)
            flat.append(r * B + r)
        padding = torch.arange(self.n - (self.n_blocks - 1) * B, B, device=device)
        every = torch.arange(B, device=device)
        for p in (self.left == self.n_blocks - 1).nonzero().view(-1).tolist():
            flat.append((p * B * B + padding[:, None] * B + every[None]).reshape(-1))
        for p in (self.right == self.n_blocks - 1).nonzero().view(-1).tolist():
            flat.append((p * B * B + every[:, None] * B + padding[None]).reshape(-1))
        if self.edges is not None and n_pairs:
            pair_of = torch.full((self.n_blocks,), -1, dtype=torch.long, device=device)
            pair_of[self.left] = torch.arange(n_pairs, device=device)
            pi, pj = position[self.edges[0]], position[self.edges[1]]
            p = pair_of[pi // B]
            hit = (p >= 0) & (self.right[p.clamp_min(0)] == pj // B)
            flat.append(p[hit] * B * B + (pi[hit] % B) * B + pj[hit] % B)
        return torch.cat(flat)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Gradient ``(n, d)`` of this process's part of ``sum_i p_i log S_i``."""
        g = self.generator
        order = torch.randperm(self.n, generator=g, device=g.device).to(z.device)
        position = torch.empty_like(order)
        position[order] = torch.arange(self.n, device=z.device)
        dropped = self._dropped(position)
        lib = self._library() if z.device.type == "cpu" else None
        if lib is not None and native_infonce.supports(z):
            out, extra = self._kernel(lib, z, order, dropped)
        else:
            zp, cp = self._blocks(z, order)
            terms = infonce_exact.block_pair_terms if z.is_cpu else _product_terms
            ga, gb = terms(zp, cp, self.left, self.right, self.mutual, dropped)
            out, extra = self._place(ga, gb, order)
        if extra is not None:  # the odd pair's right block: the first block, a left one too
            first = order[: self.block]
            out[first] = out[first] - extra
        return out

    @property
    def path(self) -> str:
        """``'C kernel'``, ``'eager'`` (both in the same order of operations, the same
        bits) or ``'matrix products'`` (CUDA)."""
        if self.device.type != "cpu":
            return "matrix products"
        return "C kernel" if self._library() is not None else "eager"

    def _library(self) -> Any:
        return native_infonce.library() if self.use_kernel else None

    def _mass(self, z: torch.Tensor) -> torch.Tensor:
        """The row masses in ``z``'s dtype and device (converted once)."""
        if self._mass_as is None or self._mass_as.dtype != z.dtype:
            self._mass_as = self.mass.to(device=z.device, dtype=z.dtype)
        return self._mass_as

    def _kernel(
        self, lib: Any, z: torch.Tensor, order: torch.Tensor, dropped: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The gradient by the C kernel, which reads the blocks' rows and writes their
        gradient through ``order`` itself."""
        dropped = dropped.sort().values
        per_pair = self.block * self.block
        starts = torch.arange(len(self.left) + 1, dtype=torch.long) * per_pair
        drop_start = torch.searchsorted(dropped, starts)
        mutual = self.mutual.to(torch.float32)
        return native_infonce.repulsion(
            lib, z, order, self._mass(z), self.block, self.left, self.right, mutual,
            drop_start, dropped % per_pair,
        )  # fmt: skip

    def _blocks(self, z: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The shuffled rows and masses as ``(n_blocks, B, d)`` and ``(n_blocks, B)``, the
        last block padded with zeros."""
        B, d = self.block, z.shape[1]
        zp = z.new_zeros(self.n_blocks * B, d)
        zp[: self.n] = z[order]
        cp = z.new_zeros(self.n_blocks * B)
        cp[: self.n] = self._mass(z)[order]
        return zp.view(self.n_blocks, B, d), cp.view(self.n_blocks, B)

    def _place(
        self, ga: torch.Tensor, gb: torch.Tensor, order: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The blocks' terms written back as the C kernel writes them: ``out[row] =
        -terms`` for the rows of left blocks and of mutual right blocks (zero elsewhere), and
        the odd pair's right block's terms apart."""
        B, d = self.block, ga.shape[-1]
        out = ga.new_zeros(self.n, d)
        rows = torch.full((self.n_blocks * B,), -1, dtype=torch.long, device=order.device)
        rows[: self.n] = order
        rows = rows.view(self.n_blocks, B)

        def put(blocks: torch.Tensor, values: torch.Tensor) -> None:
            index = rows[blocks].reshape(-1)
            keep = index >= 0
            out[index[keep]] = -values.reshape(-1, d)[keep]

        put(self.left, ga)
        if self.all_pairs:  # one block paired with itself: ga holds both sides
            return out, None
        mutual = self.mutual.bool()
        put(self.right[mutual], gb[mutual])
        return out, (gb[~mutual][0] if not bool(mutual.all()) else None)


def _product_terms(
    zp: torch.Tensor,
    cp: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    mutual: torch.Tensor,
    dropped: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block-pair terms by batched matrix products (the CUDA path: the same maths as
    :func:`~torchdr_sc.objective.infonce_exact.block_pair_terms`, other rounding)."""
    _, B, d = zp.shape
    pairs = len(left)
    ga, gb = zp.new_empty(pairs, B, d), zp.new_empty(pairs, B, d)
    per_chunk = max(1, CHUNK_BYTES // (B * B * zp.element_size()))
    buf = torch.empty(min(per_chunk, pairs), B, B, dtype=zp.dtype, device=zp.device)
    tiny = torch.finfo(zp.dtype).tiny
    for c0 in range(0, pairs, per_chunk):
        c1 = min(c0 + per_chunk, pairs)
        za, zb = zp[left[c0:c1]], zp[right[c0:c1]]
        w = _kernel_block(za, zb, buf[: c1 - c0])
        local = dropped[(dropped >= c0 * B * B) & (dropped < c1 * B * B)] - c0 * B * B
        if local.numel():
            w.view(-1)[local] = 0.0
        ca = cp[left[c0:c1]] / w.sum(-1).clamp_min_(tiny)
        cb = cp[right[c0:c1]] / w.sum(1).clamp_min_(tiny) * mutual[c0:c1, None]
        ga[c0:c1], gb[c0:c1] = _pair_terms(w.square_(), ca, cb, za, zb)
    return ga, gb


class SampledStudentRepulsion:
    """``S_i`` and ``sum_k w_ik^2 (z_i - y_k)`` over sampled reference points, for
    ``transform``.

    The fit's repulsion with the reference held fixed: every block of new points shares one
    draw of ``n_negatives`` reference points per call, and only the new points receive
    gradient. Called like :class:`~torchdr_sc.objective.partial.StudentRepulsion` (whose
    sums run over the whole reference), so that ``rep / S`` is the InfoNC-t-SNE repulsion
    of each new point (:func:`~torchdr_sc.objective.partial.tsne_partial_gradient`).

    Parameters
    ----------
    y
        ``(n, d)`` reference embedding.
    n_negatives
        Reference points drawn per block of new points and call.
    seed
        Seeds the draws (same seed, same negatives).
    block_rows
        New points per block.
    """

    def __init__(
        self, y: torch.Tensor, n_negatives: int, *, seed: int, block_rows: int = BLOCK_ROWS
    ) -> None:
        self.y, self.m, self.block = y, int(n_negatives), int(block_rows)
        self.generator = torch.Generator(device=y.device).manual_seed(int(seed))

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S, rep)`` of shapes ``(m,)`` and ``(m, d)`` for the new points ``z``."""
        count, d = z.shape
        B = max(1, min(self.block, count))
        n_blocks = math.ceil(count / B)
        pad = n_blocks * B - count
        zb = torch.cat([z, z[:pad]]).view(n_blocks, B, d)
        draw = (n_blocks, self.m)
        g = self.generator
        negatives = torch.randint(0, self.y.shape[0], draw, generator=g, device=z.device)
        zk = self.y[negatives.view(-1)].view(n_blocks, self.m, d)
        per_chunk = max(1, CHUNK_BYTES // (B * self.m * z.element_size()))
        buf = torch.empty(min(per_chunk, n_blocks), B, self.m, dtype=z.dtype, device=z.device)
        sums = torch.empty(n_blocks, B, dtype=z.dtype, device=z.device)
        rep = torch.empty_like(zb)
        for c0 in range(0, n_blocks, per_chunk):
            c1 = min(c0 + per_chunk, n_blocks)
            w = _kernel_block(zb[c0:c1], zk[c0:c1], buf[: c1 - c0])
            sums[c0:c1] = w.sum(-1)
            rep[c0:c1] = _row_terms(w.square_(), zb[c0:c1], zk[c0:c1])
        return sums.view(-1)[:count], rep.view(-1, d)[:count]
