"""The one optimisation loop, with the schedule given as data.

A schedule is a list of :class:`Phase`: early exaggeration, the momentum switch and the
learning-rate decay are properties of a phase, not flags flipped inside callbacks (the
pattern of openTSNE and sklearn). The loop works on "my rows": the gradient function
returns this process's contribution and ``sync`` (a no-op on one device, an all-reduce
under ``torchrun``) sums the contributions, so every process applies the same update.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._logging import get_logger
from ._threads import recheck_threads
from .steppers import (
    ADAM_DEFAULTS,
    DELTA_BAR_DELTA_DEFAULTS,
    builtin_stepper,
    delta_bar_delta_update,
    riemannian_adam_update,
)

logger = get_logger(__name__)

GradientFn = Callable[[torch.Tensor, int, "Phase"], torch.Tensor]
SyncFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Phase:
    """One stage of the optimisation.

    Attributes
    ----------
    n_iter
        Number of iterations of this phase.
    exaggeration
        Multiplier of the attractive term.
    momentum
        SGD momentum for this phase (``None`` keeps the optimiser's own setting).
    lr_decay
        ``'none'`` or ``'linear'`` (during this phase the learning rate follows a linear
        decay to 0 over the whole schedule, as in UMAP).
    check_convergence
        Whether the gradient-norm stopping rule applies in this phase.
    lr_scale
        Factor on the base learning rate during this phase (t-SNE's ``lr='auto'`` takes
        ``n / exaggeration`` in each phase, as openTSNE does).
    """

    n_iter: int
    exaggeration: float = 1.0
    momentum: float | None = None
    lr_decay: str = "none"
    check_convergence: bool = True
    lr_scale: float = 1.0


@dataclass
class OptimizeResult:
    """What the loop returns."""

    embedding: torch.Tensor
    n_iter: int
    converged: bool
    elapsed_s: float
    grad_norms: list[float] = field(default_factory=list)


class DeltaBarDelta(torch.optim.Optimizer):
    """SGD with momentum and a gain per coordinate (delta-bar-delta).

    Every coordinate's step is scaled by a gain that grows by ``gain_increase`` while the
    gradient keeps opposing the previous update's direction and shrinks by the factor
    ``gain_decrease`` when they agree, never below ``min_gain`` (Jacobs, *Increased rates of
    convergence through learning rate adaptation*, Neural Networks 1988; the t-SNE
    optimiser of van der Maaten, JMLR 2014). ``update = momentum * update - lr * gain *
    grad``; ``momentum`` can be changed between phases like SGD's.

    With ``max_step_norm``, a row whose update is longer than that is shortened to it
    before the step (and kept so in the momentum): a point that the first large steps would
    throw far from the others stays near them (openTSNE's ``max_step_norm``, Poličar et al.,
    J. Stat. Softw. 2024).
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float = DELTA_BAR_DELTA_DEFAULTS["momentum"],
        gain_increase: float = DELTA_BAR_DELTA_DEFAULTS["gain_increase"],
        gain_decrease: float = DELTA_BAR_DELTA_DEFAULTS["gain_decrease"],
        min_gain: float = DELTA_BAR_DELTA_DEFAULTS["min_gain"],
        max_step_norm: float | None = DELTA_BAR_DELTA_DEFAULTS["max_step_norm"],
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "gain_increase": gain_increase,
            "gain_decrease": gain_decrease,
            "min_gain": min_gain,
            "max_step_norm": max_step_norm,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        """One update of every parameter from its ``.grad``."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    delta_bar_delta_update(param, self.state[param], group)


class RiemannianAdam(torch.optim.Optimizer):
    """Adam on the Poincaré ball: COSNE's optimiser (the parameter's rows are points of the
    unit ball, its gradient the Euclidean one; see
    ``steppers.riemannian_adam_update``). Only meaningful for embeddings in
    the ball, hence not among the names of ``OPTIMIZERS``.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        betas: tuple[float, float] = ADAM_DEFAULTS["betas"],
        eps: float = ADAM_DEFAULTS["eps"],
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        """One update of every parameter from its ``.grad``."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    riemannian_adam_update(param, self.state[param], group)


# -- what ``optimizer`` and ``scheduler`` accept, declared here only ---------------------------

#: ``torch.optim`` optimisers accepted by name: those whose ``step()`` runs without a
#: closure on a dense tensor of coordinates (names missing from the installed PyTorch are
#: left out). The loop hands them the gradient and calls ``step()``.
_TORCH_OPTIMIZERS = (
    "ASGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SGD",
)
#: Every optimiser accepted by name (``optimizer='Adam'``), with its class.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    **{n: getattr(torch.optim, n) for n in _TORCH_OPTIMIZERS if hasattr(torch.optim, n)},
    "DeltaBarDelta": DeltaBarDelta,
}
#: ``torch.optim`` names refused, and why (the error message says so).
_REFUSED_OPTIMIZERS = {
    "LBFGS": (
        "its step() needs a closure that re-evaluates the loss, and the optimisation loop "
        "computes gradients only (phase by phase, some of them sampled)"
    ),
    "SparseAdam": "it takes sparse gradients only, and the embedding's are dense",
    "Muon": "it orthogonalises the update of a weight matrix, meaningless for coordinates",
    "Optimizer": "it is the abstract base class",
}
#: ``scheduler`` values handled by the loop itself: ``'constant'`` (no schedule, like
#: ``None``) and ``'linear'`` (linear decay to 0 over the schedule, UMAP's rule).
SCHEDULER_ALIASES = ("constant", "linear")
#: ``torch.optim.lr_scheduler`` schedulers accepted by name: built as
#: ``cls(optimizer, **scheduler_kwargs)`` and stepped without arguments every iteration.
_TORCH_SCHEDULERS = (
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "StepLR",
)
_lr_scheduler = torch.optim.lr_scheduler
#: Every scheduler accepted by name (``scheduler='StepLR'``), with its class.
SCHEDULERS: dict[str, type[_lr_scheduler.LRScheduler]] = {
    name: getattr(_lr_scheduler, name) for name in _TORCH_SCHEDULERS if hasattr(_lr_scheduler, name)
}
#: ``torch.optim.lr_scheduler`` names refused, and why.
_REFUSED_SCHEDULERS = {
    "ReduceLROnPlateau": "its step() needs the loss, and the loop computes gradients only",
    "SequentialLR": "it is built from scheduler instances, which need the loop's optimiser",
    "ChainedScheduler": "it is built from scheduler instances, which need the loop's optimiser",
    "LRScheduler": "it is the abstract base class",
    "_LRScheduler": "it is the abstract base class",
}


def _required_step_arguments(cls: type) -> list[str]:
    """Parameters of ``cls.step`` (after ``self``) that have no default."""
    try:
        params = list(inspect.signature(cls.step).parameters.values())[1:]
    except (TypeError, ValueError):  # no introspectable signature: trust the class
        return []
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in params if p.default is inspect.Parameter.empty and p.kind not in kinds]


def _unknown_name(
    param: str, value: str, accepted: Sequence[Any], refused: dict[str, str], other: str
) -> str:
    """The message for a name outside the declared list of ``param``.

    It follows the package's convention (``must be one of ...; got ...``), says why a
    known but refused name is refused, and suggests a name that differs only in case.
    """
    shown = ", ".join("None" if k is None else repr(k) for k in accepted)
    msg = f"`{param}` must be one of {shown} or {other}; got {value!r}"
    if value in refused:
        return f"{msg}, which is not supported: {refused[value]}."
    close = [k for k in accepted if isinstance(k, str) and k.lower() == value.lower()]
    return f"{msg} (did you mean {close[0]!r}?)." if close else f"{msg}."


def optimizer_class(optimizer: str | type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """The optimiser class of an ``optimizer`` parameter, checked against the contract.

    Accepted: a name of :data:`OPTIMIZERS`, or a subclass of ``torch.optim.Optimizer``
    whose ``step()`` runs without arguments (the loop never passes a closure). Nothing is
    instantiated (a first instantiation imports TorchDynamo, a slow import).

    Raises
    ------
    ValueError
        An unknown or refused name (``'LBFGS'``), the abstract base class, or a class whose
        ``step()`` needs a closure.
    TypeError
        Neither a string nor a class (e.g. an optimiser instance), or a class that is not
        a ``torch.optim.Optimizer``.
    """
    names = ", ".join(map(repr, OPTIMIZERS))
    fix = "or pass a torch.optim.Optimizer subclass whose step() needs no closure."
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            other = "a torch.optim.Optimizer subclass whose step() needs no closure"
            msg = _unknown_name(
                "optimizer", optimizer, list(OPTIMIZERS), _REFUSED_OPTIMIZERS, other
            )
            raise ValueError(msg)
        return OPTIMIZERS[optimizer]
    if not isinstance(optimizer, type):
        msg = (
            f"`optimizer`: got an instance of {type(optimizer).__name__}; it must be a name "
            f"({names}) or a torch.optim.Optimizer subclass: pass the class, not an "
            "instance, and its arguments in `optimizer_kwargs`."
        )
        raise TypeError(msg)
    name = optimizer.__name__
    if not issubclass(optimizer, torch.optim.Optimizer):
        msg = (
            f"`optimizer`: got the class {name}, which is not a torch.optim.Optimizer "
            f"subclass; it must be a name ({names}) or an Optimizer subclass."
        )
        raise TypeError(msg)
    if optimizer is torch.optim.Optimizer or optimizer.step is torch.optim.Optimizer.step:
        msg = f"`optimizer`={name} is abstract (it has no step()). Use one of {names}, {fix}"
        raise ValueError(msg)
    needed = _required_step_arguments(optimizer)
    if needed:
        msg = (
            f"`optimizer`={name} is not supported: its step() needs the argument "
            f"{', '.join(needed)} (a closure that re-evaluates the loss), and the "
            f"optimisation loop computes gradients only. Use one of {names}, {fix}"
        )
        raise ValueError(msg)
    return optimizer


def scheduler_class(scheduler: Any) -> type[_lr_scheduler.LRScheduler] | None:
    """The scheduler class of a ``scheduler`` parameter, checked against the contract.

    Accepted: ``None``, an alias of :data:`SCHEDULER_ALIASES` (both give ``None``: the
    loop sets the rate itself), a name of :data:`SCHEDULERS`, or a subclass of
    ``torch.optim.lr_scheduler.LRScheduler`` whose ``step()`` runs without arguments.

    Raises
    ------
    ValueError
        An unknown or refused name, the abstract base class, or a class whose ``step()``
        needs arguments (``ReduceLROnPlateau`` needs the loss).
    TypeError
        Neither ``None``, a string nor a class (e.g. a factory function or an instance),
        or a class that is not an ``LRScheduler``.
    """
    accepted = [*SCHEDULER_ALIASES, *SCHEDULERS]
    fix = "or pass an LRScheduler subclass (its arguments in `scheduler_kwargs`)."
    if scheduler is None or (isinstance(scheduler, str) and scheduler in SCHEDULER_ALIASES):
        return None
    if isinstance(scheduler, str):
        if scheduler not in SCHEDULERS:
            other = "an LRScheduler subclass (its arguments in `scheduler_kwargs`)"
            msg = _unknown_name(
                "scheduler", scheduler, [*accepted, None], _REFUSED_SCHEDULERS, other
            )
            raise ValueError(msg)
        return SCHEDULERS[scheduler]
    if not isinstance(scheduler, type) or not issubclass(scheduler, _lr_scheduler.LRScheduler):
        what = f"the class {scheduler.__name__}" if isinstance(scheduler, type) else repr(scheduler)
        msg = (
            f"`scheduler`: got {what}, which is not a torch.optim.lr_scheduler.LRScheduler "
            f"subclass; it must be None, a name ({', '.join(map(repr, accepted))}) or an "
            "LRScheduler subclass. Pass the class itself and its arguments in "
            "`scheduler_kwargs` (the loop builds it on its optimiser)."
        )
        raise TypeError(msg)
    name = scheduler.__name__
    base = _lr_scheduler.LRScheduler
    if scheduler.get_lr is base.get_lr and scheduler.step is base.step:
        msg = (
            f"`scheduler`={name} is abstract (it has no get_lr()). Use one of "
            f"{', '.join(map(repr, accepted))}, None, {fix}"
        )
        raise ValueError(msg)
    needed = _required_step_arguments(scheduler)
    if needed:
        msg = (
            f"`scheduler`={name} is not supported: its step() needs {', '.join(needed)}, and "
            f"the loop steps schedulers without arguments. Use one of "
            f"{', '.join(map(repr, accepted))}, None, {fix}"
        )
        raise ValueError(msg)
    return scheduler


def build_optimizer(
    name: str | type[torch.optim.Optimizer],
    param: torch.Tensor,
    lr: float,
    kwargs: dict[str, Any] | None,
) -> torch.optim.Optimizer:
    """Instantiate an optimiser given by name (``'SGD'``, ``'Adam'``, ``'DeltaBarDelta'`` ...)
    or class."""
    return optimizer_class(name)([param], lr=lr, **(kwargs or {}))


def is_plain_step(
    optimizer: str | type[torch.optim.Optimizer],
    optimizer_kwargs: dict[str, Any] | None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None,
    phases: Sequence[Phase],
) -> bool:
    """Whether the optimiser is plain gradient descent, ``z -= lr grad``: ``torch.optim.SGD``
    with no arguments, no scheduler and no phase momentum (the UMAP family).

    :func:`optimize` then takes that step itself, with the same arithmetic as SGD's, and
    never instantiates a ``torch.optim`` optimiser: the first one in a process imports
    TorchDynamo, a noticeable part of a whole UMAP fit on a small CPU.
    """
    plain_sgd = optimizer_class(optimizer) is torch.optim.SGD and not optimizer_kwargs
    no_momentum = all(not p.momentum for p in phases)
    return plain_sgd and scheduler is None and no_momentum


def _loop_optimizer(
    optimizer: str | type[torch.optim.Optimizer],
    optimizer_kwargs: dict[str, Any] | None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None,
    z: torch.Tensor,
    lr: float,
) -> Any:
    """The optimiser the loop steps: the package's own step for ``DeltaBarDelta`` and
    ``Adam`` (:mod:`torchdr_sc.steppers`, the same bits, no TorchDynamo import), else the
    ``torch.optim`` class itself (always with a ``scheduler``, which needs one)."""
    stepper = None
    if scheduler is None:
        stepper = builtin_stepper(optimizer_class(optimizer), optimizer_kwargs, z, lr)
    return stepper if stepper is not None else build_optimizer(optimizer, z, lr, optimizer_kwargs)


def _decayed_lr(base_lr: float, it_total: int, n_total: int) -> float:
    """Linear decay to 0 over the whole schedule (UMAP's rule)."""
    return base_lr * (1.0 - it_total / n_total)


def optimize(
    z0: torch.Tensor,
    gradient: GradientFn,
    phases: Sequence[Phase],
    *,
    lr: float,
    optimizer: str | type[torch.optim.Optimizer] = "SGD",
    optimizer_kwargs: dict[str, Any] | None = None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    min_grad_norm: float = 1e-7,
    check_interval: int = 50,
    sync: SyncFn | None = None,
    progress: Callable[[int], None] | None = None,
) -> OptimizeResult:
    """Run the phases on ``z0`` and return the final embedding.

    Parameters
    ----------
    z0
        Initial embedding ``(n, d)``; not modified.
    gradient
        ``gradient(z, global_iteration, phase) -> grad`` of this process's rows.
    phases
        The schedule.
    lr
        Base learning rate.
    optimizer, optimizer_kwargs
        A ``torch.optim`` optimiser (name or class) and its arguments.
    scheduler
        Optional factory ``scheduler(optimizer)`` of a torch LR scheduler, stepped every
        iteration (phases with ``lr_decay='linear'`` set the rate themselves instead).
    min_grad_norm
        Stop when the gradient norm falls below this (checked every ``check_interval``
        iterations in phases with ``check_convergence``).
    check_interval
        Iterations between gradient-norm checks (each one waits for the device).
    sync
        Sums gradients across processes (``None`` on one device).
    progress
        Called with ``1`` after every iteration (e.g. a tqdm bar's ``update``), so a
        progress display moves from the first iteration on.
    """
    start = time.perf_counter()
    z = z0.detach().clone()
    plain = is_plain_step(optimizer, optimizer_kwargs, scheduler, phases)
    opt = None if plain else _loop_optimizer(optimizer, optimizer_kwargs, scheduler, z, lr)
    sched = scheduler(opt) if scheduler is not None else None
    it_total, converged, norms, lr_now = 0, False, [], lr
    n_total = max(1, sum(p.n_iter for p in phases))
    for phase in phases:
        if opt is not None and phase.momentum is not None and "momentum" in opt.param_groups[0]:
            opt.param_groups[0]["momentum"] = phase.momentum
        if sched is None and lr_now != lr * phase.lr_scale:  # a user's scheduler rules alone
            lr_now = lr * phase.lr_scale
            if opt is not None:
                opt.param_groups[0]["lr"] = lr_now
        for _ in range(phase.n_iter):
            recheck_threads()  # every few seconds: follow competitors that come or go
            grad = gradient(z, it_total, phase)
            if sync is not None:
                grad = sync(grad)
            if phase.lr_decay != "none":
                lr_now = _decayed_lr(lr * phase.lr_scale, it_total, n_total)
                if opt is not None:
                    opt.param_groups[0]["lr"] = lr_now
            if opt is None:  # torch.optim.SGD's step without momentum, as it computes it
                z.add_(grad, alpha=-lr_now)
            else:
                z.grad = grad
                opt.step()
            if sched is not None and phase.lr_decay == "none":
                sched.step()
            it_total += 1
            if progress is not None:
                progress(1)
            if it_total % check_interval == 0:
                norm = float(torch.linalg.vector_norm(grad))
                norms.append(norm)
                logger.debug("iteration %d: gradient norm %.3e", it_total, norm)
                if phase.check_convergence and norm < min_grad_norm:
                    converged = True
                    break
        if converged:
            break
    z.grad = None
    return OptimizeResult(z.detach(), it_total, converged, time.perf_counter() - start, norms)
