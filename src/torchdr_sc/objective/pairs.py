"""The per-pair arithmetic of one negative-sampling epoch, written once for eager and compiled use.

:func:`epoch_pair_terms` takes this epoch's active edges and returns, for every edge, the
clipped attractive gradient (applied to the head, and with the opposite sign to the tail) and
the head's total gradient (attraction plus the clipped repulsion of its negatives). It draws
the negatives itself from a counter-based hash (:func:`hashed_negatives`), so that the whole
epoch is one pure function of ``(embedding, edges, key)``: under :func:`torch.compile` the
gathers, the random draws, the kernel arithmetic and the sum over negatives fuse into a single
loop over edges, instead of ~25 passes over ``edges x negatives`` temporaries in eager mode.
Both paths compute the same negatives and the same formulas (they differ by float rounding).

Layout: the embedding is passed as ``coords``, a list of ``d`` contiguous ``(n,)`` vectors,
and negatives as ``(m, A)``, so that every elementwise operation runs along the
long edge axis and the sum over negatives is a sum of ``m`` contiguous vectors.

References
----------
- L. McInnes, J. Healy, J. Melville. UMAP. arXiv:1802.03426, 2018 (the kernel and clipping).
- S. Damrich, J. N. Böhm, F. A. Hamprecht, D. Kobak. From t-SNE to UMAP with contrastive
  learning. ICLR 2023 (the InfoNCE form).
- G. L. Steele, D. Lea, C. H. Flood. Fast splittable pseudorandom number generators.
  OOPSLA 2014 (the 64-bit finaliser used as the hash).
"""

from __future__ import annotations

import torch

#: Squared-distance offset in the repulsive gradient, as in umap-learn.
REPULSION_EPS = 1e-3

