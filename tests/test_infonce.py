"""InfoTSNE's InfoNC-t-SNE objective: negatives shared by blocks of rows.

The repulsion is checked against autograd of the sampled loss ``sum_i p_i log S_i`` with the
same draws (float64), for a whole P and for one shard, with and without the neighbours
excluded; the transform's version against its direct sums; both for bitwise thread
invariance. The estimator's defaults are TorchDR's documented ones.
"""

from __future__ import annotations

import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc._device import cpu_threads
from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.distributed import RowShard
from torchdr_sc.objective import native, native_infonce
from torchdr_sc.objective.attraction import StudentAttraction
from torchdr_sc.objective.infonce import InfoNCERepulsion, SampledStudentRepulsion, row_mass

N = 90


def _sparse_p(n: int = N, k: int = 6, seed: int = 0) -> SparseAffinity:
    """A symmetric sparse P (edges sorted by row) summing to 1."""
    gen = torch.Generator().manual_seed(seed)
    dense = torch.zeros(n, n, dtype=torch.float64)
    cols = torch.randint(0, n, (n, k), generator=gen)
    dense[torch.arange(n)[:, None], cols] = torch.rand(n, k, generator=gen, dtype=torch.float64)
    dense.fill_diagonal_(0)
    dense = dense + dense.T
    dense /= dense.sum()
    rows, cols = dense.nonzero(as_tuple=True)
    return SparseAffinity(rows, cols, dense[rows, cols], n)


def _z(n: int = N, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, dtype=torch.float64, generator=gen) * 3


def _negative_mask(rep: InfoNCERepulsion, order: torch.Tensor, dropped: torch.Tensor):
    """``M[i, k] = 1`` where ``k`` counts as a negative of a row ``i`` whose term this
    repulsion carries, from its draws (the shuffle ``order`` and the dropped pairs)."""
    n, B = rep.n, rep.block
    keep = torch.ones(len(rep.left) * B * B, dtype=torch.bool)
    keep[dropped] = False
    keep = keep.view(-1, B, B)
    M = torch.zeros(n, n, dtype=torch.float64)
    padded = torch.cat([order, torch.full((rep.n_blocks * B - n,), -1)])
    for p, (a, b) in enumerate(zip(rep.left.tolist(), rep.right.tolist(), strict=True)):
        rows_a, rows_b = padded[a * B : (a + 1) * B], padded[b * B : (b + 1) * B]
        for r, i in enumerate(rows_a.tolist()):
            for c, k in enumerate(rows_b.tolist()):
                if keep[p, r, c]:
                    assert min(i, k) >= 0  # padding never counts
                    assert i != k  # nor a row with itself
                    M[i, k] = 1.0
                    if bool(rep.mutual[p]):
                        M[k, i] = 1.0
    return M


def _twin(P, seed=3, **kwargs):
    return InfoNCERepulsion(P, 20, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize(("n", "rank", "world"), [(N, 0, 1), (N + 7, 0, 1), (N, 1, 2), (30, 0, 1)])
def test_repulsion_is_the_gradient_of_the_sampled_loss(exclude, n, rank, world):
    """Autograd of ``sum_i p_i log S_i`` over the negatives drawn (float64): whole blocks,
    a padded last block, an odd block paired one way, one process of two, all pairs."""
    P, z = _sparse_p(n), _z(n)
    kwargs = {"exclude_neighbours": exclude, "rank": rank, "world_size": world}
    grad = _twin(P, **kwargs)(z)
    twin = _twin(P, **kwargs)
    order = torch.randperm(n, generator=twin.generator)
    position = torch.empty_like(order)
    position[order] = torch.arange(n)
    M = _negative_mask(twin, order, twin._dropped(position))
    edges = torch.zeros(n, n, dtype=torch.bool)
    edges[P.rows, P.cols] = True
    assert not (M.bool() & edges).any() if exclude else (M.bool() & edges).any()
    assert (twin.n_blocks == 1) == (n < 40)
    if n < 40:  # all pairs: every other point is a negative
        assert M.sum() == n * (n - 1) - (int(edges.sum()) if exclude else 0)
    zz = z.clone().requires_grad_(True)
    w = 1.0 / (1.0 + ((zz[:, None] - zz[None]) ** 2).sum(-1))
    S = (w * M).sum(1)
    counted = M.sum(1) > 0
    loss = (row_mass(P)[counted] * torch.log(S[counted])).sum()
    (expected,) = torch.autograd.grad(loss, zz)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_processes_share_the_pairs_of_blocks():
    """Two processes with the same shuffle carry every row's term once: their sum is the
    one-process gradient."""
    P, z = _sparse_p(N + 30), _z(N + 30)
    whole = _twin(P)(z)
    parts = _twin(P, rank=0, world_size=2)(z) + _twin(P, rank=1, world_size=2)(z)
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-14)


