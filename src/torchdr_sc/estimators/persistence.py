"""Pickling fitted estimators: what travels, and on which device it comes back.

:class:`~torchdr_sc.estimators.Embedder` pickles (``pickle``, ``joblib``) through
:func:`portable_state` and :func:`restore_state`:

- every tensor travels on the CPU (also those inside a
  :class:`~torchdr_sc.affinity.SparseAffinity`, a :class:`~torchdr_sc.knn.KNNGraph`, dicts,
  lists and tuples), so that a file written on a GPU machine opens on any machine;
- fitted attributes that cannot or should not be pickled (generators, compiled functions and
  other callables, loggers, open files, locks) are left out;
- on loading, tensors go back to the fit's device (``device_used_``) when that device exists
  here, and stay on the CPU otherwise (``device_used_`` then says ``cpu``; logged).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
import types
from typing import Any

import torch

from .._logging import get_logger

__all__ = ["loading_device", "map_tensors", "portable_state", "restore_state"]

logger = get_logger(__name__)

_TRANSIENT_TYPES: tuple[type, ...] = (
    torch.Generator,
    types.GeneratorType,
    io.IOBase,
    logging.Logger,
    type(threading.Lock()),
)


def map_tensors(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor it holds moved to ``device`` (containers rebuilt)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device)
    if isinstance(value, torch.device):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: map_tensors(getattr(value, f.name), device)
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {k: map_tensors(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(map_tensors(v, device) for v in value)
    return value


def _transient(name: str, value: Any) -> bool:
    """Whether a fitted or private attribute is left out of the pickle."""
    if not (name.endswith("_") or name.startswith("_")):
        return False  # a constructor parameter: always kept
    if isinstance(value, _TRANSIENT_TYPES):
        return True
    return callable(value) and not isinstance(value, type)


def portable_state(state: dict[str, Any]) -> dict[str, Any]:
    """The state to pickle: tensors on the CPU, transient attributes left out."""
    cpu = torch.device("cpu")
    return {k: map_tensors(v, cpu) for k, v in state.items() if not _transient(k, v)}


def loading_device(device: Any) -> torch.device:
    """Where a fit made on ``device`` is loaded: there if it exists here, else the CPU."""
    if device is None:
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        index = 0 if device.index is None else device.index
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            return torch.device("cpu")
    elif device.type != "cpu":
        available = getattr(getattr(torch, device.type, None), "is_available", None)
        if available is None or not available():
            return torch.device("cpu")
    return device


def restore_state(state: dict[str, Any]) -> dict[str, Any]:
    """The unpickled state with tensors on the loading device (see :func:`loading_device`)."""
    fitted_on = state.get("device_used_")
    target = loading_device(fitted_on)
    if fitted_on is not None and torch.device(fitted_on) != target:
        logger.info(
            "estimator fitted on %s: loaded on %s (%s unavailable)", fitted_on, target, fitted_on
        )
        state = {**state, "device_used_": target}
    if target.type == "cpu":
        return state  # portable_state already put every tensor there
    return {k: map_tensors(v, target) for k, v in state.items()}
