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

from collections.abc import Callable, Iterator

import torch

from .._device import one_thread_on_cpu
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
    ``d`` BLAS gemv calls are several times faster on CPU than one gemm. On the CPU they
    run on one thread: MKL splits a long row's sum between threads on some machines
    (AVX-512), which changed the last bits with the thread count.
    """
    with one_thread_on_cpu(m.device):
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
