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
  AMSGrad), the single-tensor form PyTorch runs on CPU tensors (PaCMAP's optimiser);
- :func:`riemannian_adam_update`, the step of :class:`~torchdr_sc.optimize.RiemannianAdam`
  (Adam in the Poincaré ball, COSNE's optimiser), which that class calls too.

A stepper offers what the loop uses of an optimiser: ``param_groups[0]`` (``lr``,
``momentum``) and ``step()`` reading the parameter's ``.grad``.
"""

from __future__ import annotations

from typing import Any

import torch

from .objective.poincare import expmap, project, transport

__all__ = [
    "ADAM_DEFAULTS",
    "DELTA_BAR_DELTA_DEFAULTS",
    "AdamStepper",
    "DeltaBarDeltaStepper",
    "RiemannianAdamStepper",
    "builtin_stepper",
    "delta_bar_delta_update",
    "riemannian_adam_update",
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


@torch.no_grad()
def riemannian_adam_update(param: torch.Tensor, state: dict, group: dict) -> None:
    """One Riemannian Adam step of the points ``param`` (rows in the Poincaré ball) from
    their Euclidean ``.grad`` (Bécigneul & Ganea, *Riemannian Adaptive Optimization
    Methods*, ICLR 2019, with one second moment per point as geoopt's ``RiemannianAdam``).

    The Riemannian gradient is the Euclidean one scaled by ``(1 - |y|^2)^2 / 4``; the first
    moment is a tangent vector, the second the moving average of the gradient's squared
    Riemannian norm. The point moves along the geodesic (exponential map) by Adam's
    bias-corrected step, is kept :func:`~torchdr_sc.objective.poincare.project`-ed inside the
    ball, and the first moment is parallel-transported to it. The step is computed in
    float64 whatever the parameter's dtype (in float32 the gyration of the transport loses
    every digit for two points near each other close to the boundary, where ``1 -
    2 <x, y> + |x|^2 |y|^2`` is about ``(1 - |y|^2)^2``); ``state`` holds ``step`` and the
    moments (float64), ``group`` ``lr``, ``betas`` and ``eps``.
    """
    point, grad = param.double(), param.grad.double()
    beta1, beta2 = group["betas"]
    if not state:
        state.update(
            step=0,
            exp_avg=torch.zeros_like(point),
            exp_avg_sq=torch.zeros_like(point[..., :1]),
        )
    state["step"] += 1
    step = float(state["step"])
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    half_a = (1.0 - (point * point).sum(-1, keepdim=True)) / 2.0  # 1 / lambda_y
    rgrad = grad * (half_a * half_a)
    exp_avg.lerp_(rgrad, 1 - beta1)
    sq_norm = (grad * grad).sum(-1, keepdim=True) * (half_a * half_a)  # lambda^2 |rgrad|^2
    exp_avg_sq.mul_(beta2).add_(sq_norm, alpha=1 - beta2)
    step_size = group["lr"] / (1 - beta1**step)
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
    moved = project(expmap(point, exp_avg / denom * -step_size))
    exp_avg.copy_(transport(point, moved, exp_avg))
    param.copy_(project(moved.to(param.dtype)))


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


class RiemannianAdamStepper(_Stepper):
    """:class:`~torchdr_sc.optimize.RiemannianAdam`'s step (the same bits) on one tensor."""

    def step(self) -> None:
        """One update of the points from their ``.grad``."""
        riemannian_adam_update(self.param, self.state, self.param_groups[0])


def builtin_stepper(
    optimizer_cls: type, kwargs: dict[str, Any] | None, param: torch.Tensor, lr: float
) -> _Stepper | None:
    """The stepper that replaces ``optimizer_cls(...)`` on ``param``, or ``None`` where the
    ``torch.optim`` class must run itself (another class, settings the stepper does not
    take, a tensor off the CPU for Adam, whose CUDA form PyTorch computes differently)."""
    from .optimize import DeltaBarDelta, RiemannianAdam

    kwargs = dict(kwargs or {})
    if optimizer_cls is DeltaBarDelta and set(kwargs) <= set(DELTA_BAR_DELTA_DEFAULTS):
        return DeltaBarDeltaStepper(param, {**DELTA_BAR_DELTA_DEFAULTS, **kwargs, "lr": lr})
    if optimizer_cls is RiemannianAdam and set(kwargs) <= set(ADAM_DEFAULTS):
        return RiemannianAdamStepper(param, {**ADAM_DEFAULTS, **kwargs, "lr": lr})
    adam_ok = set(kwargs) <= set(ADAM_DEFAULTS) and param.device.type == "cpu"
    if optimizer_cls is torch.optim.Adam and adam_ok:
        return AdamStepper(param, {**ADAM_DEFAULTS, **kwargs, "lr": lr})
    return None
