"""Turning estimator parameters into the loop's phases, optimiser and scheduler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._validation import check_option
from ..optimize import DeltaBarDelta, GradientFn, OptimizeResult, Phase, SyncFn, optimize
from ..progress import iterations

SCHEDULER_ALIASES = ("constant", "linear")


def exaggeration_phases(
    max_iter: int,
    coeff: float,
    n_early: int,
    *,
    momentum: tuple[float, float] | None,
    lr_decay: str = "none",
) -> list[Phase]:
    """An early-exaggeration phase followed by the main phase.

    Parameters
    ----------
    max_iter
        Total iterations.
    coeff, n_early
        Exaggeration coefficient and length of the first phase (capped at ``max_iter``).
    momentum
        SGD momentum of the two phases, or ``None`` to leave the optimiser's own.
    lr_decay
        Passed to both phases.
    """
    n_early = min(n_early, max_iter) if coeff != 1.0 else 0
    m_early, m_late = momentum if momentum is not None else (None, None)
    phases = []
    if n_early:
        phases.append(
            Phase(
                n_early,
                exaggeration=coeff,
                momentum=m_early,
                lr_decay=lr_decay,
                check_convergence=False,
            )
        )
    if max_iter - n_early:
        phases.append(Phase(max_iter - n_early, momentum=m_late, lr_decay=lr_decay))
    return phases


def scheduler_factory(
    scheduler: Any, kwargs: dict | None
) -> tuple[Callable[[torch.optim.Optimizer], Any] | None, str]:
    """Return ``(factory, lr_decay)`` for a ``scheduler`` parameter.

    ``None`` / ``'constant'``: no scheduler. ``'linear'``: linear decay to 0 (UMAP). Any other
    string names a class of ``torch.optim.lr_scheduler``; a class is used as given.
    """
    if scheduler is None or scheduler == "constant":
        return None, "none"
    if scheduler == "linear":
        return None, "linear"
    if isinstance(scheduler, str):
        cls = getattr(torch.optim.lr_scheduler, scheduler, None)
        if not isinstance(cls, type):
            names = [
                k
                for k, v in vars(torch.optim.lr_scheduler).items()
                if isinstance(v, type) and k[0].isupper() and k != "LRScheduler"
            ]
            check_option("scheduler", scheduler, [*SCHEDULER_ALIASES, *names, None])
    else:
        cls = scheduler
    kw = dict(kwargs or {})
    return (lambda opt: cls(opt, **kw)), "none"


def sgd_momentum_auto(optimizer: Any, optimizer_kwargs: Any, pair: tuple[float, float]):
    """Return ``(optimizer_kwargs, phase_momenta)`` for the 'auto' rule.

    With ``optimizer='SGD'`` (or ``'DeltaBarDelta'``) and ``optimizer_kwargs='auto'`` the
    phases carry the momenta
    ``pair``; otherwise the user's kwargs are used as given and phases leave momentum alone.
    """
    if optimizer_kwargs == "auto" or optimizer_kwargs is None:
        if optimizer in ("SGD", "DeltaBarDelta") or optimizer in (torch.optim.SGD, DeltaBarDelta):
            return {"momentum": pair[0]} if pair[0] else {}, pair
        return {}, None
    if not isinstance(optimizer_kwargs, dict):
        msg = f"`optimizer_kwargs` must be a dict, 'auto' or None; got {optimizer_kwargs!r}."
        raise TypeError(msg)
    return dict(optimizer_kwargs), None


def run_schedule(
    est: Any,
    z0: torch.Tensor,
    gradient: GradientFn,
    *,
    max_iter: int,
    momenta: tuple[float, float],
    lr: float,
    sync: SyncFn | None = None,
) -> OptimizeResult:
    """Run the loop with the estimator's optimiser, scheduler and exaggeration phases.

    Parameters
    ----------
    est
        The estimator (its ``optimizer``, ``optimizer_kwargs``, ``scheduler``,
        ``scheduler_kwargs``, ``early_exaggeration_*``, ``min_grad_norm`` and
        ``check_interval`` are used). The iterations are reported on the active
        :class:`~torchdr_sc.progress.Progress`, if any (the estimator's ``progress_bar``).
    z0, gradient
        Initial embedding and gradient function of the loop.
    max_iter
        Total iterations.
    momenta
        SGD momenta of the exaggeration and main phases for ``optimizer_kwargs='auto'``.
    lr
        Learning rate.
    sync
        Gradient all-reduce under ``torchrun``.
    """
    kwargs, phase_momenta = sgd_momentum_auto(est.optimizer, est.optimizer_kwargs, momenta)
    factory, decay = scheduler_factory(est.scheduler, est.scheduler_kwargs)
    phases = exaggeration_phases(
        max_iter,
        est.early_exaggeration_coeff or 1.0,
        est.early_exaggeration_iter or 0,
        momentum=phase_momenta,
        lr_decay=decay,
    )
    return optimize(
        z0,
        gradient,
        phases,
        lr=lr,
        optimizer=est.optimizer,
        optimizer_kwargs=kwargs,
        scheduler=factory,
        min_grad_norm=est.min_grad_norm,
        check_interval=est.check_interval,
        sync=sync,
        progress=iterations(max_iter, unit=est._iteration_unit),
    )
