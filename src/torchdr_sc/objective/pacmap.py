"""PaCMAP's objective: three kinds of pairs, three losses, a weight schedule.

PaCMAP (Wang, Huang, Rudin & Shaposhnik, *Understanding How Dimension Reduction Tools
Work*, JMLR 22(201), 2021, section 5) minimises, with ``d_ij = 1 + |y_i - y_j|^2``,

``w_NB sum_NB d_ij / (10 + d_ij) + w_MN sum_MN d_ij / (10000 + d_ij) + w_FP sum_FP 1 / (1 + d_ij)``

over its near pairs (P's edges, :mod:`torchdr_sc.affinity.pacmap`), mid-near and further
pairs (:mod:`~torchdr_sc.objective.pacmap_pairs`). The weights follow the paper's three
phases (:func:`pacmap_weights`): ``w_MN`` falls linearly from 1000 to 3 over the first
``iter_per_phase`` iterations with ``w_NB = 2`` (the global layout), then ``w_NB = w_MN = 3``
for as many, then ``w_NB = 1``, ``w_MN = 0`` to the end (the local structure); ``w_FP = 1``
throughout.

A pair's term adds to both of its points, with opposite signs. So that every row of the
gradient is one sum in a fixed order, each kind of pairs is stored in both directions,
sorted by row (CSR): row ``i`` holds ``c_ij (y_i - y_j)`` for each pair it is in, as the
first point and then as the second, with ``c_ij = f / (a + d_ij)^2`` (``a`` = 10, 10000, 1;
``f`` = ``20 w_NB``, ``20000 w_MN``, ``-2 w_FP``: the derivative of the loss). Each row's
terms of a kind are added one after the other from zero, then the three sums in the order
near, mid-near, further. The C kernel of :mod:`~torchdr_sc.objective.native_pacmap`
(``compile='auto'`` on the CPU) and the PyTorch form here (other devices, ``compile=False``,
no compiler) compute the same correctly rounded operations, so they give the same bits, and
as every row is summed by one thread, so does any thread count. Under ``torchrun`` a process
sums only the rows of its shard (all their pairs): the processes' gradients add up to the
one-process gradient exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import torch

from .._random import make_generator
from ..affinity import SparseAffinity
from ..distributed import RowShard
from .pacmap_pairs import further_pairs, mid_near_pairs

__all__ = ["PACMAPObjective", "PairKind", "pacmap_weights"]

#: ``w_MN`` at the first iteration and at the end of the first phase.
MID_NEAR_WEIGHTS = (1000.0, 3.0)
#: ``a`` of each kind's coefficient ``f / (a + d)^2`` (near, mid-near, further).
OFFSETS = (10.0, 10000.0, 1.0)
#: Entries per block of rows in the PyTorch form (the size of its temporaries).
BLOCK_ENTRIES = 1 << 21


def pacmap_weights(iteration: int, iter_per_phase: int) -> tuple[float, float, float]:
    """``(w_NB, w_MN, w_FP)`` at ``iteration`` (0-based) of the paper's schedule."""
    if iteration < iter_per_phase:
        t = iteration / iter_per_phase
        start, end = MID_NEAR_WEIGHTS
        return 2.0, (1.0 - t) * start + t * end, 1.0
    if iteration < 2 * iter_per_phase:
        return 3.0, 3.0, 1.0
    return 1.0, 0.0, 1.0


def kind_factors(w_nb: float, w_mn: float, w_fp: float) -> tuple[float, float, float]:
    """``f`` of each kind: ``2 a w`` for the attractions ``d / (a + d)``, ``-2 w`` for the
    repulsion ``1 / (1 + d)``."""
    return 2.0 * OFFSETS[0] * w_nb, 2.0 * OFFSETS[1] * w_mn, -2.0 * w_fp


@dataclass(frozen=True)
class PairKind:
    """One kind of pairs in both directions, sorted by row, for the rows of one shard.

    Attributes
    ----------
    offset
        ``a`` of the coefficient ``f / (a + d)^2``.
    crow
        ``(n + 1,)`` int32 offsets: row ``i``'s entries are ``crow[i]:crow[i + 1]`` (none
        outside the shard).
    cols
        ``(E,)`` int32 partner of each entry.
    weights
        ``(E,)`` weight of each entry (P's, for the near pairs), or ``None`` (1).
    counts
        ``(n,)`` entries per row.
    """

    offset: float
    crow: torch.Tensor
    cols: torch.Tensor
    weights: torch.Tensor | None
    counts: torch.Tensor

    @classmethod
    def build(
        cls,
        first: torch.Tensor,
        second: torch.Tensor,
        n: int,
        offset: float,
        shard: RowShard,
        weights: torch.Tensor | None = None,
    ) -> PairKind:
        """The pairs ``(first[e], second[e])`` as entries of both their rows.

        A row holds the pairs where it is the first point (in their order), then those
        where it is the second (in theirs): a stable sort of the rows.
        """
        rows = torch.cat([first, second]).long()
        cols = torch.cat([second, first]).long()
        order = torch.sort(rows, stable=True).indices
        counts = torch.bincount(rows, minlength=n)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        lo, hi = int(offsets[shard.start]), int(offsets[shard.stop])
        keep = order[lo:hi]
        counts = counts.clone()
        counts[: shard.start] = 0
        counts[shard.stop :] = 0
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
        w = None if weights is None else torch.cat([weights, weights])[keep].contiguous()
        return cls(float(offset), crow, cols[keep].to(torch.int32), w, counts)

    @property
    def n_entries(self) -> int:
        """Stored entries (twice the pairs of the shard's rows)."""
        return int(self.cols.numel())