def test_repulsion_pushes_apart_and_conserves_momentum():
    """Action and reaction: the repulsion's gradient sums to zero over all rows, and the
    descent direction ``-grad`` moves the points away from their centre on the whole."""
    P, z = _sparse_p(), _z()
    grad = _twin(P)(z)
    zero = torch.zeros(2, dtype=torch.float64)
    torch.testing.assert_close(grad.sum(0), zero, atol=1e-12, rtol=0)
    assert float((-grad * (z - z.mean(0))).sum()) > 0


def test_transform_repulsion_sums_over_its_draws():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(500, 2, dtype=torch.float64, generator=gen) * 5
    z = torch.randn(70, 2, dtype=torch.float64, generator=gen) * 5
    rep = SampledStudentRepulsion(y, 40, seed=7, block_rows=32)
    S, terms = rep(z)
    draws = torch.randint(0, 500, (3, 40), generator=torch.Generator().manual_seed(7))
    block = torch.arange(70) // 32
    yk = y[draws[block]]  # (70, 40, 2): every new point's block's negatives
    w = 1.0 / (1.0 + ((z[:, None] - yk) ** 2).sum(-1))
    torch.testing.assert_close(S, w.sum(1))
    torch.testing.assert_close(terms, ((w**2)[..., None] * (z[:, None] - yk)).sum(1))


def test_same_draws_same_bits_with_1_and_2_threads():
    n = 5000
    P, z = _sparse_p(n, k=20), _z(n).float() * 10
    out = []
    for threads in (1, 2):
        with cpu_threads(threads):
            P32 = P.to(dtype=torch.float32)
            gen = torch.Generator().manual_seed(0)
            rep = InfoNCERepulsion(P32, 300, generator=gen, exclude_neighbours=True)
            fixed = SampledStudentRepulsion(z, 300, seed=1)
            out.append([rep(z), rep(z), *fixed(z[:1500] + 0.5)])
    for a, b in zip(*out, strict=True):
        assert torch.equal(a, b)


def test_attraction_and_repulsion_make_the_infonce_gradient():
    """InfoTSNE's gradient is the t-SNE attraction plus this repulsion: with the pairs of
    every row's block the repulsion is t-SNE's with each row normalised by its own sum."""
    P, z = _sparse_p(), _z()
    attraction = StudentAttraction(P, RowShard.full(N), compile=False)
    zz = z.clone().requires_grad_(True)
    w = 1.0 / (1.0 + ((zz[:, None] - zz[None]) ** 2).sum(-1))
    dense = torch.zeros(N, N, dtype=torch.float64)
    dense[P.rows, P.cols] = P.weights
    (expected,) = torch.autograd.grad(-(dense * torch.log(w)).sum(), zz)
    torch.testing.assert_close(attraction(z), expected)


def test_infotsne_defaults_are_torchdr_documented():
    est = tdr.InfoTSNE()
    assert est.n_negatives == 300
    assert est.early_exaggeration_coeff == 12.0
    assert est.early_exaggeration_iter == 250
    assert est.planned_iterations(10_000) == 1000
    assert est.planned_iterations(1_000_000) == 1000
    # TorchDR's rates and momenta; the gains of TSNE's optimiser (see the docstring)
    assert (est.optimizer, est.optimizer_kwargs, est.lr) == ("DeltaBarDelta", "auto", "auto")
    assert est.perplexity == 30.0
    assert est.discard_NNs is False
    assert not isinstance(est, tdr.LargeVis)


def test_infotsne_fit_records_its_path_and_is_repeatable(digits):
    x, _ = digits
    kwargs = {"random_state": 0, "max_iter": 30, "early_exaggeration_iter": 10, "device": "cpu"}
    est = tdr.InfoTSNE(**kwargs)
    z = est.fit_transform(x[:600])
    kernel = "native" if native.library() is not None else "eager"
    repulsion = "C kernel" if native_infonce.library() is not None else "eager"
    expected = f"attraction {kernel}, repulsion shared negatives ({repulsion})"
    assert est.execution_path_ == expected
    assert est.n_iter_ == 30
    assert (z == tdr.InfoTSNE(**kwargs).fit_transform(x[:600])).all()
    assert not (z == tdr.InfoTSNE(**{**kwargs, "random_state": 1}).fit_transform(x[:600])).all()
    discard = tdr.InfoTSNE(**kwargs, discard_NNs=True).fit_transform(x[:600])
    assert discard.shape == z.shape
    assert not (discard == z).all()
