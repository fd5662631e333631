"""The optimisation loop's plain gradient step: SGD's arithmetic without ``torch.optim``."""

import subprocess
import sys

import pytest
import torch

from torchdr_sc.optimize import Phase, is_plain_step, optimize

PHASES = [Phase(12, exaggeration=4.0, momentum=0.0, lr_decay="linear"), Phase(7)]


def _gradient(z, it, phase):
    return (z * 0.3 + torch.sin(z * (it + 1))) * phase.exaggeration


def test_plain_step_is_bitwise_torch_sgd():
    z0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    plain = optimize(z0, _gradient, PHASES, lr=0.7)
    # the same SGD through torch.optim (an explicit momentum of 0 is not the plain path)
    kwargs = {"momentum": 0.0}
    assert not is_plain_step("SGD", kwargs, None, PHASES)
    reference = optimize(z0, _gradient, PHASES, lr=0.7, optimizer_kwargs=kwargs)
    assert torch.equal(plain.embedding, reference.embedding)
    assert plain.n_iter == reference.n_iter == 19


@pytest.mark.parametrize(
    ("optimizer", "kwargs", "scheduler", "phases"),
    [
        ("Adam", None, None, PHASES),
        ("SGD", {"momentum": 0.5}, None, PHASES),
        ("SGD", None, lambda opt: torch.optim.lr_scheduler.StepLR(opt, 5), PHASES),
        ("SGD", None, None, [Phase(5, momentum=0.5), Phase(5, momentum=0.8)]),
    ],
)
def test_other_optimisers_go_through_torch_optim(optimizer, kwargs, scheduler, phases):
    assert is_plain_step("SGD", None, None, PHASES)
    assert is_plain_step(torch.optim.SGD, {}, None, [Phase(3)])
    assert not is_plain_step(optimizer, kwargs, scheduler, phases)


def test_scheduler_still_sets_the_rate_between_decays():
    """A torch scheduler's rate is not overwritten by the loop in phases without decay."""
    z0 = torch.ones(4, 2)
    out = optimize(
        z0,
        lambda z, it, phase: torch.ones_like(z),
        [Phase(4)],
        lr=1.0,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
    )
    # steps of 1, 0.5, 0.25, 0.125
    torch.testing.assert_close(out.embedding, torch.full((4, 2), 1.0 - 1.875))


_FIT_WITHOUT_DYNAMO = """
import sys
import numpy as np
import torchdr_sc as tdr
x = np.random.default_rng(0).normal(size=(300, 5)).astype("float32")
tdr.UMAP(max_iter=30, compile=False, random_state=0).fit_transform(x)
print("dynamo imported:", "torch._dynamo" in sys.modules)
"""


def test_umap_fit_never_imports_torch_dynamo():
    """Regression: instantiating any torch.optim optimiser imports TorchDynamo (~1 s of every
    fit on 2 cores); UMAP's plain SGD needs none."""
    done = subprocess.run(
        [sys.executable, "-c", _FIT_WITHOUT_DYNAMO],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "dynamo imported: False" in done.stdout
