"""Closed-form gradients of the exact (all-pairs) neighbor-embedding objectives.

All functions take the embedding ``z`` of shape ``(n, d)``, the input affinity ``P`` as a
:class:`~torchdr_sc.affinity.SparseAffinity`, and the rows this process owns (a
:class:`~torchdr_sc.distributed.RowShard`; all rows on one device). They return the
gradient restricted to the owned rows' contributions, so that summing the results of all
shards (an all-reduce) gives the full gradient. The all-pairs repulsion is computed in
row blocks so that no ``n x n`` matrix is ever allocated: memory is ``O(block * n)``.

References
----------
- G. Hinton, S. Roweis. Stochastic Neighbor Embedding. NeurIPS 2002.
- L. van der Maaten, G. Hinton. Visualizing Data using t-SNE. JMLR 2008.
- H. Van Assel, T. Vayer, R. Flamary, N. Courty. SNEkhorn: Dimension Reduction with
  Symmetric Entropic Affinities. NeurIPS 2023.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import torch

from .._logging import get_logger
from .._reduce import fixed_order_sum
from ..affinity import SparseAffinity
from ..distributed import RowShard

logger = get_logger(__name__)

#: ``(z, shard) -> (rep, zsum)``: the repulsion sums of the shard's rows (see
#: :func:`student_repulsion_terms`).
RepulsionTerms = Callable[[torch.Tensor, RowShard], tuple[torch.Tensor, torch.Tensor]]

#: Bytes allowed for one block of pairwise values (block x n floats), per temporary.
BLOCK_BYTES = 64 * 2**20


def shard_blocks(shard: RowShard, n: int, itemsize: int = 4) -> Iterator[tuple[int, int]]:
    """Row blocks of ``shard`` small enough that ``block x n`` fits :data:`BLOCK_BYTES`."""
    size = max(1, BLOCK_BYTES // max(1, n * itemsize))
    for s in range(shard.start, shard.stop, size):
        yield s, min(s + size, shard.stop)


def matvec_columns(m: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``m @ coords.T`` as one matrix-vector product per coordinate.

    ``coords`` is ``(d, n)``. For the thin right-hand sides of embeddings (d = 2 or 3),
    ``d`` BLAS gemv calls are several times faster on CPU than one gemm.
    """
    return torch.stack([torch.mv(m, c) for c in coords], 1)


def _sqdist_block(zb: torch.Tensor, z: torch.Tensor, sq: torch.Tensor, s: int) -> torch.Tensor:
    """Squared distances between rows ``zb`` (starting at row ``s``) and all of ``z``."""
    d = sq[s : s + zb.shape[0], None] + sq[None, :] - 2.0 * (zb @ z.T)
    return d.clamp_min_(0.0)


