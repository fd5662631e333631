"""t-SNE's ``lr='auto'``: ``n / exaggeration`` in each phase (openTSNE's rule, Belkina et al.
2019), so the main phase steps 12x further than the exaggeration phase. With one rate
throughout, the main phase was under-converged at scale: NP@15 0.140 against openTSNE's 0.158
on the 100,000-cell atlas (benchmarks/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.estimators import _schedule
from torchdr_sc.optimize import Phase, optimize


@pytest.fixture
def spy(monkeypatch):
    seen = {}
    real = _schedule.optimize

    def record(z0, gradient, phases, **kwargs):
        seen["phases"], seen["lr"] = list(phases), kwargs["lr"]
        return real(z0, gradient, phases, **kwargs)

    monkeypatch.setattr(_schedule, "optimize", record)
    return seen


def _points(n=400):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, 10)) + np.repeat(rng.normal(size=(4, 10)) * 4, n // 4, 0)).astype(
        np.float32
    )


def test_tsne_auto_lr_is_n_over_exaggeration_in_each_phase(spy):
    x = _points(4000)
    tdr.TSNE(random_state=0, max_iter=252, repulsion="fft").fit_transform(x)
    early, main = spy["phases"]
    assert early.exaggeration == 12
    assert early.lr_scale == 1.0
    assert spy["lr"] * early.lr_scale == pytest.approx(4000 / (4 * 12))
    assert spy["lr"] * main.lr_scale == pytest.approx(4000 / 4)


@pytest.mark.parametrize(
    ("estimator", "params"),
    [("TSNE", {"lr": 10.0}), ("SNE", {}), ("TSNE", {"early_exaggeration_coeff": 1.0})],
)
def test_one_rate_throughout_otherwise(spy, estimator, params):
    getattr(tdr, estimator)(random_state=0, max_iter=260, **params).fit_transform(_points())
    assert all(phase.lr_scale == 1.0 for phase in spy["phases"])


def test_optimize_steps_with_each_phases_rate():
    z0 = torch.zeros(3, 2)
    phases = [Phase(2), Phase(3, lr_scale=10.0)]
    out = optimize(z0, lambda z, it, phase: -torch.ones_like(z), phases, lr=0.5)
    torch.testing.assert_close(out.embedding, torch.full((3, 2), 0.5 * 2 + 5.0 * 3))
