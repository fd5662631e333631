"""The per-pair arithmetic of one negative-sampling epoch, and its one negative sampler.

:func:`epoch_pair_terms` takes this epoch's active edges and returns, for every edge, the
clipped attractive gradient (applied to the head, and with the opposite sign to the tail) and
the head's total gradient (attraction plus the clipped repulsion of its negatives). It draws
the negatives itself (:func:`edge_negatives`: a counter-based hash of the epoch's key, the
edge's two ends and the draw's number), so that the whole epoch is one pure function of
``(embedding, edges, key)``.

**One arithmetic on every path.** The C epoch (:mod:`~torchdr_sc.objective.native_epoch`,
the default on CPU), :func:`torch.compile` of :func:`epoch_pair_terms` and its eager run
compute the same correctly rounded operations in the same order (the power ``d^{2b}`` from a
polynomial, not from a math library, whose last bits differ between implementations), so
they give the same bits; the Triton kernel on CUDA draws the same negatives and differs by
float rounding (its hardware ``exp2`` / ``log2`` and atomic sums).

Layout: the embedding is passed as ``coords``, a list of ``d`` ``(n,)`` vectors (strided
views of the ``(n, d)`` embedding), and negatives as ``m`` rows ``(A,)``, so that every
elementwise operation runs along the long edge axis.

References
----------
- L. McInnes, J. Healy, J. Melville. UMAP. arXiv:1802.03426, 2018 (the kernel and clipping).
- J. Tang, J. Liu, M. Zhang, Q. Mei. Visualizing Large-scale and High-dimensional Data.
  WWW 2016 (LargeVis' Cauchy kernel).
- G. L. Steele, D. Lea, C. H. Flood. Fast splittable pseudorandom number generators.
  OOPSLA 2014 (the 64-bit finaliser used as the hash).
"""

from __future__ import annotations

import torch

#: Squared-distance offset in the repulsive gradient, as in umap-learn.
REPULSION_EPS = 1e-3
#: Squared distances are clamped at this before a power is taken (and in the attraction's
#: denominator).
POW_FLOOR = 1e-12

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


def negative_key(seed: int, epoch: int) -> int:
    """The int64 key of one epoch's negatives, a hash of ``(seed, epoch)``."""
    return _signed(_mix64_int(_mix64_int(seed) + (epoch + 1) * _GOLDEN))


def hash_key(seed: int, epoch: int, device: torch.device | str) -> torch.Tensor:
    """``[key, golden]`` as an int64 tensor: what every path hashes an epoch's negatives with.

    The golden-ratio step travels as data rather than as a constant so that no compiler
    writes the 64-bit literal against a 32-bit loop index (Triton rejects that).
    """
    values = [negative_key(seed, epoch), _signed(_GOLDEN)]
    return torch.tensor(values, dtype=torch.int64, device=device)


