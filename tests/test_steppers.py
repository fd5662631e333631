"""The loop's own steps of DeltaBarDelta and Adam: the same bits as the torch.optim objects,
and no TorchDynamo import in a fit (the first torch.optim optimiser of a process imports it,
about a second of a fresh process's first fit)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from torchdr_sc.optimize import DeltaBarDelta, Phase, optimize
from torchdr_sc.steppers import AdamStepper, DeltaBarDeltaStepper, builtin_stepper


def _grads(n: int, shape=(50, 2)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=gen) for _ in range(n)]


@pytest.mark.parametrize("kwargs", [{}, {"betas": (0.5, 0.9), "eps": 1e-6}])
def test_adam_stepper_gives_torch_adams_bits(kwargs):
    theirs = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    ours = theirs.clone()
    opt = torch.optim.Adam([theirs], lr=0.7, **kwargs)
    stepper = AdamStepper(ours, {"betas": (0.9, 0.999), "eps": 1e-8, **kwargs, "lr": 0.7})
    for i, grad in enumerate(_grads(30)):
        if i == 10:  # a rate change between steps, as the loop makes
            opt.param_groups[0]["lr"] = stepper.param_groups[0]["lr"] = 0.3
        theirs.grad, ours.grad = grad.clone(), grad.clone()
        opt.step()
        stepper.step()
        assert torch.equal(theirs, ours), i


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.5, "max_step_norm": 0.5, "min_gain": 0.1}])
def test_delta_bar_delta_stepper_gives_the_optimizers_bits(kwargs):
    theirs = torch.randn(50, 2, generator=torch.Generator().manual_seed(2))
    ours = theirs.clone()
    opt = DeltaBarDelta([theirs], lr=5.0, **kwargs)
    stepper = builtin_stepper(DeltaBarDelta, kwargs, ours, 5.0)
    assert isinstance(stepper, DeltaBarDeltaStepper)
    for i, grad in enumerate(_grads(30)):
        if i == 10:  # the momentum switch between phases
            opt.param_groups[0]["momentum"] = stepper.param_groups[0]["momentum"] = 0.8
        theirs.grad, ours.grad = grad.clone(), grad.clone()
        opt.step()
        stepper.step()
        assert torch.equal(theirs, ours), i


def test_other_settings_keep_the_torch_optimizer():
    z = torch.zeros(4, 2)
    assert builtin_stepper(torch.optim.Adam, {"weight_decay": 0.1}, z, 1.0) is None
    assert builtin_stepper(torch.optim.Adam, {"amsgrad": True}, z, 1.0) is None
    assert builtin_stepper(torch.optim.RMSprop, None, z, 1.0) is None
    assert builtin_stepper(DeltaBarDelta, {"unknown": 1}, z, 1.0) is None


def test_optimize_with_a_scheduler_still_runs_torch_adam():
    """A scheduler needs a torch.optim object: the loop keeps the class then."""

    def gradient(z, it, phase):
        return z - 1.0

    z0 = torch.zeros(5, 2)
    factory = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=5)  # noqa: E731
    out = optimize(z0, gradient, [Phase(20)], lr=0.1, optimizer="Adam", scheduler=factory)
    assert out.n_iter == 20
    assert float((out.embedding - 1.0).abs().max()) < 1.0


@pytest.mark.parametrize("estimator", ["TSNE", "InfoTSNE", "PACMAP", "COSNE"])
def test_a_fit_does_not_import_torch_dynamo(estimator):
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import torchdr_sc as tdr
        X = np.random.default_rng(0).normal(size=(300, 10)).astype(np.float32)
        tdr.{estimator}(max_iter=20, random_state=0, device="cpu").fit(X)
        print("torch._dynamo" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