def edge_differences(
    z: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-coordinate differences ``z[rows] - z[cols]`` and squared distances of edges.

    Works on contiguous 1-D coordinate vectors with ``index_select``: on CPU this is several
    times faster than indexing rows of an ``(n, d)`` tensor.
    """
    coords = z.T.contiguous()
    diffs = [c.index_select(0, rows) - c.index_select(0, cols) for c in coords]
    d2 = diffs[0] * diffs[0]
    for dc in diffs[1:]:
        d2 = d2.addcmul_(dc, dc)
    return diffs, d2


def scatter_rows(
    n: int, index: torch.Tensor, coef: torch.Tensor, diffs: list[torch.Tensor]
) -> torch.Tensor:
    """``out[index[e]] += coef[e] * diffs[:, e]`` as an ``(n, d)`` tensor."""
    out = torch.zeros(len(diffs), n, dtype=coef.dtype, device=coef.device)
    for o, dc in zip(out, diffs, strict=True):
        o.index_add_(0, index, coef * dc)
    return out.T


def attraction_student(
    z: torch.Tensor,
    P: SparseAffinity,
    edge_mask: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Attractive gradient ``4 * scale * sum_j P_ij (z_i - z_j) / (1 + |z_i - z_j|^2)``
    over P's edges."""
    rows, cols, w = P.rows, P.cols, P.weights
    if edge_mask is not None:
        rows, cols, w = rows[edge_mask], cols[edge_mask], w[edge_mask]
    diffs, d2 = edge_differences(z, rows, cols)
    coef = (4.0 * scale * w.to(z.dtype)) / (1.0 + d2)
    return scatter_rows(z.shape[0], rows, coef, diffs)


def _attraction_coefficients(
    coords: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor,
    factor: torch.Tensor,
) -> torch.Tensor:
    """``factor P_ij / (1 + |z_i - z_j|^2)`` of every edge from ``(d, n)`` coordinates.

    Written for ``torch.compile``: TorchInductor fuses the gathers and the kernel into one
    loop over the edges, with no edge-sized temporaries but the result. ``factor`` is a
    0-d tensor, so a new value does not recompile.
    """
    diff = coords[:, rows] - coords[:, cols]
    return (factor * weights) / (1.0 + (diff * diff).sum(0))


def _attraction_coefficients_eager(
    coords: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor,
    factor: torch.Tensor,
) -> torch.Tensor:
    """:func:`_attraction_coefficients` without a compiler: per-coordinate gathers of
    contiguous vectors (``index_select``) and in-place updates, so that the only edge-sized
    temporaries are one difference and the result."""
    denom = torch.ones_like(weights)
    for c in coords:
        diff = c.index_select(0, rows).sub_(c.index_select(0, cols))
        denom.addcmul_(diff, diff)
    return (weights * factor).div_(denom)


_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


#: ``compile='auto'`` compiles the t-SNE attraction on CPU when the fit evaluates at least
#: this many edges in all (P's edges x iterations): there the time the compiled loop saves
#: over the eager CSR path repays its one-time compilation, cold cache or warm (the
#: break-even points are measured in ``benchmarks/results/attraction-paths.md``).
ATTRACTION_COMPILE_MIN_WORK = 1.5e9


def attraction_compiles(
    compile: bool | str, device: torch.device, edges: int, iterations: int | None
) -> bool:
    """Whether :class:`StudentAttraction` compiles: ``True`` / ``False`` as given; ``'auto'``:
    on CPU when the whole fit's edge evaluations (``edges x iterations``) reach
    :data:`ATTRACTION_COMPILE_MIN_WORK`, so that the one-time compilation pays for itself
    (decided once per fit, from its total work). Without ``iterations``, the epoch rule
    (:func:`~torchdr_sc.objective.epoch.resolve_compile`, per iteration) applies.
    """
    from .epoch import resolve_compile

    if compile != "auto" or iterations is None:
        return resolve_compile(compile, device, float(edges))
    return device.type == "cpu" and edges * iterations >= ATTRACTION_COMPILE_MIN_WORK


class StudentAttraction:
    """The t-SNE attraction over P's edges (of the shard's rows), eager or compiled.

    Both paths compute one coefficient per edge and sum each row's edges with one CSR
    product ``W @ [z, 1]`` (rows in order, no atomics: the result does not depend on the
    thread count). Compiled, the coefficients come from one fused loop; eagerly, from a few
    edge-sized passes, still several times faster than the scatter with ``index_add_`` it
    replaces, which made t-SNE at 10k-30k cells slower than openTSNE (the three paths are
    timed in ``benchmarks/results/attraction-paths.md``).

    Parameters
    ----------
    P
        The input affinity (its weights in the embedding's dtype; edges sorted by row).
    shard
        Rows this process owns: only their edges are summed.
    scale
        Factor on P's weights (e.g. ``1 / sum P``), applied in the kernel instead of a
        scaled copy of P.
    compile
        ``True``, ``False`` or ``'auto'`` (see :func:`attraction_compiles`). If the compiler
        fails, ``'auto'`` runs eagerly (logged) and ``True`` raises.
    iterations
        Iterations the fit plans (for ``'auto'``).
    """

    def __init__(
        self,
        P: SparseAffinity,
        shard: RowShard,
        *,
        compile: bool | str,
        scale: float = 1.0,
        iterations: int | None = None,
    ) -> None:
        self.scale = float(scale)
        partial_shard = shard.start or shard.stop < P.n
        mask = (P.rows >= shard.start) & (P.rows < shard.stop) if partial_shard else None
        self.P, self.mask = P, mask
        rows, cols, weights = P.rows, P.cols, P.weights
        if mask is not None:
            rows, cols, weights = rows[mask], cols[mask], weights[mask]
        self.compiled = attraction_compiles(compile, P.device, int(rows.numel()), iterations)
        self._must_compile = compile is True
        self.rows = rows.to(torch.int32)  # no copy when P's ids are int32 already
        self.cols = cols.to(torch.int32)
        self.weights = weights
        self.factor = torch.tensor(4.0 * self.scale, dtype=weights.dtype, device=P.device)
        counts = torch.bincount(rows, minlength=P.n)
        self.crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)

    def _coefficients(self, coords: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            return _attraction_coefficients_eager(
                coords, self.rows, self.cols, self.weights, self.factor
            )
        if "coefficients" not in _COMPILED:
            _COMPILED["coefficients"] = torch.compile(_attraction_coefficients, dynamic=True)
        return _COMPILED["coefficients"](coords, self.rows, self.cols, self.weights, self.factor)

    def _row_sums(self, z: torch.Tensor) -> torch.Tensor:
        """Edge coefficients, then one CSR product ``W @ [z, 1]``: each row's contiguous
        edges summed in order, without the atomics a scatter needs (and faster than a
        compiled scatter on CPU; see ``benchmarks/README.md``)."""
        coef = self._coefficients(z.T.contiguous())
        n = z.shape[0]
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            W = torch.sparse_csr_tensor(self.crow, self.cols, coef, (n, n))
        sums = W @ torch.cat([z, torch.ones_like(z[:, :1])], 1)
        return z * sums[:, -1:] - sums[:, :-1]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """``4 * scale * sum_j P_ij (z_i - z_j) / (1 + |z_i - z_j|^2)`` per row (``(n, d)``)."""
        if z.device.type != "cpu":  # the CSR product is a CPU optimisation
            return attraction_student(z, self.P, self.mask, self.scale)
        try:
            return self._row_sums(z)
        except Exception as err:  # the compiler (not the arithmetic) failed
            if not self.compiled or self._must_compile:
                raise
            logger.info("torch.compile of the attraction failed (%s); running it eagerly", err)
            self.compiled = False
            return self._row_sums(z)


def student_repulsion_terms(
    z: torch.Tensor, shard: RowShard, workspace: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised t-SNE repulsion of the shard's rows and its part of the normaliser.

    Returns ``(rep, zsum)`` where ``rep_i = sum_j w_ij^2 (z_i - z_j)`` for owned rows (zero
    elsewhere), ``w_ij = 1 / (1 + |z_i - z_j|^2)``, and ``zsum = sum_{i owned, j != i} w_ij``.
    Every block is computed in place in one reusable buffer (``workspace``, kept by the
    caller across iterations), so an iteration allocates no ``block x n`` temporaries.
    """
    n = z.shape[0]
    sq = (z * z).sum(1)
    rep = torch.zeros_like(z)
    zsum = torch.zeros((), dtype=z.dtype, device=z.device)
    workspace = {} if workspace is None else workspace
    zt = z.T
    coords = zt.contiguous()
    for s, e in shard_blocks(shard, n, z.element_size()):
        buf = workspace.get(e - s)
        if buf is None or buf.dtype != z.dtype or buf.device != z.device:
            buf = workspace[e - s] = torch.empty(e - s, n, dtype=z.dtype, device=z.device)
        # 1 + |z_i - z_j|^2 = (1 + |z_i|^2) + |z_j|^2 - 2 z_i . z_j, then w = 1 / that
        torch.addmm(sq[None, :], z[s:e], zt, beta=1.0, alpha=-2.0, out=buf)
        w = buf.add_(sq[s:e, None] + 1.0).clamp_min_(1.0).reciprocal_()
        zsum = zsum + fixed_order_sum(w) - (e - s)  # remove the diagonal (w_ii = 1)
        w2 = w.square_()
        rep[s:e] = z[s:e] * w2.sum(1, keepdim=True) - matvec_columns(w2, coords)
    return rep, zsum


def tsne_gradient(
    z: torch.Tensor,
    P: SparseAffinity,
    exaggeration: float,
    shard: RowShard,
    reduce_scalar: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    workspace: dict | None = None,
    repulsion_terms: RepulsionTerms | None = None,
    attraction: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """t-SNE gradient (van der Maaten & Hinton 2008) for P summing to 1.

    ``grad_i = 4 (exaggeration * sum_j P_ij w_ij (z_i - z_j) - sum_j w_ij^2 (z_i - z_j) / Z)``
    with ``Z = sum_{k != l} w_kl``; ``reduce_scalar`` all-reduces the normaliser across shards.
    The repulsion sums come from ``repulsion_terms(z, shard)`` (default: exact,
    :func:`student_repulsion_terms`; the interpolated one is
    :func:`~torchdr_sc.objective.interpolated.student_repulsion_terms_fft`); the attraction
    from ``attraction(z)`` (default: :func:`attraction_student`, eager).
    """
    if attraction is None:
        partial_shard = shard.start or shard.stop < P.n
        mask = (P.rows >= shard.start) & (P.rows < shard.stop) if partial_shard else None
        attr = attraction_student(z, P, mask)
    else:
        attr = attraction(z)
    if repulsion_terms is None:
        rep, zsum = student_repulsion_terms(z, shard, workspace)
    else:
        rep, zsum = repulsion_terms(z, shard)
    zsum = reduce_scalar(zsum)
    return exaggeration * attr - (4.0 / zsum) * rep


def tsne_kl(z: torch.Tensor, P: SparseAffinity) -> torch.Tensor:
    """KL(P || Q) of t-SNE, for logging (single process)."""
    _, zsum = student_repulsion_terms(z, RowShard.full(z.shape[0]))
    d2 = ((z[P.rows] - z[P.cols]) ** 2).sum(1)
    w = P.weights.to(z.dtype)
    log_q = -torch.log1p(d2) - torch.log(zsum)
    return (w * (torch.log(w.clamp_min(1e-30)) - log_q)).sum()


def sne_attraction(
    z: torch.Tensor, P: SparseAffinity, exaggeration: float, shard: RowShard
) -> torch.Tensor:
    """SNE's attraction ``2 e sum_j (p_{j|i} + p_{i|j}) (z_i - z_j)`` from the shard's edges.

    Every edge ``(i, j)`` of a row ``i`` of the shard adds to rows ``i`` and ``j``, so the
    processes' results add up (all-reduce) to the full attraction.
    """
    n = z.shape[0]
    mask = (
        (P.rows >= shard.start) & (P.rows < shard.stop) if shard.start or shard.stop < n else None
    )
    rows, cols, w = P.rows, P.cols, P.weights.to(z.dtype)
    if mask is not None:
        rows, cols, w = rows[mask], cols[mask], w[mask]
    diffs, _ = edge_differences(z, rows, cols)
    coef = (2.0 * exaggeration) * w
    return scatter_rows(n, rows, coef, diffs) - scatter_rows(n, cols, coef, diffs)


def sne_gradient(
    z: torch.Tensor,
    P: SparseAffinity,
    exaggeration: float,
    shard: RowShard,
) -> torch.Tensor:
    """Exact SNE gradient (Hinton & Roweis 2002) for a row-stochastic P.

    Loss ``sum_i KL(P_i || Q_i)`` with ``Q_{j|i} = softmax_j(-|z_i - z_j|^2)`` (j != i):
    ``grad_i = 2 sum_j (e p_{j|i} - q_{j|i} + e p_{i|j} - q_{i|j}) (z_i - z_j)``.
    """
    n = z.shape[0]
    grad = sne_attraction(z, P, exaggeration, shard)
    sq = (z * z).sum(1)
    coords = z.T.contiguous()
    for s, e in shard_blocks(shard, n, z.element_size()):
        d = _sqdist_block(z[s:e], z, sq, s)
        d[torch.arange(e - s, device=z.device), torch.arange(s, e, device=z.device)] = float("inf")
        q = torch.softmax(-d, dim=1)  # q[b, j] = q_{j|s+b}
        # rows of the block: -2 sum_j q_{j|i} (z_i - z_j)
        grad[s:e] -= 2.0 * (z[s:e] * q.sum(1, keepdim=True) - matvec_columns(q, coords))
        # every row i as the neighbour of block rows b: -2 sum_b q_{i|b} (z_i - z_b)
        grad -= 2.0 * (z * q.sum(0)[:, None] - matvec_columns(q.T, coords[:, s:e]))
    return grad