def edge_negatives(
    key: torch.Tensor,
    heads: torch.Tensor,
    tails: torch.Tensor,
    j: int,
    n_negatives: int,
    n: int,
    *,
    discard_tails: bool = False,
) -> torch.Tensor:
    """Negative ``j`` of every edge ``(heads[e], tails[e])``: uniform indices in ``[0, n)``.

    **The one negative sampler.** Draw ``j`` of edge ``(h, t)`` is the top 32 bits of
    ``mix64(key + ((h n + t) M + j) golden)`` (``M = n_negatives``; 64-bit arithmetic that
    wraps) mapped to ``[0, n)`` by a multiply-shift (no division; bias below ``n / 2**32``).
    It depends on the edge and the epoch's key only, not on which other edges are active, on
    how an epoch is cut into blocks, on which process owns the edge (``torchrun``) or on the
    thread count: the C epoch (:mod:`~torchdr_sc.objective.native_epoch`), the Triton kernel
    (:mod:`~torchdr_sc.objective.triton_epoch`) and this function draw the same negatives.
    With ``discard_tails``, a draw equal to the edge's tail is replaced by the next index
    (modulo ``n``).

    Parameters
    ----------
    key
        ``[key, golden]`` from :func:`hash_key`.
    heads, tails
        ``(A,)`` edges; ``tails`` in ``[0, n)``.
    j
        Which negative, ``0 <= j < n_negatives``.
    n_negatives
        Negatives per edge (``M`` above).
    n
        Number of candidate points (at most ``2**31 - 1``).
    discard_tails
        Never draw the edge's own tail.

    Returns
    -------
    torch.Tensor
        ``(A,)`` int64 indices.
    """
    counter = (heads.long() * n + tails.long()) * n_negatives + j
    bits = _mix64(counter * key[1] + key[0])
    draws = (_shift_right(bits, 32) * n) >> 32
    if discard_tails:
        draws = torch.where(draws == tails, (draws + 1) % n, draws)
    return draws


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
    """``d2 ** b`` for ``d2 >= 0`` (clamped at :data:`POW_FLOOR`).

    float32 goes through :func:`_fast_log2` and :func:`_fast_exp2` (relative error ~2e-5):
    additions, multiplications, a floor and bit moves, each correctly rounded, so the C
    epoch computes the same bits, whatever the vector width or thread count (``pow``,
    ``exp`` and ``log`` differ in their last bit between libraries, and PyTorch's own
    ``pow`` between the vectorised and scalar parts of a thread's range). float64 (eager
    only) takes ``exp(b log d2)``.
    """
    d2 = d2.clamp_min(POW_FLOOR)
    if d2.dtype != torch.float32:
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

    Every operation is elementwise along the edges and correctly rounded, in a fixed order
    (no reduction whose order depends on threads or vector width): an edge's terms are the
    same bits however many edges are evaluated together, in eager mode, under
    :func:`torch.compile` and in the C epoch (:mod:`~torchdr_sc.objective.native_epoch`,
    which spells out the same operations).

    Parameters
    ----------
    coords
        The embedding as ``d`` ``(n,)`` vectors, one per coordinate (a list, so that the
        loops over coordinates unroll when compiled).
    heads, tails
        ``(A,)`` active edges.
    negatives
        ``m`` rows ``(A,)`` of negatives of every head, as a list or an ``(m, A)`` tensor;
        the head's repulsion is summed over them in that order.
    consts
        1-D float tensor ``[a, b, repulsion, clip, exaggeration]`` (a tensor, so that new
        values never trigger a recompilation).
    kind
        ``'umap'`` (``q = 1 / (1 + a d^{2b})``, loss ``-log q_ij - repulsion sum_k
        log(1 - q_ik)``) or ``'cauchy'`` (the same with ``a = b = 1`` and no power:
        LargeVis).

    Returns
    -------
    g_att, g_head
        ``d`` vectors ``(A,)`` each: the attractive gradient of each edge (the tail receives
        ``-g_att``) and the head's total gradient, attraction plus the sum of its negatives'
        repulsion.
    """
    clip = consts[3]
    z_head = [c.index_select(0, heads) for c in coords]
    diff = [zh - c.index_select(0, tails) for zh, c in zip(z_head, coords, strict=True)]
    att = _attraction(_squared_norm(diff), consts, kind)
    g_att = [(dc * att).clamp(-clip, clip) for dc in diff]
    g_head = list(g_att)
    for row in negatives:
        ndiff = [zh - c.index_select(0, row) for zh, c in zip(z_head, coords, strict=True)]
        rep = _repulsion(_squared_norm(ndiff), consts, kind)
        g_head = [gh + (nc * rep).clamp(-clip, clip) for gh, nc in zip(g_head, ndiff, strict=True)]
    return g_att, g_head


def _squared_norm(diff: list[torch.Tensor]) -> torch.Tensor:
    """``((x_1^2 + x_2^2) + x_3^2) + ...``, in that order."""
    out = diff[0].square()
    for dc in diff[1:]:
        out = out + dc.square()
    return out


def _attraction(d2: torch.Tensor, consts: torch.Tensor, kind: str) -> torch.Tensor:
    """Factor of ``z_i - z_j`` in the attractive gradient of :func:`pair_terms`' loss."""
    a, b, _, _, exaggeration = consts.unbind()
    if kind == "cauchy":
        return (2.0 * exaggeration) / (1.0 + d2)
    d2b = _pow_b(d2, b)
    att = (2.0 * exaggeration * a * b) * d2b / (d2.clamp_min(POW_FLOOR) * (1.0 + a * d2b))
    return torch.where(d2 > 0, att, torch.zeros_like(att))


def _repulsion(nd2: torch.Tensor, consts: torch.Tensor, kind: str) -> torch.Tensor:
    """Factor of ``z_i - z_k`` in one negative's repulsive gradient."""
    a, b, repulsion, _, _ = consts.unbind()
    if kind == "cauchy":
        return (-2.0 * repulsion) / ((nd2 + REPULSION_EPS) * (1.0 + nd2))
    return (-2.0 * repulsion * b) / ((nd2 + REPULSION_EPS) * (1.0 + a * _pow_b(nd2, b)))


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
    """:func:`pair_terms` with this epoch's negatives (:func:`edge_negatives`).

    The function the eager path runs and :func:`torch.compile` compiles: the negatives are
    drawn row by row, so every tensor is edge-shaped and TorchInductor emits one loop over
    edges with the negatives unrolled in it.

    Parameters
    ----------
    coords, heads, tails, consts, kind
        As in :func:`pair_terms`.
    key
        Seeds this epoch's negatives (:func:`hash_key`).
    n_negatives
        Negatives per edge.
    discard_tails
        Replace a negative equal to the edge's tail by the next index.
    """
    n = coords[0].shape[0]
    negatives = [
        edge_negatives(key, heads, tails, j, n_negatives, n, discard_tails=discard_tails)
        for j in range(n_negatives)
    ]
    return pair_terms(coords, heads, tails, negatives, consts, kind)