def kind_terms(
    coords: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor | None,
    offset: float,
    factor: torch.Tensor,
) -> list[torch.Tensor]:
    """Per coordinate, the entries' terms ``c (y_i - y_j)``, ``c = f w / (a + d)^2``.

    Every operation rounded on its own, in the C kernel's order: ``diff = y_i - y_j``,
    ``d = (1 + diff_1^2) + diff_2^2 ...``, ``den = d + a``, ``c = (f w) / (den den)``.
    """
    diffs = [c.index_select(0, rows).sub_(c.index_select(0, cols)) for c in coords]
    dist = torch.ones(rows.shape, dtype=coords.dtype, device=coords.device)
    for diff in diffs:
        dist.add_(diff * diff)
    den = dist.add_(offset)
    num = factor if weights is None else factor * weights
    coef = num / (den * den)
    return [diff.mul_(coef) for diff in diffs]


def kind_gradient(coords: torch.Tensor, kind: PairKind, factor: float) -> torch.Tensor:
    """``(n, d)`` sums of one kind's terms per row (the PyTorch form), in blocks of rows."""
    d, n = coords.shape
    out = torch.zeros(n, d, dtype=coords.dtype, device=coords.device)
    if kind.n_entries == 0:
        return out
    f = torch.tensor(factor, dtype=coords.dtype, device=coords.device)
    crow = kind.crow.long()
    targets = list(range(BLOCK_ENTRIES, kind.n_entries, BLOCK_ENTRIES))
    inner = torch.searchsorted(crow, torch.tensor(targets, device=crow.device)).tolist()
    bounds = sorted({0, *inner, n})
    for r0, r1 in pairwise(bounds):
        e0, e1 = int(crow[r0]), int(crow[r1])
        if e1 == e0:
            continue
        lengths = kind.counts[r0:r1]
        ids = torch.arange(r0, r1, device=coords.device)
        rows = torch.repeat_interleave(ids, lengths)
        w = None if kind.weights is None else kind.weights[e0:e1]
        terms = kind_terms(coords, rows, kind.cols[e0:e1].long(), w, kind.offset, f)
        for c in range(d):
            out[r0:r1, c] = torch.segment_reduce(terms[c], "sum", lengths=lengths, unsafe=True)
    return out


def eager_gradient(
    coords: torch.Tensor, kinds: list[PairKind | None], factors: tuple[float, ...]
) -> torch.Tensor:
    """The gradient from the kinds' sums added in order (``None``: a kind left out)."""
    out = None
    for kind, factor in zip(kinds, factors, strict=True):
        if kind is None:
            continue
        part = kind_gradient(coords, kind, factor)
        out = part if out is None else out.add_(part)
    assert out is not None
    return out


