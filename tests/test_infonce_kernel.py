"""InfoTSNE's repulsion in C gives the bits of its PyTorch form (the path without a
compiler), in every case the blocks make: a padded last block, an odd block paired one way,
all pairs, neighbours excluded, one process of two, one to three coordinates."""

from __future__ import annotations

import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.objective import infonce, native, native_infonce
from torchdr_sc.objective.infonce import InfoNCERepulsion

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")


def _sparse_p(n: int, k: int = 8, seed: int = 0) -> SparseAffinity:
    gen = torch.Generator().manual_seed(seed)
    cols = torch.randint(0, n, (n * k,), generator=gen)
    weights = torch.rand(n * k, generator=gen)
    P = SparseAffinity(torch.arange(n).repeat_interleave(k), cols, weights, n).symmetrize("sum")
    return P.to(dtype=torch.float32)


def _gradients(P, z, *, no_kernel: bool, monkeypatch, **kwargs) -> list[torch.Tensor]:
    if no_kernel:
        monkeypatch.setattr(native_infonce, "library", lambda: None)
    rep = InfoNCERepulsion(P, 40, generator=torch.Generator().manual_seed(4), **kwargs)
    assert rep.path == ("eager" if no_kernel else "C kernel")
    out = [rep(z), rep(z * 3.0)]  # two draws
    monkeypatch.undo()
    return out


@needs_compiler
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize(
    ("n", "exclude", "rank", "world"),
    [(400, False, 0, 1), (437, True, 0, 1), (437, False, 1, 2), (60, True, 0, 1)],
)
def test_the_kernel_gives_the_bits_of_the_pytorch_form(monkeypatch, d, n, exclude, rank, world):
    P = _sparse_p(n)
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(1)) * 5
    kwargs = {"exclude_neighbours": exclude, "rank": rank, "world_size": world}
    fast = _gradients(P, z, no_kernel=False, monkeypatch=monkeypatch, **kwargs)
    slow = _gradients(P, z, no_kernel=True, monkeypatch=monkeypatch, **kwargs)
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a, b)
    # and the float64 computation up to float32's rounding, closer than the matrix-product
    # form (the CUDA path), whose 1 + |z_i|^2 + |z_k|^2 - 2 z_i z_k cancels digits
    gen = torch.Generator().manual_seed(4)
    exact = InfoNCERepulsion(P.to(dtype=torch.float64), 40, generator=gen, **kwargs)(z.double())
    rep = InfoNCERepulsion(P, 40, generator=torch.Generator().manual_seed(4), **kwargs)
    monkeypatch.setattr(native_infonce, "library", lambda: None)
    monkeypatch.setattr(infonce.infonce_exact, "block_pair_terms", infonce._product_terms)
    products = rep(z)
    monkeypatch.undo()
    error_fast = float((fast[0].double() - exact).abs().max())
    assert error_fast < 1e-5 * float(exact.abs().max())
    assert error_fast <= float((products.double() - exact).abs().max())


@needs_compiler
def test_infotsne_fits_the_same_embedding_without_its_kernel(monkeypatch, digits):
    X = digits[0][:700]
    params = {"max_iter": 60, "n_negatives": 50, "random_state": 0, "verbose": False}
    fast = tdr.InfoTSNE(**params)
    fast.fit(X)
    assert fast.execution_path_.endswith("(C kernel)")
    monkeypatch.setattr(native_infonce, "library", lambda: None)
    slow = tdr.InfoTSNE(**params)
    slow.fit(X)
    assert slow.execution_path_.endswith("(eager)")
    assert (fast.embedding_ == slow.embedding_).all()
