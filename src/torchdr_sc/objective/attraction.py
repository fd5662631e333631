"""t-SNE's attraction over P's edges on the CPU: one arithmetic, three ways to run it.

The attraction of row ``i`` is ``sum_j c_ij (z_i - z_j)`` with ``c_ij = f P_ij / (1 + |z_i -
z_j|^2)`` (``f = 4 / sum P`` for t-SNE), over the edges of P in CSR order (edges sorted by
row). It runs

- as the C kernel of :mod:`~torchdr_sc.objective.native` (``compile='auto'`` on CPU: one
  pass over the edges, each row summed as it is walked), built once per machine;
- with ``torch.compile`` (``compile=True``): the per-edge terms ``c_ij (z_i - z_j)`` in one
  fused loop, then each row summed by :func:`torch.segment_reduce`;
- eagerly (``compile=False``, and where no C compiler is found): the same terms from a few
  edge-sized passes, in blocks of rows so that the temporaries stay small.

All three compute ``d = z_i - z_j``, ``denom = (1 + d_1^2) + d_2^2 ...``, ``c = (f P) /
denom`` and ``c d`` with every operation rounded on its own, and add a row's terms one after
the other from zero, so they give the same bits (``tests/test_native_attraction.py``); and as
every row is summed by one thread in order, so does any thread count. Their speeds are in
``benchmarks/README.md``. On other devices the attraction is scattered
(:func:`~torchdr_sc.objective.exact.attraction_student`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..affinity import SparseAffinity
from ..distributed import RowShard

#: How the attraction runs (see the module notes).
ATTRACTION_PATHS = ("native", "compiled", "eager")
#: Edges per block of rows of the compiled and eager paths (their temporaries' size).
BLOCK_EDGES = 1 << 21

_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def attraction_path(compile: bool | str, device: torch.device) -> str:
    """Which of :data:`ATTRACTION_PATHS` :class:`StudentAttraction` takes: ``compile=True``
    compiles, ``False`` runs eagerly, ``'auto'`` takes the C kernel on CPU at every size (it is
    built once per machine, in about a second) and runs eagerly elsewhere or without it."""
    if compile is True:
        return "compiled"
    if compile == "auto" and device.type == "cpu":
        from . import native

        return "native" if native.library() is not None else "eager"
    return "eager"


def edge_terms(
    coords: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor,
    factor: torch.Tensor,
) -> torch.Tensor:
    """``(d, edges)`` terms ``c_ij (z_i - z_j)`` from ``(d, n)`` coordinates.

    Written for ``torch.compile``: TorchInductor fuses the gathers and the arithmetic into one
    loop over the edges (it does not fuse multiply-adds, so every operation is rounded as in
    the eager form). ``factor`` is a 0-d tensor, so a new value does not recompile.
    """
    diff = coords[:, rows] - coords[:, cols]
    square = diff * diff
    denom = 1.0 + square[0]
    for c in range(1, coords.shape[0]):
        denom = denom + square[c]
    coef = (factor * weights) / denom
    return coef * diff


def edge_terms_eager(
    coords: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor,
    factor: torch.Tensor,
) -> list[torch.Tensor]:
    """:func:`edge_terms` without a compiler, one vector per coordinate: gathers of
    contiguous vectors (``index_select``) and in-place updates. Separate ``mul`` and
    ``add_`` (not ``addcmul_``, which may be computed as a fused multiply-add) keep every
    operation rounded on its own."""
    diffs = [c.index_select(0, rows).sub_(c.index_select(0, cols)) for c in coords]
    denom = torch.ones_like(weights)
    for diff in diffs:
        denom.add_(diff * diff)
    coef = (factor * weights).div_(denom)
    return [diff.mul_(coef) for diff in diffs]


class StudentAttraction:
    """The t-SNE attraction over P's edges (of the shard's rows), on one of
    :data:`ATTRACTION_PATHS`.

    Parameters
    ----------
    P
        The input affinity (its weights in the embedding's dtype; edges sorted by row).
    shard
        Rows this process owns: only their edges are summed.
    compile
        ``True``, ``False`` or ``'auto'`` (see :func:`attraction_path`). If
        ``torch.compile`` fails, ``True`` raises.
    scale
        Factor on P's weights (e.g. ``1 / sum P``), applied in the kernel instead of a
        scaled copy of P.

    Attributes
    ----------
    path
        One of :data:`ATTRACTION_PATHS`.
    """

    def __init__(
        self, P: SparseAffinity, shard: RowShard, *, compile: bool | str, scale: float = 1.0
    ) -> None:
        self.scale = float(scale)
        # a row-sharded P holding exactly the shard's rows needs no selection (nor its copy)
        held = P.row_range == (shard.start, shard.stop)
        partial_shard = (shard.start or shard.stop < P.n) and not held
        mask = (P.rows >= shard.start) & (P.rows < shard.stop) if partial_shard else None
        self.P, self.mask = P, mask
        rows, cols, weights = P.rows, P.cols, P.weights
        if mask is not None:
            rows, cols, weights = rows[mask], cols[mask], weights[mask]
        self.path = attraction_path(compile, P.device)
        self.rows = rows.to(torch.int32)  # no copy when P's ids are int32 already
        self.cols = cols.to(torch.int32)
        self.weights = weights
        self.factor = torch.tensor(4.0 * self.scale, dtype=weights.dtype, device=P.device)
        self.counts = torch.bincount(rows, minlength=P.n)
        self.crow = torch.cat([self.counts.new_zeros(1), self.counts.cumsum(0)]).to(torch.int32)
        # blocks of whole rows of about BLOCK_EDGES edges (compiled and eager paths)
        targets = list(range(BLOCK_EDGES, int(rows.numel()), BLOCK_EDGES))
        inner = torch.searchsorted(self.crow, torch.tensor(targets, dtype=torch.int32)).tolist()
        self.blocks = sorted({0, *inner, P.n})

    def _native(self, coords: torch.Tensor) -> torch.Tensor | None:
        from . import native

        if not native.supports(coords, self.crow, self.cols):
            return None
        factor = float(self.factor)
        return native.student_attraction(
            native.library(), coords, self.crow, self.cols, self.weights, factor
        )

    def _blockwise(self, coords: torch.Tensor) -> torch.Tensor:
        """The compiled or eager terms of each block of rows, summed row by row in order."""
        d, n = coords.shape
        out = torch.empty(n, d, dtype=coords.dtype, device=coords.device)
        if self.path == "compiled" and "terms" not in _COMPILED:
            _COMPILED["terms"] = torch.compile(edge_terms, dynamic=True)
        for r0, r1 in zip(self.blocks[:-1], self.blocks[1:], strict=True):
            e0, e1 = int(self.crow[r0]), int(self.crow[r1])
            args = (self.rows[e0:e1], self.cols[e0:e1], self.weights[e0:e1], self.factor)
            if self.path == "compiled":
                terms = _COMPILED["terms"](coords, *args)
            else:
                terms = edge_terms_eager(coords, *args)
            lengths = self.counts[r0:r1]
            for c in range(d):
                out[r0:r1, c] = torch.segment_reduce(terms[c], "sum", lengths=lengths, unsafe=True)
        return out

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """``4 * scale * sum_j P_ij (z_i - z_j) / (1 + |z_i - z_j|^2)`` per row (``(n, d)``)."""
        if z.device.type != "cpu":
            from .exact import attraction_student

            return attraction_student(z, self.P, self.mask, self.scale)
        coords = z.T.contiguous()
        if self.path == "native":
            out = self._native(coords)
            if out is not None:
                return out
        return self._blockwise(coords)
