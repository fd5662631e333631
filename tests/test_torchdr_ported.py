"""Defects found by porting TorchDR 0.5's own tests (issue 26).

Three user-facing contracts, each checked where it used to break:

- :class:`~torchdr_sc.affinity.SymmetricEntropicAffinity` with the first-order solvers
  (``optimizer='Adam'`` / ``'SGD'``) reaches the affinity the Newton solver computes
  (it diverged or returned NaN on two moons).
- An affinity object used as ``affinity_out`` of
  :class:`~torchdr_sc.AffinityMatcher` is differentiable with respect to the embedding
  (the fit stopped in autograd: "element 0 of tensors does not require grad").
- ``optimizer`` and ``scheduler`` are accepted by contract (a ``torch.optim.Optimizer`` /
  ``LRScheduler`` subclass, or a declared name) and refused before any computation with a
  message naming the parameter, the value, the accepted values and the fix.
"""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.affinity import (
    EntropicAffinity,
    NormalizedGaussianAffinity,
    SinkhornAffinity,
    SymmetricEntropicAffinity,
)
from torchdr_sc.estimators._base import Embedder
from torchdr_sc.objective import MATCHING_LOSSES
from torchdr_sc.quality import knn_label_accuracy

DT = torch.float64


# -- 1. SymmetricEntropicAffinity: first-order dual ascent ---------------------------------


@pytest.fixture(scope="module")
def moons() -> torch.Tensor:
    """The two-moons set of the report: 300 points, noise 0.05, seed 0 (float64)."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(300, noise=0.05, random_state=0)
    return torch.as_tensor(x, dtype=DT)


@pytest.fixture(scope="module")
def newton_p(moons: torch.Tensor) -> torch.Tensor:
    """The reference affinity: the projected Newton solver at ``tol=1e-5``."""
    return SymmetricEntropicAffinity(perplexity=30, optimizer="newton", tol=1e-5)(moons)


def _shannon(P: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of every row of a dense affinity."""
    return torch.where(P > 0, -P * torch.log(P), torch.zeros_like(P)).sum(1)


@pytest.mark.parametrize(
    ("optimizer", "eps_square"), [("Adam", False), ("Adam", True), ("SGD", False), ("SGD", True)]
)
def test_symmetric_entropic_first_order_matches_newton(moons, newton_p, optimizer, eps_square):
    tol = 1e-5
    aff = SymmetricEntropicAffinity(
        perplexity=30, optimizer=optimizer, eps_square=eps_square, tol=tol
    )
    P = aff(moons)  # default lr and max_iter
    assert torch.isfinite(P).all()
    assert aff.n_iter_ < aff.max_iter  # stopped by the tolerance, not by the cap
    assert torch.equal(P, P.T)
    assert (P.sum(1) - 1).abs().max() < tol
    # the solver's entropy sum_j P_ij (1 - log P_ij) is within tol of log(30) + 1 on
    # active rows and above it on the others: Shannon's is within 2 tol of log(30)
    H = _shannon(P)
    assert H.min() > math.log(30) - 2 * tol
    assert ((H - math.log(30)).abs() < 2 * tol).float().mean() > 0.9
    assert (P - newton_p).abs().max() < 1e-3 * newton_p.max()


@pytest.mark.parametrize(("optimizer", "lr"), [("SGD", 1e3), ("Adam", 10.0)])
def test_symmetric_entropic_first_order_too_large_lr_is_safeguarded(moons, newton_p, optimizer, lr):
    # far above the useful rate: the steps are cut back instead of overflowing to NaN
    # or to rows of 1e200
    aff = SymmetricEntropicAffinity(perplexity=30, optimizer=optimizer, lr=lr, tol=1e-5)
    P = aff(moons)
    assert torch.isfinite(P).all()
    assert aff.n_iter_ < aff.max_iter
    assert (P.sum(1) - 1).abs().max() < 1e-5
    assert (P - newton_p).abs().max() < 1e-3 * newton_p.max()


# -- 2. affinity objects as the output similarity of AffinityMatcher -----------------------


