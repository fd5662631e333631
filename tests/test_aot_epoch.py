"""The CPU epoch kernel compiled ahead of time: arithmetic, cache, and the fallbacks.

One kernel variant is built once for the module (~20 s on 2 cores) in a temporary cache.
"""

import os
import subprocess
import sys
import zipfile

import pytest
import torch

from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.objective import aot_epoch
from torchdr_sc.objective import epoch as epoch_mod
from torchdr_sc.objective.epoch import SampledEpoch
from torchdr_sc.objective.pairs import epoch_pair_terms, hash_key, hashed_negatives, pair_terms
from torchdr_sc.objective.sampled import SampledKernel, scatter_pair_terms

needs_aot = pytest.mark.skipif(not aot_epoch.available(), reason="needs PyTorch >= 2.6")
UMAP_KERNEL = SampledKernel("umap", a=1.58, b=0.9, repulsion=1.0, clip=4.0)


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A fresh kernel cache for this module, with the one variant the tests use built."""
    path = tmp_path_factory.mktemp("kernels")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(aot_epoch.CACHE_DIR_ENV, str(path))
        mp.setattr(aot_epoch, "_LOADED", {})
        if aot_epoch.available():
            aot_epoch.epoch_kernel("umap", 5, True, 2)
        yield path


def _random_affinity(n=300, k=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(n).repeat_interleave(k)
    cols = (rows + torch.randint(1, n, (n * k,), generator=gen)) % n
    return SparseAffinity(rows, cols, torch.rand(n * k, generator=gen), n)


def _edges(n_points, n_edges, seed):
    gen = torch.Generator().manual_seed(seed)
    heads = torch.randint(0, n_points, (n_edges,), generator=gen, dtype=torch.int32)
    tails = torch.randint(0, n_points, (n_edges,), generator=gen, dtype=torch.int32)
    return heads, tails


@needs_aot
@pytest.mark.parametrize("n_edges", [1, 7, 10_000])
def test_kernel_matches_the_epoch_arithmetic(kernel_dir, n_edges):
    """Any number of edges (the package is traced with 4096) and of points."""
    kernel = aot_epoch.epoch_kernel("umap", 5, True, 2)
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(1)) * 4
    heads, tails = _edges(500, n_edges, seed=n_edges)
    key, consts = hash_key(3, 9, "cpu", 2), torch.tensor([1.58, 0.9, 1.0, 4.0, 2.0])
    got_att, got_head = kernel(z, heads, tails, key, consts)
    options = {"kind": "umap", "n_negatives": 5, "discard_tails": True}
    exp_att, exp_head = epoch_pair_terms(list(z.unbind(1)), heads, tails, key, consts, **options)
    # the compiled kernel's power is a polynomial (relative error ~2e-5)
    torch.testing.assert_close(got_att, exp_att, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_head, exp_head, rtol=1e-4, atol=1e-5)


@needs_aot
def test_kernel_reads_a_strided_embedding_correctly(kernel_dir):
    """The package assumes a contiguous (n, d) embedding; a transposed view is copied."""
    kernel = aot_epoch.epoch_kernel("umap", 5, True, 2)
    z = torch.randn(2, 400, generator=torch.Generator().manual_seed(4)).T * 3
    assert not z.is_contiguous()
    heads, tails = _edges(400, 2000, seed=5)
    key, consts = hash_key(1, 0, "cpu"), torch.tensor([1.58, 0.9, 1.0, 4.0, 1.0])
    got = kernel(z, heads, tails, key, consts)
    expected = kernel(z.contiguous(), heads, tails, key, consts)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@needs_aot
def test_package_is_cached_and_loaded_without_building(kernel_dir, monkeypatch):
    packages = list(kernel_dir.glob("epoch-*.pt2"))
    assert [p.name for p in packages] == [f"epoch-{aot_epoch.kernel_key('umap', 5, True, 2)}.pt2"]

    def no_build(*args, **kwargs):
        raise AssertionError("the cached package should have been loaded")

    monkeypatch.setattr(aot_epoch, "build_package", no_build)
    monkeypatch.setattr(aot_epoch, "_LOADED", {})
    kernel = aot_epoch.epoch_kernel("umap", 5, True, 2)
    heads, tails = _edges(50, 30, seed=0)
    g_att, g_head = kernel(torch.randn(50, 2), heads, tails, hash_key(0, 0, "cpu"), torch.ones(5))
    assert len(g_att) == len(g_head) == 2
    assert g_att[0].shape == (30,)
    # one parallel loop whatever the example's size (the thread count is read at run time)
    with zipfile.ZipFile(packages[0]) as archive:
        sources = [archive.read(n).decode() for n in archive.namelist() if n.endswith(".cpp")]
    assert any("#pragma omp parallel" in s for s in sources)
    leftovers = [p.name for p in kernel_dir.iterdir() if p.suffix not in (".pt2", ".json", ".lock")]
    assert not leftovers  # no temporary left


def test_kernel_key_names_every_option():
    base = aot_epoch.kernel_key("umap", 5, True, 2)
    assert base == aot_epoch.kernel_key("umap", 5, True, 2)
    others = [
        aot_epoch.kernel_key("cauchy", 5, True, 2),
        aot_epoch.kernel_key("umap", 4, True, 2),
        aot_epoch.kernel_key("umap", 5, False, 2),
        aot_epoch.kernel_key("umap", 5, True, 3),
    ]
    assert len({base, *others}) == 5


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(aot_epoch.CACHE_DIR_ENV, str(tmp_path / "k"))
    assert aot_epoch.kernel_cache_dir() == tmp_path / "k"
    monkeypatch.delenv(aot_epoch.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert aot_epoch.kernel_cache_dir() == tmp_path / "xdg" / "torchdr_sc" / "kernels"


def _expected_gradient(z, epoch, t):
    """The epoch's gradient recomputed eagerly with the compiled path's hashed negatives."""
    consts = torch.tensor([1.58, 0.9, 1.0, 4.0, 1.0])
    coords = list(z.T.contiguous())
    expected = torch.zeros_like(z)
    for chunk, (h, tl) in enumerate(epoch.schedule.active_chunks(t, epoch_mod.CPU_CHUNK_EDGES)):
        negs = hashed_negatives(hash_key(7, t, "cpu", chunk), h.numel(), 5, z.shape[0])
        negs = torch.where(negs == tl, (negs + 1) % z.shape[0], negs)
        g_att, g_head = pair_terms(coords, h, tl, negs, consts, epoch.kind)
        expected += scatter_pair_terms(z, h, tl, g_att, g_head)
    return expected


@needs_aot
def test_auto_epoch_runs_the_ahead_of_time_kernel(kernel_dir, monkeypatch):
    monkeypatch.setattr(epoch_mod, "COMPILE_MIN_WORK", 0)  # 'auto' compiles this small epoch

    def no_torch_compile():
        raise AssertionError("compile='auto' should use the ahead-of-time kernel")

    monkeypatch.setattr(epoch_mod, "compiled_pair_terms", no_torch_compile)
    P = _random_affinity()
    epoch = SampledEpoch(P, UMAP_KERNEL, 5, seed=7, discard_tails=True, compile="auto")
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(2)) * 3
    got = epoch.gradient(z, 5)
    assert epoch._aot_kernel is not None
    torch.testing.assert_close(got, _expected_gradient(z, epoch, 5), rtol=1e-3, atol=1e-4)


def test_forced_compile_and_float64_keep_torch_compile(monkeypatch):
    """``compile=True`` means torch.compile; a float64 embedding is not what the package
    takes: both run the (here faked) torch.compile path and never build a package."""
    calls = []

    def fake_compiled():
        def run(*args, **kwargs):
            calls.append(args[0][0].dtype)
            return epoch_pair_terms(*args, **kwargs)

        return run

    def no_build(*args, **kwargs):
        raise AssertionError("no package should be built")

    monkeypatch.setattr(epoch_mod, "compiled_pair_terms", fake_compiled)
    monkeypatch.setattr(aot_epoch, "epoch_kernel", no_build)
    monkeypatch.setattr(epoch_mod, "COMPILE_MIN_WORK", 0)
    P = _random_affinity()
    forced = SampledEpoch(P, UMAP_KERNEL, 5, seed=7, compile=True)
    forced.gradient(torch.randn(300, 2), 0)
    auto = SampledEpoch(P, UMAP_KERNEL, 5, seed=7, compile="auto")
    auto.gradient(torch.randn(300, 2, dtype=torch.float64), 0)
    assert calls[0] == torch.float32
    assert calls[-1] == torch.float64


def test_failed_build_falls_back_to_torch_compile_once(monkeypatch, caplog):
    attempts = []

    def broken(*args, **kwargs):
        attempts.append(args)
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(aot_epoch, "epoch_kernel", broken)
    monkeypatch.setattr(aot_epoch, "available", lambda: True)
    monkeypatch.setattr(epoch_mod, "compiled_pair_terms", lambda: epoch_pair_terms)
    monkeypatch.setattr(epoch_mod, "COMPILE_MIN_WORK", 0)
    P = _random_affinity()
    epoch = SampledEpoch(P, UMAP_KERNEL, 5, seed=7, discard_tails=True, compile="auto")
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(2)) * 3
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        first = epoch.gradient(z, 5)
        epoch.gradient(z, 6)
    assert len(attempts) == 1
    assert sum("ahead-of-time epoch kernel failed" in r.message for r in caplog.records) == 1
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, _expected_gradient(z, epoch, 5), rtol=1e-4, atol=1e-5)


_SMALL_COMPILE = """
import torch
from torchdr_sc.objective.epoch import compiled_pair_terms
from torchdr_sc.objective.pairs import hash_key
torch.set_num_threads(2)
z = torch.randn(40, 2)
heads = torch.randint(0, 40, (16,), dtype=torch.int32)
compiled_pair_terms()(list(z.unbind(1)), heads, heads.flip(0), hash_key(0, 0, "cpu"),
                      torch.ones(5), kind="umap", n_negatives=5, discard_tails=False)
