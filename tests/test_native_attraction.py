"""t-SNE's attraction: the C kernel, ``torch.compile`` and eager PyTorch give the
same bits, and so does every fit of the t-SNE family whatever the path and thread count."""

from __future__ import annotations

import stat

import numpy as np
import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc._device import cpu_threads
from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.distributed import RowShard
from torchdr_sc.objective import kernel_cache, native
from torchdr_sc.objective.attraction import StudentAttraction
from torchdr_sc.objective.exact import attraction_student

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")


def _affinity(n: int, k: int, dtype: torch.dtype, seed: int = 0) -> SparseAffinity:
    """A symmetric P (int32 ids, edges sorted by row) with weights of t-SNE's scale."""
    gen = torch.Generator().manual_seed(seed)
    cols = torch.randint(0, n, (n * k,), generator=gen)
    weights = torch.rand(n * k, generator=gen, dtype=torch.float64).to(dtype) * 1e-3
    P = SparseAffinity(torch.arange(n).repeat_interleave(k), cols, weights, n)
    P = P.symmetrize("sum")
    return SparseAffinity(P.rows.to(torch.int32), P.cols.to(torch.int32), P.weights, n)


def _embedding(n: int, d: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=gen, dtype=torch.float64) * 30).to(dtype)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_the_three_paths_agree_to_the_bit(dtype, d):
    P = _affinity(20_000, 12, dtype)
    z = _embedding(P.n, d, dtype)
    out = {}
    for compile in ("auto", True, False):
        attraction = StudentAttraction(P, RowShard.full(P.n), compile=compile, scale=2.0)
        out[attraction.path] = attraction(z)
    assert set(out) == {"native", "compiled", "eager"}
    assert torch.equal(out["native"], out["eager"])
    assert torch.equal(out["compiled"], out["eager"])
    # and it is the attraction
    expected = attraction_student(z.double(), P.to(dtype=torch.float64), scale=2.0)
    torch.testing.assert_close(out["native"].double(), expected, rtol=1e-4, atol=1e-9)


@needs_compiler
def test_a_shard_sums_only_its_rows():
    P = _affinity(5_000, 10, torch.float32, seed=3)
    z = _embedding(P.n, 2, torch.float32)
    full = StudentAttraction(P, RowShard.full(P.n), compile="auto")(z)
    for compile in ("auto", False):
        part = StudentAttraction(P, RowShard(1_000, 3_000), compile=compile)(z)
        assert torch.equal(part[1_000:3_000], full[1_000:3_000])
        assert not part[:1_000].any()
        assert not part[3_000:].any()


@needs_compiler
def test_the_kernel_splits_rows_between_threads_without_changing_a_bit():
    P = _affinity(60_000, 10, torch.float32, seed=2)
    z = _embedding(P.n, 2, torch.float32)
    attraction = StudentAttraction(P, RowShard.full(P.n), compile="auto")
    results = []
    for threads in (1, 2, 3):
        with cpu_threads(threads):
            results.append(attraction(z))
    assert all(torch.equal(results[0], r) for r in results[1:])


def _blobs(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 20)) * 4
    x = rng.normal(size=(n, 20)) + centres[rng.integers(0, 8, n)]
    return x.astype(np.float32)


@needs_compiler
@pytest.mark.parametrize(
    ("estimator", "n", "params"),
    [
        ("TSNE", 1_500, {"max_iter": 60, "repulsion": "exact"}),
        ("TSNE", 12_000, {"max_iter": 40}),  # FFT repulsion; above the former 2^22 rule
        ("InfoTSNE", 1_500, {"max_iter": 60}),
        ("InfoTSNE", 12_000, {"max_iter": 40}),
    ],
)
def test_same_embedding_on_every_path_and_thread_count(estimator, n, params):
    x = _blobs(n)
    runs = {}
    for compile in ("auto", False, True):
        for threads in (1, 2):
            est = getattr(tdr, estimator)(random_state=0, compile=compile, **params)
            with cpu_threads(threads):
                runs[compile, threads] = np.asarray(est.fit_transform(x))
            assert est.execution_path_.startswith(
                {
                    "auto": "attraction native",
                    False: "attraction eager",
                    True: "attraction compiled",
                }[compile]
            )
    first = runs["auto", 1]
    for key, z in runs.items():
        np.testing.assert_array_equal(z, first, err_msg=str(key))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, str(tmp_path / "kernels"))
    monkeypatch.setattr(kernel_cache, "_WARNED", set())
    monkeypatch.setattr(kernel_cache, "_PRIVATE", {})
    monkeypatch.setattr(native, "_STATE", {})
    return tmp_path


def test_a_broken_compiler_is_said_once_and_not_retried(fresh_cache, monkeypatch, caplog):
    calls = fresh_cache / "calls"
    cc = fresh_cache / "cc"
    cc.write_text(f"#!/bin/sh\necho called >> {calls}\necho 'cc: broken' >&2\nexit 1\n")
    cc.chmod(cc.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(cc))
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        assert native.library() is None
    assert "did not build" in caplog.text
    assert "set CC" in caplog.text
    builds = calls.read_text().count("called")
    monkeypatch.setattr(native, "_STATE", {})  # as a new process would start
    caplog.clear()
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        assert native.library() is None
    assert calls.read_text().count("called") == builds + 1  # only `cc --version`, no build
    assert "did not build" not in caplog.text


def test_without_a_compiler_tsne_runs_eagerly_with_the_same_numbers(fresh_cache, monkeypatch):
    x = _blobs(800)
    expected = tdr.TSNE(random_state=0, max_iter=40, compile=False).fit_transform(x)
    monkeypatch.setenv("CC", str(fresh_cache / "no-such-compiler"))
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    est = tdr.TSNE(random_state=0, max_iter=40)
    z = est.fit_transform(x)
    assert est.execution_path_.startswith("attraction eager")
    np.testing.assert_array_equal(z, expected)
