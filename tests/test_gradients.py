"""Closed-form gradients agree with autograd (float64)."""

import pytest
import torch

from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.distributed import RowShard
from torchdr_sc.objective import pairs as pairs_mod
from torchdr_sc.objective.exact import sne_gradient, tsne_gradient
from torchdr_sc.objective.sampled import SampledKernel, sampled_gradient

N = 40


@pytest.fixture
def z():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(N, 2, dtype=torch.float64, generator=gen)


def _sym_p(seed=1):
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(N, N, dtype=torch.float64, generator=gen)
    p.fill_diagonal_(0)
    p = p + p.T
    return p / p.sum()


def _sqdist(z):
    return ((z[:, None] - z[None]) ** 2).sum(-1)


@pytest.mark.parametrize("exaggeration", [1.0, 12.0])
def test_tsne_gradient_matches_autograd(z, exaggeration):
    p = _sym_p()
    zz = z.clone().requires_grad_(True)
    eye = torch.eye(N, dtype=torch.float64)
    w = 1.0 / (1.0 + _sqdist(zz)) * (1 - eye)
    loss = -(exaggeration * p * torch.log(w + eye)).sum() + torch.log(w.sum())
    (expected,) = torch.autograd.grad(loss, zz)
    got = tsne_gradient(z, SparseAffinity.from_dense(p), exaggeration, RowShard.full(N))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_tsne_gradient_shards_sum_to_full(z):
    p = SparseAffinity.from_dense(_sym_p())
    full = tsne_gradient(z, p, 4.0, RowShard.full(N))
    # the normaliser is all-reduced across shards: emulate with a running list
    parts = []
    for s, e in [(0, 11), (11, 30), (30, N)]:
        parts.append((s, e))
    zsums = []
    from torchdr_sc.objective.exact import student_repulsion_terms

    for s, e in parts:
        zsums.append(student_repulsion_terms(z, RowShard(s, e))[1])
    total = sum(zsums)
    summed = sum(tsne_gradient(z, p, 4.0, RowShard(s, e), lambda _v: total) for s, e in parts)
    torch.testing.assert_close(summed, full)


def test_sne_gradient_matches_autograd(z):
    gen = torch.Generator().manual_seed(2)
    p = torch.rand(N, N, dtype=torch.float64, generator=gen)
    p.fill_diagonal_(0)
    p = p / p.sum(1, keepdim=True)
    zz = z.clone().requires_grad_(True)
    d2 = _sqdist(zz) + torch.diag(torch.full((N,), float("inf"), dtype=torch.float64))
    finite = torch.where(torch.isfinite(d2), d2, torch.zeros_like(d2))
    loss = (3.0 * p * finite).sum() + torch.logsumexp(-d2, 1).sum()
    (expected,) = torch.autograd.grad(loss, zz)
    got = sne_gradient(z, SparseAffinity.from_dense(p), 3.0, RowShard.full(N))
    torch.testing.assert_close(got, expected)
    parts = sum(
        sne_gradient(z, SparseAffinity.from_dense(p), 3.0, RowShard(s, e))
        for s, e in [(0, 9), (9, N)]
    )
    torch.testing.assert_close(parts, expected)


@pytest.mark.parametrize(("kind", "a", "b"), [("umap", 1.58, 0.9), ("largevis", 1.0, 1.0)])
def test_sampled_gradient_matches_autograd(z, kind, a, b, monkeypatch):
    monkeypatch.setattr(pairs_mod, "REPULSION_EPS", 0.0)
    gen = torch.Generator().manual_seed(3)
    heads = torch.randint(0, N, (30,), generator=gen)
    tails = (heads + torch.randint(1, N, (30,), generator=gen)) % N
    negs = (heads[:, None] + torch.randint(1, N, (30, 5), generator=gen)) % N
    kernel = SampledKernel(kind, a=a, b=b, repulsion=2.0, clip=1e9)
    zz = z.clone().requires_grad_(True)
    d2 = ((zz[heads] - zz[tails]) ** 2).sum(1)
    # negatives are not moved by the sampled objective: detach their side
    nd2 = ((zz[heads][:, None] - zz.detach()[negs]) ** 2).sum(2)
    ex = 2.0
    qp, qn = 1 / (1 + a * d2**b), 1 / (1 + a * nd2**b)
    loss = (-ex * torch.log(qp)).sum() - (kernel.repulsion * torch.log(1 - qn)).sum()
    (expected,) = torch.autograd.grad(loss, zz)
    got = sampled_gradient(z, heads, tails, negs, kernel, ex)
    torch.testing.assert_close(got, expected)


def test_sampled_gradient_is_clipped(z):
    heads = torch.tensor([0, 1])
    tails = torch.tensor([2, 3])
    negs = torch.tensor([[1], [0]])
    z = z.clone()
    z[1] = z[0] + 1e-4  # a near-collision gives a huge repulsion
    g = sampled_gradient(z, heads, tails, negs, SampledKernel("umap", a=1.6, b=0.9, clip=4.0))
    assert g.abs().max() <= 8.0 + 1e-9  # at most one attraction + one repulsion, each <= 4