"""


def test_torch_compile_of_a_small_epoch_still_emits_a_parallel_loop(tmp_path):
    """Regression: compiled first on a few edges, the epoch loop was serial, and that code,
    cached on disk, served every later large epoch in every process (one thread of two)."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path), TORCH_LOGS="output_code")
    done = subprocess.run(
        [sys.executable, "-c", _SMALL_COMPILE],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert 'extern "C"' in done.stderr  # the generated C++ was logged
    assert "#pragma omp parallel" in done.stderr


@needs_aot
def test_a_damaged_cached_package_is_rebuilt(kernel_dir, monkeypatch):
    """A cached file that does not load (truncated copy, foreign build) is built again once,
    not left to fail in every process."""
    path = kernel_dir / f"epoch-{aot_epoch.kernel_key('umap', 5, True, 2)}.pt2"
    good = path.read_bytes()
    builds = []

    def rebuild(target, *args):
        builds.append(args)
        target.write_bytes(good)  # what a real build writes (without its 20 s)

    monkeypatch.setattr(aot_epoch, "build_package", rebuild)
    monkeypatch.setattr(aot_epoch, "_LOADED", {})
    path.write_bytes(good[: len(good) // 3])
    try:
        kernel = aot_epoch.epoch_kernel("umap", 5, True, 2)
    finally:
        path.write_bytes(good)
    assert builds == [("umap", 5, True, 2)]
    heads, tails = _edges(50, 30, seed=0)
    g_att, _ = kernel(torch.randn(50, 2), heads, tails, hash_key(0, 0, "cpu"), torch.ones(5))
    assert torch.isfinite(g_att[0]).all()