@pytest.mark.parametrize(
    ("normalization_dim", "metric"),
    [
        *[(dim, "sqeuclidean") for dim in [(0, 1), 1, 0, None]],
        ((0, 1), "euclidean"),
        ((0, 1), "cosine"),
    ],
)
def test_normalized_gaussian_affinity_is_differentiable(normalization_dim, metric):
    x = torch.randn(12, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    aff = NormalizedGaussianAffinity(sigma=2.0, normalization_dim=normalization_dim, metric=metric)
    P = aff(x)
    assert P.requires_grad
    # exact gradients (finite differences against autograd)
    assert torch.autograd.gradcheck(aff, (x,))


def test_affinity_input_without_grad_is_unchanged():
    x = torch.randn(20, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    P = NormalizedGaussianAffinity(sigma=2.0)(x)
    assert not P.requires_grad
    with pytest.raises(ValueError, match="NaN"):  # validation still runs on grad input
        NormalizedGaussianAffinity()(torch.full((5, 2), math.nan, requires_grad=True))


@pytest.fixture(scope="module")
def digits_subset() -> tuple[np.ndarray, np.ndarray]:
    """300 sklearn digits (float32), scaled to unit variance overall, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data[:300].astype(np.float32)
    return x / x.std(), d.target[:300]


AFFINITIES_OUT = {
    "normalized_gaussian": lambda: NormalizedGaussianAffinity(sigma=1.0),
    "student_sinkhorn": lambda: SinkhornAffinity(1.0, base_kernel="student"),
}


@pytest.mark.parametrize("name", list(AFFINITIES_OUT))
def test_affinity_matcher_with_affinity_out(digits_subset, name, monkeypatch):
    from sklearn.decomposition import PCA

    x, labels = digits_subset
    est = tdr.AffinityMatcher(
        affinity_in=EntropicAffinity(perplexity=10, sparsity=False),
        affinity_out=AFFINITIES_OUT[name](),
        loss_fn="kl",
        lr=0.1,
        max_iter=300,
        device="cpu",
        random_state=0,
    )
    losses: list[float] = []
    loss_fn = MATCHING_LOSSES["kl"]

    def recorded(p: torch.Tensor, q: torch.Tensor, exaggeration: float) -> torch.Tensor:
        value = loss_fn(p, q, exaggeration)
        losses.append(float(value.detach()))
        return value

    monkeypatch.setitem(MATCHING_LOSSES, "kl", recorded)
    z = est.fit_transform(x)
    assert np.isfinite(z).all()
    assert len(losses) == 300
    assert losses[-1] < 0.5 * losses[0]  # the loss went down
    accuracy = knn_label_accuracy(z, labels, k=10)
    pca = knn_label_accuracy(PCA(2).fit_transform(x), labels, k=10)
    assert accuracy > 0.8  # chance is 0.1
    assert accuracy > pca + 0.1  # the fit, not the PCA initialisation, found the classes


def test_affinity_matcher_rejects_sparse_or_detached_affinity_out(digits_subset):
    x, _ = digits_subset
    sparse = tdr.AffinityMatcher(
        affinity_in=EntropicAffinity(perplexity=10, sparsity=False),
        affinity_out=EntropicAffinity(perplexity=10, sparsity=True),
        max_iter=5,
        device="cpu",
    )
    with pytest.raises(TypeError, match=r"affinity_out.*sparsity=False"):
        sparse.fit_transform(x[:100])
    detached = tdr.AffinityMatcher(
        affinity_in=EntropicAffinity(perplexity=10, sparsity=False),
        affinity_out=lambda z: torch.cdist(z.detach(), z.detach()),
        max_iter=5,
        device="cpu",
    )
    with pytest.raises(TypeError, match=r"affinity_out.*differentiable"):
        detached.fit_transform(x[:100])


# -- 3. optimizer and scheduler by contract -------------------------------------------------


class NotAnOptimizer:
    """Has the constructor of an optimiser but is none."""

    def __init__(self, params, lr: float = 0.1) -> None:
        self.params = list(params)


class HalvedSGD(torch.optim.SGD):
    """A user's own optimiser: SGD at half the rate (a valid subclass)."""

    def __init__(self, params, lr: float = 0.1, **kwargs) -> None:
        super().__init__(params, lr=lr / 2, **kwargs)


BAD = [
    ({"scheduler": "Counter"}, ValueError, r"`scheduler` must be one of .*'StepLR'.*got 'Counter'"),
    ({"scheduler": "Any"}, ValueError, r"`scheduler` .*LRScheduler subclass.*got 'Any'"),
    ({"scheduler": "LRScheduler"}, ValueError, r"`scheduler` .*got 'LRScheduler'.*abstract"),
    ({"scheduler": torch.optim.lr_scheduler.LRScheduler}, ValueError, r"`scheduler`.*abstract"),
    (
        {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau},
        ValueError,
        r"`scheduler`.*ReduceLROnPlateau.*step\(\)",
    ),
    ({"scheduler": int}, TypeError, r"`scheduler`.*int.*LRScheduler subclass"),
    (
        {"scheduler": lambda opt: torch.optim.lr_scheduler.StepLR(opt, 5)},
        TypeError,
        r"`scheduler`.*scheduler_kwargs",
    ),
    ({"scheduler": "StepLR"}, ValueError, r"`scheduler_kwargs`.*step_size"),
    (
        {"scheduler": "OneCycleLR", "scheduler_kwargs": {"max_lr": 1.0}},
        ValueError,
        r"`scheduler_kwargs`.*total_steps",
    ),
    (
        {"optimizer": "LBFGS"},
        ValueError,
        r"`optimizer` must be one of .*'Adam'.*got 'LBFGS'.*closure",
    ),
    ({"optimizer": torch.optim.LBFGS}, ValueError, r"`optimizer`.*LBFGS.*closure"),
    ({"optimizer": "Optimizer"}, ValueError, r"`optimizer` .*'SGD'.*got 'Optimizer'.*abstract"),
    ({"optimizer": torch.optim.Optimizer}, ValueError, r"`optimizer`.*abstract"),
    ({"optimizer": "adam"}, ValueError, r"`optimizer` .*got 'adam' \(did you mean 'Adam'\?\)"),
    ({"optimizer": NotAnOptimizer}, TypeError, r"`optimizer`.*NotAnOptimizer.*Optimizer subclass"),
    ({"optimizer": torch.optim.Adam([torch.zeros(1, requires_grad=True)])}, TypeError, "class"),
    (
        {"optimizer": "Adam", "optimizer_kwargs": {"momentum": 0.9}},
        ValueError,
        r"`optimizer_kwargs`.*momentum",
    ),
    (
        {"optimizer": "Adam", "optimizer_kwargs": {"betas": (2.0, 0.9)}},
        ValueError,
        r"`optimizer_kwargs`.*beta",
    ),
]


@pytest.mark.parametrize(("params", "error", "match"), BAD)
@pytest.mark.parametrize("make", [tdr.TSNE, tdr.UMAP, tdr.AffinityMatcher])
def test_bad_optimizer_or_scheduler_refused_before_any_work(make, params, error, match, blobs):
    x, _ = blobs
    est = make(max_iter=10, device="cpu", **params)
    if make is tdr.AffinityMatcher:
        est.set_params(affinity_in=EntropicAffinity(perplexity=10, sparsity=False))
        est.set_params(affinity_out=tdr.StudentKernel())
    with pytest.raises(error, match=match):
        est.validate()
    with (
        mock.patch.object(Embedder, "fit_embedding", side_effect=AssertionError("computed")),
        pytest.raises(error, match=match),
    ):
        est.fit_transform(x)


SCHEDULER_KWARGS = {
    "ConstantLR": {},
    "CosineAnnealingLR": {"T_max": 10},
    "CosineAnnealingWarmRestarts": {"T_0": 5},
    "CyclicLR": {"base_lr": 0.01, "max_lr": 0.1},
    "ExponentialLR": {"gamma": 0.9},
    "LambdaLR": {"lr_lambda": lambda it: 1.0 / (1 + it)},
    "LinearLR": {},
    "MultiStepLR": {"milestones": [3, 6]},
    "MultiplicativeLR": {"lr_lambda": lambda it: 0.95},
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 20},
    "PolynomialLR": {},
    "StepLR": {"step_size": 5},
}


def test_every_declared_name_works():
    from torchdr_sc.optimize import OPTIMIZERS, SCHEDULERS, optimize

    assert {"SGD", "Adam", "DeltaBarDelta"} <= set(OPTIMIZERS)
    assert "LBFGS" not in OPTIMIZERS
    assert set(SCHEDULERS) == set(SCHEDULER_KWARGS)
    z0 = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    from torchdr_sc.optimize import Phase

    def gradient(z, it, phase):
        return z.clone()  # minimise |z|^2 / 2

    for name in OPTIMIZERS:
        out = optimize(z0, gradient, [Phase(20)], lr=0.05, optimizer=name)
        assert out.embedding.norm() < z0.norm(), name
    for name, kwargs in SCHEDULER_KWARGS.items():
        cls = SCHEDULERS[name]
        out = optimize(
            z0,
            gradient,
            [Phase(20)],
            lr=0.05,
            optimizer="SGD",
            scheduler=lambda opt, cls=cls, kwargs=kwargs: cls(opt, **kwargs),
        )
        assert out.embedding.norm() < z0.norm(), name


@pytest.mark.parametrize(
    "params",
    [
        {"optimizer": HalvedSGD},
        {"optimizer": torch.optim.Adam, "lr": 0.5},
        {"optimizer": "RMSprop", "lr": 0.05},
        {"scheduler": "StepLR", "scheduler_kwargs": {"step_size": 10, "gamma": 0.5}},
        {"scheduler": torch.optim.lr_scheduler.ExponentialLR, "scheduler_kwargs": {"gamma": 0.99}},
    ],
    ids=["subclass", "class", "name", "scheduler-name", "scheduler-class"],
)
def test_valid_optimizer_and_scheduler_fit(params, blobs):
    x, _ = blobs
    z = tdr.TSNE(perplexity=10, max_iter=40, device="cpu", random_state=0, **params).fit_transform(
        x
    )
    assert z.shape == (x.shape[0], 2)
    assert np.isfinite(z).all()
