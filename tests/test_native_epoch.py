"""The negative-sampling epoch's C loop: the same bits as the eager PyTorch form (and as
``torch.compile``), whatever the thread count; without a compiler, the same numbers."""

from __future__ import annotations

import pytest
import torch

from torchdr_sc._device import cpu_threads
from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.objective import epoch as epoch_mod
from torchdr_sc.objective import kernel_cache, native, native_epoch
from torchdr_sc.objective.epoch import SampledEpoch
from torchdr_sc.objective.sampled import SampledKernel

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")

KERNELS = {
    "umap": SampledKernel("umap", a=1.577, b=0.895, repulsion=1.0, clip=4.0),
    "largevis": SampledKernel("largevis", repulsion=7.0, clip=5.0),
}


def _affinity(n: int, k: int, seed: int = 0) -> SparseAffinity:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(n).repeat_interleave(k)
    cols = (rows + torch.randint(1, n, (n * k,), generator=gen)) % n
    weights = torch.rand(n * k, generator=gen)
    return SparseAffinity(rows, cols, weights, n)


def _embedding(n: int, d: int, seed: int = 1) -> torch.Tensor:
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 5
    z[1] = z[0]  # a collision (d2 = 0) and a near one (clipped terms)
    z[3] = z[2] + 1e-4
    return z


def _gradients(compile, n=3000, d=2, kind="umap", discard=False, epochs=(0, 7), threads=2):
    P = _affinity(n, 12)
    z = _embedding(n, d)
    epoch = SampledEpoch(P, KERNELS[kind], 5, seed=5, compile=compile, discard_tails=discard)
    with cpu_threads(threads):
        grads = [epoch.gradient(z, t, exaggeration=1.5) for t in epochs]
    return grads, epoch.path


@needs_compiler
@pytest.mark.parametrize("kind", ["umap", "largevis"])
@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("discard", [False, True])
def test_c_loop_gives_the_eager_bits(kind, d, discard):
    native_grads, path = _gradients("auto", d=d, kind=kind, discard=discard)
    assert path == "native"
    eager_grads, eager_path = _gradients(False, d=d, kind=kind, discard=discard)
    assert eager_path == "eager"
    for got, expected in zip(native_grads, eager_grads, strict=True):
        assert torch.isfinite(got).all()
        assert got.abs().max() > 0
        assert torch.equal(got, expected)


@needs_compiler
def test_c_loop_is_the_same_with_1_2_and_3_threads():
    # enough active edges per chunk for the loop to be split between threads
    runs = [_gradients("auto", n=20_000, threads=t)[0] for t in (1, 2, 3)]
    assert runs[0][0].shape == (20_000, 2)
    for other in runs[1:]:
        for got, expected in zip(other, runs[0], strict=True):
            assert torch.equal(got, expected)


@needs_compiler
def test_the_source_carries_the_polynomial_and_constants_of_pairs():
    from torchdr_sc.objective import pairs

    for c in (*pairs._LOG2_COEFFS, *pairs._EXP2_COEFFS, pairs.POW_FLOOR, pairs.REPULSION_EPS):
        assert native_epoch._hex32(c) in native_epoch.SOURCE
    assert native_epoch.library() is not None


def test_float64_embeddings_run_eagerly():
    P = _affinity(300, 6)
    epoch = SampledEpoch(P, KERNELS["umap"], 5, seed=0, compile="auto")
    grad = epoch.gradient(_embedding(300, 2).double(), 0)
    assert grad.dtype == torch.float64
    assert epoch.path == "eager"


@pytest.fixture
def no_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, str(tmp_path / "kernels"))
    monkeypatch.setattr(kernel_cache, "_WARNED", set())
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)


def test_without_a_compiler_the_epoch_runs_eagerly_with_the_same_numbers(no_compiler, caplog):
    expected, _ = _gradients(False, n=500)
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        got, path = _gradients("auto", n=500)
        again, _ = _gradients("auto", n=500)
    assert path == "eager"
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    assert all(torch.equal(g, e) for g, e in zip(again, expected, strict=True))
    assert caplog.text.count("no C compiler found") == 1  # said once, with the fix
    assert "Install gcc or clang, or set CC" in caplog.text


def test_chunks_split_between_threads_cover_every_edge(monkeypatch):
    """Many chunks, each split between threads: the same gradient as one chunk."""
    if native_epoch.library() is None:
        pytest.skip("no C compiler")
    whole, _ = _gradients("auto", n=8000)
    monkeypatch.setattr(epoch_mod, "CPU_CHUNK_EDGES", 3001)
    monkeypatch.setattr(native_epoch, "PARALLEL_MIN_EDGES", 64)
    chunked, _ = _gradients("auto", n=8000)
    for got, expected in zip(chunked, whole, strict=True):
        assert torch.equal(got, expected)


@needs_compiler
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_c_sums_add_the_terms_in_the_order_of_index_add(d, threads, monkeypatch):
    """Rows split between threads, many terms per cell: the bits of ``add_pair_terms``."""
    from torchdr_sc.objective.sampled import add_pair_terms

    monkeypatch.setattr(native_epoch, "PARALLEL_MIN_EDGES", 64)
    gen = torch.Generator().manual_seed(d)
    n, count = 50, 20_000  # 400 terms per cell: the order of the additions shows in the bits
    heads = torch.randint(0, n, (count,), generator=gen, dtype=torch.int32)
    tails = torch.randint(0, n, (count,), generator=gen, dtype=torch.int32)
    g_att = torch.randn(d, count, generator=gen) * 1e3
    g_head = torch.randn(d, count, generator=gen)
    start = torch.randn(2, d, n, generator=gen)
    expected = start.clone()
    add_pair_terms(expected, heads, tails, list(g_att), list(g_head))
    got = start.clone()
    with cpu_threads(threads):
        native_epoch.add_terms(native_epoch.library(), got, heads, tails, g_att, g_head)
    assert torch.equal(got, expected)
    shuffled = start.clone()  # the check can fail: another order gives other bits
    order = torch.randperm(count, generator=gen)
    add_pair_terms(
        shuffled, heads[order], tails[order], list(g_att[:, order]), list(g_head[:, order])
    )
    assert not torch.equal(shuffled, expected)


@needs_compiler
def test_c_sums_take_strided_edges_and_refuse_strided_sums():
    from torchdr_sc.objective.sampled import add_pair_terms

    gen = torch.Generator().manual_seed(0)
    edges = torch.randint(0, 40, (2, 3000), generator=gen, dtype=torch.int32)
    heads, tails = edges[0, ::2], edges[1, ::2]  # strided views
    g_att, g_head = torch.randn(2, 2, 1500, generator=gen)
    expected = torch.zeros(2, 2, 40)
    add_pair_terms(expected, heads, tails, list(g_att), list(g_head))
    got = torch.zeros(2, 2, 40)
    native_epoch.add_terms(native_epoch.library(), got, heads, tails, g_att, g_head)
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="contiguous"):
        native_epoch.add_terms(
            native_epoch.library(),
            torch.zeros(2, 40, 2).transpose(1, 2),
            heads,
            tails,
            g_att,
            g_head,
        )
