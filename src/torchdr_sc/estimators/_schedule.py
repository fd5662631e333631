"""Turning estimator parameters into the loop's phases, optimiser and scheduler."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..optimize import (
    DeltaBarDelta,
    GradientFn,
    OptimizeResult,
    Phase,
    SyncFn,
    optimize,
    optimizer_class,
    scheduler_class,
)
from ..progress import iterations


def exaggeration_phases(
    max_iter: int,
    coeff: float,
    n_early: int,
    *,
    momentum: tuple[float, float] | None,
    lr_decay: str = "none",
    main_lr_scale: float = 1.0,
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
    main_lr_scale
        Factor on the learning rate in the main phase (after exaggeration).
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
        phases.append(
            Phase(
                max_iter - n_early,
                momentum=m_late,
                lr_decay=lr_decay,
                lr_scale=main_lr_scale if n_early else 1.0,
            )
        )
    return phases


def scheduler_factory(
    scheduler: Any, kwargs: dict | None
) -> tuple[Callable[[torch.optim.Optimizer], Any] | None, str]:
    """Return ``(factory, lr_decay)`` for a ``scheduler`` parameter.

    ``None`` / ``'constant'``: no scheduler. ``'linear'``: linear decay to 0 (UMAP). A
    name of ``torchdr_sc.optimize.SCHEDULERS`` or an ``LRScheduler`` subclass
    (checked by :func:`~torchdr_sc.optimize.scheduler_class`) is built on the loop's
    optimiser with ``kwargs``.
    """
    cls = scheduler_class(scheduler)
    if cls is None:
        return None, "linear" if isinstance(scheduler, str) and scheduler == "linear" else "none"
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
    main_lr_scale: float = 1.0,
    max_step_norm: float | None = None,
) -> OptimizeResult:
    """Run the loop with the estimator's optimiser, scheduler and exaggeration phases.

    Parameters
    ----------
    est
        The estimator (its ``optimizer``, ``optimizer_kwargs``, ``scheduler``,
        ``scheduler_kwargs``, ``early_exaggeration_*``, ``min_grad_norm`` and
        ``check_interval`` are used; its ``n_threads_`` is set to the torch threads the loop
        starts with). The iterations are reported on the active
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
    main_lr_scale
        Factor on ``lr`` after the exaggeration phase (without a scheduler).
    max_step_norm
        Longest step of a point, for :class:`~torchdr_sc.optimize.DeltaBarDelta` with
        ``optimizer_kwargs='auto'`` (the user's own kwargs are used as given).
    """
    kwargs, phase_momenta = sgd_momentum_auto(est.optimizer, est.optimizer_kwargs, momenta)
    auto = est.optimizer_kwargs in ("auto", None)
    if max_step_norm is not None and auto and est.optimizer in ("DeltaBarDelta", DeltaBarDelta):
        kwargs["max_step_norm"] = max_step_norm
    factory, decay = scheduler_factory(est.scheduler, est.scheduler_kwargs)
    phases = exaggeration_phases(
        max_iter,
        est.early_exaggeration_coeff or 1.0,
        est.early_exaggeration_iter or 0,
        momentum=phase_momenta,
        lr_decay=decay,
        main_lr_scale=main_lr_scale,
    )
    est.n_threads_ = torch.get_num_threads()  # what the loop starts with, for the record
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


def check_optimization(est: Any) -> None:
    """Check an estimator's optimiser and scheduler parameters before any computation.

    ``optimizer`` and ``scheduler`` are checked against their contract
    (:func:`~torchdr_sc.optimize.optimizer_class`,
    :func:`~torchdr_sc.optimize.scheduler_class`). When the user chose arguments
    (a non-empty ``optimizer_kwargs`` dict) or a scheduler class, both are built once on a
    one-element tensor, so that a missing or wrong argument (``StepLR`` without
    ``step_size``, ``OneCycleLR`` without ``total_steps``, Adam with ``momentum``) fails
    here, with a message naming the parameter, instead of after the kNN search and the
    affinity. The default configurations build nothing (a first optimiser instantiation
    imports TorchDynamo, a cost plain-SGD fits never pay).

    Parameters
    ----------
    est
        The estimator (its ``optimizer``, ``optimizer_kwargs``, ``scheduler``,
        ``scheduler_kwargs`` and ``lr``).

    Raises
    ------
    ValueError, TypeError
        As :func:`~torchdr_sc.optimize.optimizer_class` and
        :func:`~torchdr_sc.optimize.scheduler_class`; ValueError for arguments the classes
        refuse, TypeError for kwargs that are not dicts.
    """
    opt_cls = optimizer_class(est.optimizer)
    sched_cls = scheduler_class(est.scheduler)
    opt_kwargs, _ = sgd_momentum_auto(est.optimizer, est.optimizer_kwargs, (0.5, 0.8))
    if "lr" in opt_kwargs:
        msg = "`optimizer_kwargs` must not hold 'lr'; set the estimator's `lr` instead."
        raise ValueError(msg)
    scheduler_kwargs = est.scheduler_kwargs
    if scheduler_kwargs is not None and not isinstance(scheduler_kwargs, dict):
        msg = f"`scheduler_kwargs` must be a dict or None; got {scheduler_kwargs!r}."
        raise TypeError(msg)
    user_chose = isinstance(est.optimizer_kwargs, dict) and bool(est.optimizer_kwargs)
    if not user_chose and sched_cls is None:
        return  # the 'auto' momentum is ours and fits SGD and DeltaBarDelta
    lr = 1.0 if isinstance(est.lr, str) else float(est.lr)
    probe = torch.zeros(1, requires_grad=True)
    try:
        opt = opt_cls([probe], lr=lr, **opt_kwargs)
    except (TypeError, ValueError) as exc:
        msg = (
            f"`optimizer_kwargs`={opt_kwargs!r} do not fit {opt_cls.__name__}: {exc}. "
            f"Its arguments: {_arguments(opt_cls)}; fix `optimizer_kwargs`."
        )
        raise ValueError(msg) from exc
    if sched_cls is None:
        return
    sched_kwargs = dict(scheduler_kwargs or {})
    try:
        sched_cls(opt, **sched_kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        msg = (
            f"`scheduler_kwargs`={sched_kwargs!r} do not fit {sched_cls.__name__}: {exc}. "
            f"Its arguments: {_arguments(sched_cls)}; pass them in `scheduler_kwargs`."
        )
        raise ValueError(msg) from exc


def _arguments(cls: type) -> str:
    """The constructor arguments of ``cls`` after its first one, for messages."""
    try:
        params = list(inspect.signature(cls).parameters.values())[1:]
    except (TypeError, ValueError):
        return "(not introspectable)"
    return ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in params
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    )
