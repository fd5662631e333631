"""The C kernels' ranges on PyTorch's OpenMP threads: the same bits as on a thread pool and
on one thread, one OpenMP runtime in the process, and a build without OpenMP that still works."""

from __future__ import annotations

import sys

import pytest
import torch

from torchdr_sc.objective import (
    kernel_cache,
    methods,
    native,
    native_epoch,
    native_infonce,
    native_ranges,
    pairs,
)

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")


def _csr(n: int, k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    cols = torch.randint(0, n, (n * k,), generator=gen, dtype=torch.int32)
    crow = torch.arange(0, n * k + 1, k, dtype=torch.int32)
    weights = torch.rand(n * k, generator=gen) * 1e-3
    coords = torch.randn(2, n, generator=gen) * 30
    return coords, crow, cols, weights


def _attraction_on(runner: str, monkeypatch, threads: int) -> torch.Tensor:
    coords, crow, cols, weights = _csr(40_000, 9)
    lib = native.library()
    if runner == "pool":
        monkeypatch.setattr(native_ranges, "has_openmp", lambda lib: False)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return native.student_attraction(lib, coords, crow, cols, weights, 3.0)
    finally:
        torch.set_num_threads(previous)
        monkeypatch.undo()


@needs_compiler
def test_openmp_pool_and_one_thread_give_the_same_bits(monkeypatch):
    assert native_ranges.has_openmp(native.library())  # gcc and clang on Linux take -fopenmp
    serial = _attraction_on("openmp", monkeypatch, 1)
    for threads in (2, 3):
        assert torch.equal(_attraction_on("openmp", monkeypatch, threads), serial)
        assert torch.equal(_attraction_on("pool", monkeypatch, threads), serial)


@needs_compiler
def test_the_epoch_kernels_give_the_same_bits_on_both_runners(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    n, count = 3_000, 200_000
    z = torch.randn(n, 2, generator=gen)
    heads = torch.randint(0, n, (count,), generator=gen, dtype=torch.int32)
    tails = torch.randint(0, n, (count,), generator=gen, dtype=torch.int32)
    key = pairs.hash_key(7, 3, "cpu")
    consts = torch.tensor([1.58, 0.9, 1.0, 4.0, 1.0])
    lib = native_epoch.library()

    def run() -> tuple[torch.Tensor, ...]:
        g_att, g_head = native_epoch.epoch_terms(
            lib, z, heads, tails, key, consts, kind="umap", n_negatives=5, discard_tails=False
        )
        sums = torch.zeros(2, 2, n)
        native_epoch.add_terms(lib, sums, heads, tails, g_att, g_head)
        return g_att, g_head, sums

    openmp = run()
    monkeypatch.setattr(native_ranges, "has_openmp", lambda lib: False)
    pool = run()
    for a, b in zip(openmp, pool, strict=True):
        assert torch.equal(a, b)


@needs_compiler
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_kernels_use_the_openmp_runtime_pytorch_loaded():
    native.library()
    native_epoch.library()
    with open("/proc/self/maps") as maps:
        loaded = {line.split()[-1] for line in maps if line.rstrip().endswith("/libgomp.so.1")}
    assert len(loaded) == 1, f"two OpenMP runtimes (two spinning thread teams): {loaded}"


@needs_compiler
def test_a_compiler_without_openmp_builds_the_kernel_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, str(tmp_path / "kernels"))
    monkeypatch.setattr(kernel_cache, "_WARNED", set())
    monkeypatch.setattr(kernel_cache, "_PRIVATE", {})
    monkeypatch.setattr(native, "_STATE", {})
    # a flag every C compiler refuses, standing in for a compiler without OpenMP
    monkeypatch.setattr(native_ranges, "OPENMP_FLAGS", ("-fno-such-openmp-flag",))
    lib = native.load_library("attraction-no-openmp", native.SOURCE, "a test kernel")
    assert lib is not None
    assert not native_ranges.has_openmp(lib)
    coords, crow, cols, weights = _csr(40_000, 9)
    out = native.student_attraction(lib, coords, crow, cols, weights, 3.0)
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.undo()
    expected = native.student_attraction(native.library(), coords, crow, cols, weights, 3.0)
    assert torch.equal(out, expected)


@needs_compiler
def test_a_fit_builds_its_kernels_beside_the_knn_search_once(tmp_path, monkeypatch):
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, str(tmp_path / "kernels"))
    monkeypatch.setattr(kernel_cache, "_WARNED", set())
    monkeypatch.setattr(kernel_cache, "_PRIVATE", {})
    monkeypatch.setattr(native, "_STATE", {})
    built = []
    real_build = native._build
    monkeypatch.setattr(
        native, "_build", lambda cc, path, src: built.append(path) or real_build(cc, path, src)
    )
    thread = methods.prepare_objective("infotsne", "cpu")
    assert thread is not None
    assert methods.prepare_objective("infotsne", "meta") is None
    # the objective's own call waits for the build under way instead of starting another
    lib = native_infonce.library()
    thread.join(timeout=120)
    assert lib is not None
    assert native_infonce.library() is lib
    assert native.library() is not None
    assert len(built) == 2  # the attraction's library and the repulsion's, each once
