"""The built-in optimisers' steps, taken without instantiating a ``torch.optim`` optimiser.

The first ``torch.optim.Optimizer`` built in a process imports TorchDynamo (its
``add_param_group`` is wrapped by ``torch._disable_dynamo``), about a second of a fresh
process's first fit on a small CPU - as long as a whole 10,000-cell UMAP epoch schedule. The
loop (:func:`torchdr_sc.optimize.optimize`) therefore takes the steps of the optimisers the
estimators use by default itself, with the same arithmetic, in the same order, so with the
same bits as the ``torch.optim`` classes:

- :func:`delta_bar_delta_update`, the step of :class:`~torchdr_sc.optimize.DeltaBarDelta`
  (t-SNE's gains), which that class calls too;
- :class:`AdamStepper`: ``torch.optim.Adam`` with its defaults (no weight decay, no
  AMSGrad), the single-tensor form PyTorch runs on CPU tensors (PaCMAP's optimiser).

A stepper offers what the loop uses of an optimiser: ``param_groups[0]`` (``lr``,
``momentum``) and ``step()`` reading the parameter's ``.grad``.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "ADAM_DEFAULTS",
    "DELTA_BAR_DELTA_DEFAULTS",
    "AdamStepper",
    "DeltaBarDeltaStepper",
    "builtin_stepper",
    "delta_bar_delta_update",
    "shorten_rows",
]

#: :class:`~torchdr_sc.optimize.DeltaBarDelta`'s settings besides ``lr`` and their defaults.
DELTA_BAR_DELTA_DEFAULTS: dict[str, Any] = {
    "momentum": 0.0,
    "gain_increase": 0.2,
    "gain_decrease": 0.8,
    "min_gain": 0.01,
    "max_step_norm": None,
}
#: ``torch.optim.Adam``'s settings the stepper takes, with PyTorch's defaults.
ADAM_DEFAULTS: dict[str, Any] = {"betas": (0.9, 0.999), "eps": 1e-8}


def shorten_rows(update: torch.Tensor, longest: float) -> None:
    """Scale the rows of ``update`` longer than ``longest`` down to that length, in place."""
    norms = torch.linalg.vector_norm(update, dim=1, keepdim=True)
    too_long = norms > longest
    if bool(too_long.any()):
        update.mul_(torch.where(too_long, longest / norms, torch.ones_like(norms)))


@torch.no_grad()
def delta_bar_delta_update(param: torch.Tensor, state: dict, group: dict) -> None:
    """One delta-bar-delta step of ``param`` from its ``.grad`` (see
    :class:`~torchdr_sc.optimize.DeltaBarDelta`); ``state`` holds the gains and the update."""
    grad = param.grad
    if not state:
        state["gains"] = torch.ones_like(param)
        state["update"] = torch.zeros_like(param)
    gains, update = state["gains"], state["update"]
    agree = (grad > 0) == (update > 0)
    grown = gains + group["gain_increase"]
    gains.copy_(torch.where(agree, gains * group["gain_decrease"], grown))
    gains.clamp_(min=group["min_gain"])
    update.mul_(group["momentum"]).addcmul_(gains, grad, value=-group["lr"])
    if group["max_step_norm"] is not None and update.ndim == 2:
        shorten_rows(update, float(group["max_step_norm"]))
    param.add_(update)


class _Stepper:
    """One parameter and one group of settings, stepped from ``param.grad``."""

    def __init__(self, param: torch.Tensor, defaults: dict[str, Any]) -> None:
        self.param = param
        self.param_groups = [dict(defaults)]
        self.state: dict[str, Any] = {}


class DeltaBarDeltaStepper(_Stepper):
    """:class:`~torchdr_sc.optimize.DeltaBarDelta`'s step (the same bits) on one tensor."""

    def step(self) -> None:
        """One update of the parameter from its ``.grad``."""
        delta_bar_delta_update(self.param, self.state, self.param_groups[0])


class AdamStepper(_Stepper):
    """``torch.optim.Adam``'s step with its defaults (the same bits) on one CPU tensor.

    Adam (Kingma & Ba, ICLR 2015): moving averages of the gradient and its square with the
    rates ``betas``, bias-corrected, ``param -= lr m_hat / (sqrt(v_hat) + eps)``.
    """

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameter from its ``.grad``."""
        group, param, grad = self.param_groups[0], self.param, self.param.grad
        beta1, beta2 = group["betas"]
        if not self.state:
            self.state.update(
                step=0,
                exp_avg=torch.zeros_like(param),
                exp_avg_sq=torch.zeros_like(param),
            )
        self.state["step"] += 1
        step = float(self.state["step"])
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = group["lr"] / (1 - beta1**step)
        correction_sqrt = (1 - beta2**step) ** 0.5  # as PyTorch computes it (not math.sqrt)
        denom = (exp_avg_sq.sqrt() / correction_sqrt).add_(group["eps"])
        param.addcdiv_(exp_avg, denom, value=-step_size)


def builtin_stepper(
    optimizer_cls: type, kwargs: dict[str, Any] | None, param: torch.Tensor, lr: float
) -> _Stepper | None:
    """The stepper that replaces ``optimizer_cls(...)`` on ``param``, or ``None`` where the
    ``torch.optim`` class must run itself (another class, settings the stepper does not
    take, a tensor off the CPU for Adam, whose CUDA form PyTorch computes differently)."""
    from .optimize import DeltaBarDelta

    kwargs = dict(kwargs or {})
    if optimizer_cls is DeltaBarDelta and set(kwargs) <= set(DELTA_BAR_DELTA_DEFAULTS):
        return DeltaBarDeltaStepper(param, {**DELTA_BAR_DELTA_DEFAULTS, **kwargs, "lr": lr})
    adam_ok = set(kwargs) <= set(ADAM_DEFAULTS) and param.device.type == "cpu"
    if optimizer_cls is torch.optim.Adam and adam_ok:
        return AdamStepper(param, {**ADAM_DEFAULTS, **kwargs, "lr": lr})
    return None