class _NearOnReference:
    """New points' near-pair attraction to a fixed reference (the pacmap package's
    ``transform``): ``grad_i = sum_j c_ij (z_i - y_j)``, ``c_ij = 20 w_NB P_ij / (10 +
    d_ij)^2``, with ``w_NB`` on the schedule."""

    def __init__(self, y: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> None:
        self.y_coords = y.T.contiguous()
        self.indices, self.weights = indices, weights.to(y.dtype)

    def __call__(self, z: torch.Tensor, factor: float) -> torch.Tensor:
        f = torch.tensor(factor, dtype=z.dtype, device=z.device)
        diffs = [zc[:, None] - yc[self.indices] for zc, yc in zip(z.T, self.y_coords, strict=True)]
        dist = torch.ones(self.indices.shape, dtype=z.dtype, device=z.device)
        for diff in diffs:
            dist.add_(diff * diff)
        den = dist.add_(OFFSETS[0])
        coef = (f * self.weights) / (den * den)
        return torch.stack([(coef * diff).sum(1) for diff in diffs], 1)


class PACMAPObjective:
    """PaCMAP's gradient (module notes), its pairs drawn when it is built.

    Parameters
    ----------
    P
        The near pairs (:class:`~torchdr_sc.affinity.pacmap.PACMAPAffinity`; their weights
        multiply the near terms), or with ``reference`` the new points' rows
        (:class:`~torchdr_sc.objective.ReferenceRows`).
    data
        ``(n, d)`` input data, for the mid-near pairs (``None``: none).
    n_mid_near, n_further
        Mid-near and further pairs per point.
    seed
        Seeds the draws of the pairs (the same on every process).
    metric
        The input metric (mid-near candidates are ranked by it).
    iter_per_phase
        Length of each of the first two phases of :func:`pacmap_weights`.
    shard
        Rows this process sums (default: all).
    reference
        ``(n, d)`` reference embedding held fixed: the objective then moves new points
        only, by their near-pair attraction (the pacmap package's ``transform``).
    compile
        ``'auto'``: the C kernel on the CPU where it builds; ``False``: the PyTorch form.
        (``True`` is taken as ``'auto'``: the kernel needs no tracing compiler.)
    """

    def __init__(
        self,
        P: Any,
        *,
        data: torch.Tensor | None = None,
        n_mid_near: int = 5,
        n_further: int = 20,
        seed: int = 0,
        metric: str = "sqeuclidean",
        iter_per_phase: int = 100,
        shard: RowShard | None = None,
        reference: torch.Tensor | None = None,
        compile: bool | str = "auto",
    ) -> None:
        self.iter_per_phase = int(iter_per_phase)
        if reference is not None:
            self._on_reference = _NearOnReference(reference, P.indices, P.weights)
            self.path = "reference fixed"
            return
        self._on_reference = None
        self._build_pairs(P, data, n_mid_near, n_further, seed, metric, shard or RowShard.full(P.n))
        self._library = None
        if compile is not False and P.device.type == "cpu":
            from . import native_pacmap

            self._library = native_pacmap.library()
        self.path = "pairs native" if self._library is not None else "pairs eager"

    def _build_pairs(
        self,
        P: SparseAffinity,
        data: torch.Tensor | None,
        n_mid_near: int,
        n_further: int,
        seed: int,
        metric: str,
        shard: RowShard,
    ) -> None:
        n, device = P.n, P.device
        # one generator per kind of pairs: the further pairs do not depend on the mid-near
        seeds = torch.randint(0, 2**62, (2,), generator=make_generator(int(seed), "cpu"))
        if data is not None and n_mid_near > 0:
            generator = make_generator(int(seeds[0]), device)
            mid = mid_near_pairs(data.to(device), int(n_mid_near), generator, metric)
        else:
            mid = torch.empty(n, 0, dtype=torch.long, device=device)
        far = further_pairs(P, int(n_further), make_generator(int(seeds[1]), device))
        heads = torch.arange(n, device=device)
        weights = P.weights if P.weights.is_floating_point() else P.weights.float()

        def kind(others: torch.Tensor, offset: float) -> PairKind:
            first = heads.repeat_interleave(others.shape[1])
            return PairKind.build(first, others.reshape(-1), n, offset, shard)

        self.kinds: list[PairKind | None] = [
            PairKind.build(P.rows, P.cols, n, OFFSETS[0], shard, weights),
            kind(mid, OFFSETS[1]),
            kind(far, OFFSETS[2]),
        ]
        #: Near, mid-near and further pairs drawn (each stored in both its rows).
        self.pair_counts = (P.nnz, int(mid.numel()), int(far.numel()))
        self._bounds: dict[tuple, list[int]] = {}

    def factors(self, iteration: int, exaggeration: float = 1.0) -> tuple[float, float, float]:
        """``f`` of each kind at ``iteration`` (the attractions times ``exaggeration``)."""
        w_nb, w_mn, w_fp = pacmap_weights(iteration, self.iter_per_phase)
        return kind_factors(w_nb * exaggeration, w_mn * exaggeration, w_fp)

    def __call__(self, z: torch.Tensor, iteration: int, phase: Any) -> torch.Tensor:
        """The gradient at ``z`` at ``iteration`` of the schedule."""
        exaggeration = float(getattr(phase, "exaggeration", 1.0))
        factors = self.factors(iteration, exaggeration)
        if self._on_reference is not None:
            return self._on_reference(z, factors[0])
        near = self.kinds[0]
        if near is not None and near.weights is not None and near.weights.dtype != z.dtype:
            self.kinds[0] = replace(near, weights=near.weights.to(z.dtype))  # once
        kinds = list(self.kinds)
        if factors[1] == 0.0:
            kinds[1] = None  # the last phase: no mid-near term at all
        coords = z.T.contiguous()
        if self._library is not None:
            from . import native_pacmap

            key = (factors[1] == 0.0, torch.get_num_threads())
            if key not in self._bounds:
                self._bounds[key] = native_pacmap.row_bounds(kinds, z.shape[0])
            out = native_pacmap.gradient(self._library, coords, kinds, factors, self._bounds[key])
            if out is not None:
                return out
        return eager_gradient(coords, kinds, factors)