# ``torch.compiler.is_compiling`` is new in torch 2.3; before it, TorchDynamo folds
# ``torch._utils.is_compiling`` to True in the same way while it traces.
_is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._utils.is_compiling

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """The two's-complement int64 reading of a 64-bit unsigned value."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _mix64_int(x: int) -> int:
    """SplitMix64 finaliser on a Python int (unsigned 64-bit arithmetic)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _MIX1) & _MASK64
    x = ((x ^ (x >> 27)) * _MIX2) & _MASK64
    return x ^ (x >> 31)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic on signed ints)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors (multiplications wrap modulo 2**64)."""
    x = (x ^ _shift_right(x, 30)) * _signed(_MIX1)
    x = (x ^ _shift_right(x, 27)) * _signed(_MIX2)
    return x ^ _shift_right(x, 31)


def negative_key(seed: int, epoch: int, chunk: int = 0) -> int:
    """The int64 key of one epoch's negatives, a hash of ``(seed, epoch)``.

    ``chunk`` numbers the blocks of active edges an epoch is evaluated in (the draws of a
    block are counted from 0, so each block needs its own key); block 0 has the key of the
    whole epoch.
    """
    key = _mix64_int(_mix64_int(seed) + (epoch + 1) * _GOLDEN)
    if chunk:
        key = _mix64_int(key + chunk * _GOLDEN)
    return _signed(key)


def hash_key(seed: int, epoch: int, device: torch.device | str, chunk: int = 0) -> torch.Tensor:
    """``[key, golden]`` as an int64 tensor: what the compiled epoch hashes its negatives with.

    The golden-ratio step travels as data rather than as a constant so that no compiler
    writes the 64-bit literal against a 32-bit loop index (Triton rejects that). ``chunk``
    as in :func:`negative_key`.
    """
    values = [negative_key(seed, epoch, chunk), _signed(_GOLDEN)]
    return torch.tensor(values, dtype=torch.int64, device=device)


def hashed_negatives(key: torch.Tensor, n_active: int, m: int, n: int) -> torch.Tensor:
    """``(m, n_active)`` uniform indices in ``[0, n)``, a pure function of ``key``.

    Draw ``j`` of edge ``e`` is the top 32 bits of ``mix64(key + (j * n_active + e) * golden)``
    mapped to ``[0, n)`` by a multiply-shift (no division; bias below ``n / 2**32``). Row
    ``j`` is :func:`hashed_draw` ``j``.

    Parameters
    ----------
    key
        0-d int64 tensor from :func:`negative_key`, or the pair ``[key, golden]`` from
        :func:`hash_key` (same draws).
    n_active, m
        Number of edges and of negatives per edge.
    n
        Number of points (at most ``2**31 - 1``).
    """
    counter = torch.arange(m * n_active, device=key.device, dtype=torch.int64)
    return _draw(key, counter.view(m, n_active), n)


def hashed_draw(key: torch.Tensor, n_active: int, j: int, n: int) -> torch.Tensor:
    """Row ``j`` of :func:`hashed_negatives`: the ``j``-th negative of every edge, ``(n_active,)``.

    The compiled epoch draws its negatives one row at a time, so that all its tensors are
    edge-shaped and TorchInductor fuses the whole epoch into one loop over edges.
    """
    counter = torch.arange(n_active, device=key.device, dtype=torch.int64)
    return _draw(key, counter + j * n_active, n)


def _draw(key: torch.Tensor, counter: torch.Tensor, n: int) -> torch.Tensor:
    """Indices in ``[0, n)`` hashed from the int64 ``counter`` (see :func:`hashed_negatives`)."""
    step: torch.Tensor | int = _signed(_GOLDEN)
    if key.ndim == 1:
        key, step = key[0], key[1]
    bits = _mix64(counter * step + key)
    return (_shift_right(bits, 32) * n) >> 32


#: ``log2(1 + t) ~ t q(t)`` on ``[0, 1)``, coefficients of ``q`` from the highest degree
#: (least-squares fit; max abs error 1.9e-5).
_LOG2_COEFFS = (-0.0341732, 0.14467575, -0.30103911, 0.46802418, -0.72017529, 1.44266886)
#: ``2^f`` on ``[0, 1)``, from the highest degree (least squares; max rel. error 2.3e-7).
_EXP2_COEFFS = (0.00189438, 0.00894058, 0.05587656, 0.24013169, 0.69315678, 0.99999977)


def _horner(x: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    out = x * coeffs[0] + coeffs[1]
    for c in coeffs[2:]:
        out = out * x + c
    return out


def _fast_log2(x: torch.Tensor) -> torch.Tensor:
    """log2 of positive normal float32 values: exponent bits plus a polynomial."""
    bits = x.view(torch.int32)
    exponent = ((bits >> 23) & 0xFF) - 127
    t = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32) - 1.0
    return exponent.to(torch.float32) + t * _horner(t, _LOG2_COEFFS)


def _fast_exp2(y: torch.Tensor) -> torch.Tensor:
    """2**y for float32 ``y`` in [-126, 126] (clamped): a polynomial times a power of two."""
    y = y.clamp(-126.0, 126.0)
    whole = torch.floor(y)
    frac = _horner(y - whole, _EXP2_COEFFS)
    return (frac.view(torch.int32) + (whole.to(torch.int32) << 23)).view(torch.float32)


def _pow_b(d2: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``d2 ** b`` for ``d2 >= 0`` (clamped at 1e-12).

    When compiled, float32 goes through :func:`_fast_log2` and :func:`_fast_exp2` (relative
    error ~2e-5; fused, it is ~2x cheaper than ``pow``); eagerly those would be ~20 separate
    passes, so the eager path takes ``exp(b log d2)``. Not ``pow``: PyTorch computes the last
    elements of each thread's range with a scalar ``pow`` and the others with a vectorised
    one, which differ in the last bit, and the ranges move with the thread count; ``exp``
    and ``log`` agree in both forms, so the embedding does not depend on the threads.
    """
    d2 = d2.clamp_min(1e-12)
    if d2.dtype != torch.float32 or not _is_compiling():
        return torch.exp(b * torch.log(d2))
    return _fast_exp2(_fast_log2(d2) * b)


