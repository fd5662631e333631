"""``max_step_norm``: the delta-bar-delta optimiser shortens the steps that are too long."""

import pytest
import torch

from torchdr_sc import TSNE
from torchdr_sc.optimize import DeltaBarDelta


def _one_step(max_step_norm):
    z = torch.zeros(3, 2, requires_grad=False)
    opt = DeltaBarDelta([z], lr=1.0, max_step_norm=max_step_norm)
    z.grad = torch.tensor([[-30.0, -40.0], [0.3, 0.4], [-6.0, 8.0]])  # steps of 60, 0.6, 12
    opt.step()
    return z


def test_long_steps_are_shortened_to_the_limit_and_keep_their_direction():
    z, free = _one_step(5.0), _one_step(None)
    lengths = torch.linalg.vector_norm(z, dim=1)
    assert torch.linalg.vector_norm(free, dim=1).min() < 5.0 < lengths.max() + 1e-6
    assert torch.allclose(lengths[[0, 2]], torch.tensor([5.0, 5.0]))
    assert torch.allclose(z[0] / lengths[0], free[0] / free[0].norm())
    assert torch.equal(z[1], free[1])  # a short step is left alone


def test_tsne_takes_the_limit_and_checks_it():
    X = torch.randn(120, 5, generator=torch.Generator().manual_seed(0))
    limited = TSNE(max_step_norm=1e-3, max_iter=40, random_state=0).fit_transform(X)
    free = TSNE(max_iter=40, random_state=0).fit_transform(X)
    assert not torch.equal(torch.as_tensor(limited), torch.as_tensor(free))
    with pytest.raises(ValueError, match="max_step_norm"):
        TSNE(max_step_norm=-1.0).fit_transform(X)
