"""Progress reporting: stage lines, a bar updated every iteration, the default rule."""

from __future__ import annotations

import io
import re
import sys
import types

import numpy as np
import pytest
import torch

import torchdr_sc.estimators._base as base
import torchdr_sc.estimators._schedule as schedule
import torchdr_sc.knn.torch_search as torch_search
from torchdr_sc import progress
from torchdr_sc.estimators import TSNE, UMAP
from torchdr_sc.optimize import Phase, optimize
from torchdr_sc.streaming import Chunked

STAGES = ("kNN search", "input affinity", "initialisation", "optimisation")


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 8)).astype(np.float32)


def _fit(cls, X, **kwargs):
    params = {"max_iter": 30, "random_state": 0, "init": "normal", **kwargs}
    return cls(**params).fit_transform(X)


def _positions(text: str, patterns: list[str]) -> list[int]:
    found = [re.search(p, text) for p in patterns]
    assert all(found), [p for p, m in zip(patterns, found, strict=True) if m is None]
    return [m.start() for m in found]


# ---- the estimator pipeline reports its stages ----------------------------------------
@pytest.mark.parametrize("cls", [UMAP, TSNE])
def test_stage_lines_appear_in_pipeline_order(cls, X, capfd):
    _fit(cls, X, progress_bar=True)
    err = capfd.readouterr().err
    name = cls.__name__
    patterns = []
    for stage in STAGES:
        patterns += [rf"{name}: {stage} \(.+\)\.\.\.\n", rf"{name}: {stage} done in "]
    starts = _positions(err, patterns)
    assert starts == sorted(starts)
    assert re.search(rf"{name}: kNN search \(300 cells, k=\d+, backend ", err)
    assert re.search(rf"{name}: optimisation done in .* \(30 (epochs|iterations), ", err)


def test_optimisation_progress_is_updated_every_iteration(X, monkeypatch):
    events: list[object] = []

    def recording_optimize(z0, gradient, phases, *, progress, **kwargs):
        assert progress is not None

        def grad(z, it, phase):
            events.append("step")
            return gradient(z, it, phase)

        def update(k):
            events.append(k)
            return progress(k)

        return optimize(z0, grad, phases, progress=update, **kwargs)

    monkeypatch.setattr(schedule, "optimize", recording_optimize)
    _fit(TSNE, X, progress_bar=True, check_interval=50)
    assert events == ["step", 1] * 30  # the first update comes right after iteration 1


def test_the_loop_reports_every_iteration_even_when_it_stops_early():
    calls = []
    result = optimize(
        torch.ones(4, 2),
        lambda z, it, phase: torch.zeros_like(z),  # converged at the first check
        [Phase(100)],
        lr=1.0,
        check_interval=7,
        progress=calls.append,
    )
    assert result.converged
    assert result.n_iter == 7
    assert calls == [1] * 7


def test_the_loop_runs_without_a_progress_callback():
    result = optimize(torch.ones(4, 2), lambda z, it, p: z.clone(), [Phase(5)], lr=0.1)
    assert result.n_iter == 5


# ---- off by default, and off on other ranks --------------------------------------------
@pytest.mark.parametrize("cls", [UMAP, TSNE])
def test_no_progress_bar_writes_nothing(cls, X, capfd):
    _fit(cls, X, progress_bar=False)
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_ranks_other_than_zero_write_nothing(X, capfd, monkeypatch):
    monkeypatch.setattr(base, "is_rank_zero", lambda: False)
    _fit(UMAP, X, progress_bar=True)
    assert capfd.readouterr().err == ""


def test_an_estimator_without_progress_bar_silences_an_outer_reporter(X):
    stream = io.StringIO()
    with progress.reporting(progress.Progress("outer", stream=stream)):
        _fit(UMAP, X, progress_bar=False)
    assert stream.getvalue() == ""


# ---- kNN search blocks and streamed input ----------------------------------------------
def test_exact_torch_search_counts_its_query_blocks(X, capfd, monkeypatch):
    # 40 query rows per block over 300 rows: 8 blocks, enough for a bar
    monkeypatch.setattr(torch_search, "block_bytes", lambda device: 40 * 300 * 4)
    assert torch_search.PROGRESS_MIN_BLOCKS <= 8
    _fit(UMAP, X, progress_bar=True, backend="torch")
    err = capfd.readouterr().err
    assert re.search(r"UMAP: kNN search done in .* \(8 blocks, ", err)


def test_streamed_input_reports_the_read_then_the_usual_stages(X, capfd):
    UMAP(max_iter=30, random_state=0, backend="torch", progress_bar=True).fit_transform(
        Chunked(X, chunk_rows=100)
    )
    err = capfd.readouterr().err
    patterns = [
        r"UMAP: reading the data in chunks \(kNN search, backend torch \+ PCA\)\.\.\.",
        r"UMAP: reading the data in chunks done in ",
        r"UMAP: input affinity \(",
        r"UMAP: initialisation \(given\)",
        r"UMAP: optimisation done in ",
    ]
    starts = _positions(err, patterns)
    assert starts == sorted(starts)


# ---- the Progress object ----------------------------------------------------------------
def test_stage_writes_its_start_at_once_and_closes_its_bars():
    stream = io.StringIO()
    p = progress.Progress("X", stream=stream)
    with progress.reporting(p), p.stage("work", "3 items"):
        assert stream.getvalue() == "X: work (3 items)...\n"
        update = progress.iterations(3, unit="items")
        for _ in range(3):
            update(1)
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"X: work done in \d+\.\d+ s \(3 items, [\d.]+ items/s\)", lines[-1])
    assert p._bars == []


def test_a_failing_stage_says_so_and_reraises():
    stream = io.StringIO()
    p = progress.Progress("X", stream=stream)

    def fail() -> None:
        with p.stage("work"):
            p.iterations(10)
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        fail()
    assert "X: work stopped after " in stream.getvalue()
    assert p._bars == []


def test_without_an_active_reporter_nothing_is_reported():
    assert progress.active() is None
    assert progress.iterations(10) is None
    with progress.stage("work", "detail"):
        pass


# ---- the default rule ------------------------------------------------------------------
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _no_kernel(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


def test_default_is_off_for_a_small_run_on_a_pipe(monkeypatch):
    _no_kernel(monkeypatch)
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    assert not progress.default_progress(500)
    assert not progress.default_progress(10 * progress.LARGE_RUN_SAMPLES)  # a log stays quiet


def test_default_is_on_for_a_large_run_in_a_terminal(monkeypatch):
    _no_kernel(monkeypatch)
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    assert progress.default_progress(progress.LARGE_RUN_SAMPLES)
    assert not progress.default_progress(progress.LARGE_RUN_SAMPLES - 1)


def _fake_ipython(monkeypatch, shell) -> None:
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)


def test_default_is_on_in_a_jupyter_kernel(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    _fake_ipython(monkeypatch, types.SimpleNamespace(config={"IPKernelApp": {}}))
    assert progress.in_notebook()
    assert progress.default_progress(100)


def test_a_terminal_ipython_is_not_a_notebook(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    _fake_ipython(monkeypatch, types.SimpleNamespace(config={"TerminalIPythonApp": {}}))
    assert not progress.in_notebook()
    _fake_ipython(monkeypatch, None)  # ipykernel imported, but no shell running
    assert not progress.default_progress(100)