def pair_terms(
    coords: list[torch.Tensor],
    heads: torch.Tensor,
    tails: torch.Tensor,
    negatives: torch.Tensor | list[torch.Tensor],
    consts: torch.Tensor,
    kind: str,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Clipped per-edge gradients for given negatives.

    Parameters
    ----------
    coords
        The embedding as ``d`` contiguous ``(n,)`` vectors, one per coordinate (a list, so
        that the loops over coordinates unroll when compiled).
    heads, tails
        ``(A,)`` active edges.
    negatives
        ``(m, A)`` negatives of every head (few large kernels: the eager form), or a list
        of ``m`` such ``(A,)`` rows (every tensor edge-shaped: the form that compiles into a
        single loop over edges). Both give the same terms up to the order of float sums.
    consts
        1-D float tensor ``[a, b, repulsion, clip, exaggeration]`` (a tensor, so that new
        values never trigger a recompilation).
    kind
        ``'umap'`` (``q = 1 / (1 + a d^{2b})``, loss ``-log q_ij - repulsion sum_k
        log(1 - q_ik)``), ``'cauchy'`` (the same with ``a = b = 1`` and no power: LargeVis)
        or ``'infonce'`` (``-log(q_ij / (q_ij + sum_k q_ik))`` with the Cauchy kernel).

    Returns
    -------
    g_att, g_head
        ``d`` vectors ``(A,)`` each: the attractive gradient of each edge (the tail receives
        ``-g_att``) and the head's total gradient, attraction plus the sum of its negatives'
        repulsion.
    """
    groups = [negatives] if isinstance(negatives, torch.Tensor) else list(negatives)
    clip = consts[3]
    z_head = [c.index_select(0, heads) for c in coords]
    diff = [zh - c.index_select(0, tails) for zh, c in zip(z_head, coords, strict=True)]
    ndiff = [  # per group: d tensors shaped like the group's negatives
        [
            zh - c.index_select(0, g.reshape(-1)).view(g.shape)
            for zh, c in zip(z_head, coords, strict=True)
        ]
        for g in groups
    ]
    d2 = sum(dc.square() for dc in diff)
    nd2 = [sum(nc.square() for nc in group) for group in ndiff]
    att, reps = _coefficients(d2, nd2, consts, kind)
    g_att = [(dc * att).clamp(-clip, clip) for dc in diff]
    g_head = list(g_att)
    for group, rep in zip(ndiff, reps, strict=True):
        g_head = [
            gh + _over_negatives((nc * rep).clamp(-clip, clip))
            for gh, nc in zip(g_head, group, strict=True)
        ]
    return g_att, g_head


def _over_negatives(x: torch.Tensor) -> torch.Tensor:
    """Sum over the negatives of a ``(m, A)`` group; an ``(A,)`` row is one negative."""
    return x.sum(0) if x.ndim == 2 else x


def _coefficients(
    d2: torch.Tensor, nd2: list[torch.Tensor], consts: torch.Tensor, kind: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Factors of ``z_i - z_j`` (attraction, ``(A,)``) and of ``z_i - z_k`` (repulsion, one
    per group of negatives) in the gradient of :func:`pair_terms`' loss."""
    a, b, repulsion, _, exaggeration = consts.unbind()
    if kind == "infonce":
        # d/dz_i of -exaggeration * log q_ij + log(q_ij + sum_k q_ik)
        q_pos = (1.0 + d2).reciprocal()
        q_neg = [(1.0 + x).reciprocal() for x in nd2]
        total = q_pos + sum(_over_negatives(q) for q in q_neg)
        att = 2.0 * q_pos * (exaggeration - q_pos / total)
        return att, [q.square() * (-2.0 / total) for q in q_neg]
    if kind == "cauchy":
        att = (2.0 * exaggeration) / (1.0 + d2)
        return att, [(-2.0 * repulsion) / ((x + REPULSION_EPS) * (1.0 + x)) for x in nd2]
    d2b = _pow_b(d2, b)
    att = (2.0 * exaggeration * a * b) * d2b / (d2.clamp_min(1e-12) * (1.0 + a * d2b))
    att = torch.where(d2 > 0, att, torch.zeros_like(att))
    reps = [(-2.0 * repulsion * b) / ((x + REPULSION_EPS) * (1.0 + a * _pow_b(x, b))) for x in nd2]
    return att, reps


def epoch_pair_terms(
    coords: list[torch.Tensor],
    heads: torch.Tensor,
    tails: torch.Tensor,
    key: torch.Tensor,
    consts: torch.Tensor,
    *,
    kind: str,
    n_negatives: int,
    discard_tails: bool,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """:func:`pair_terms` with this epoch's hashed negatives (the function that is compiled).

    The negatives are drawn row by row (:func:`hashed_draw`) and passed as a list: every
    tensor is then edge-shaped and TorchInductor emits one loop over edges with the
    negatives unrolled in it. Drawn as one ``(m, A)`` tensor, it split the epoch into three
    loops over ``m x A`` buffers (recomputing the hashes) and parallelised one of them over
    the ``m`` rows, which made the epoch markedly slower.

    Parameters
    ----------
    coords, heads, tails, consts, kind
        As in :func:`pair_terms`.
    key
        Seeds this epoch's negatives (:func:`hash_key`; see :func:`hashed_negatives`).
    n_negatives
        Negatives per edge.
    discard_tails
        Replace a negative equal to the edge's tail by the next index.
    """
    n, n_active = coords[0].shape[0], heads.shape[0]
    negatives = [hashed_draw(key, n_active, j, n) for j in range(n_negatives)]
    if discard_tails:
        negatives = [torch.where(g == tails, (g + 1) % n, g) for g in negatives]
    return pair_terms(coords, heads, tails, negatives, consts, kind)
