"""Parameter and input validation with one error style (CONTRIBUTING.md, section 4).

Every check raises before any expensive work, names the parameter and, where there is
one, the fix. Messages read like::

    `perplexity` must be a float in (0, inf); got -1.
    `backend` must be one of 'auto', 'faiss', 'keops', 'torch'; got 'foo'.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def format_options(options: Iterable[Any]) -> str:
    """Return the options sorted and quoted, joined by commas."""
    return ", ".join(repr(o) for o in sorted(options, key=str))


def check_option(name: str, value: Any, options: Iterable[Any]) -> Any:
    """Check that ``value`` is one of ``options``.

    Parameters
    ----------
    name
        Parameter name used in the message.
    value
        Value given by the user.
    options
        Allowed values (``None`` allowed if it is listed).

    Returns
    -------
    The value, unchanged.
    """
    options = list(options)
    if value not in options:
        shown = format_options(o for o in options if o is not None)
        if None in options:
            shown += ", None"
        msg = f"`{name}` must be one of {shown}; got {value!r}."
        raise ValueError(msg)
    return value


def _interval_text(low: float | None, high: float | None, closed: str) -> str:
    left = "[" if closed in ("left", "both") else "("
    right = "]" if closed in ("right", "both") else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def check_number(
    name: str,
    value: Any,
    *,
    kind: type = float,
    low: float | None = None,
    high: float | None = None,
    closed: str = "neither",
) -> Any:
    """Check that ``value`` is a number of ``kind`` in an interval.

    Parameters
    ----------
    name
        Parameter name used in the message.
    value
        The value to check.
    kind
        ``int`` (integers only) or ``float`` (any real number).
    low, high
        Interval bounds (``None`` for unbounded).
    closed
        Which bounds are included: ``'neither'``, ``'left'``, ``'right'`` or ``'both'``.

    Returns
    -------
    The value as ``kind`` (a Python int or float).

    Raises
    ------
    TypeError
        ``value`` is not a real number, or ``kind`` is ``int`` and ``value`` is not an
        integer type: a whole float such as ``300.0`` is refused rather than converted,
        because the caller keeps the value it was given (torch and scipy then fail deep
        inside on the float).
    ValueError
        ``value`` is NaN or outside the interval.
    """
    interval = _interval_text(low, high, closed)
    kind_name = "an int" if kind is int else "a float"
    msg = f"`{name}` must be {kind_name} in {interval}; got {value!r}."
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(msg)
    if kind is int and not isinstance(value, numbers.Integral):
        raise TypeError(msg)
    value = kind(value)
    if math.isnan(value):
        raise ValueError(msg)
    ok_low = low is None or (value >= low if closed in ("left", "both") else value > low)
    ok_high = high is None or (value <= high if closed in ("right", "both") else value < high)
    if not (ok_low and ok_high):
        raise ValueError(msg)
    return value


def check_finite_rows(x: torch.Tensor | np.ndarray, name: str = "X") -> None:
    """Raise if ``x`` holds NaN or inf, naming how many rows hold them."""
    if isinstance(x, torch.Tensor):
        bad = ~torch.isfinite(x)
        if x.ndim > 1:
            bad = bad.any(dim=1)
        n_bad = int(bad.sum())
    else:
        bad = ~np.isfinite(x)
        if bad.ndim > 1:
            bad = bad.any(axis=1)
        n_bad = int(bad.sum())
    if n_bad:
        msg = (
            f"`{name}` holds NaN or inf values in {n_bad} of {x.shape[0]} rows; "
            "remove or impute them first."
        )
        raise ValueError(msg)


def check_enough_samples(n_samples: int, needed: int, what: str) -> None:
    """Raise if there are not more than ``needed`` samples.

    Parameters
    ----------
    n_samples
        Number of samples in the data.
    needed
        The quantity that must be strictly smaller than ``n_samples``.
    what
        How to name ``needed`` in the message, e.g. ``'perplexity (30)'``.
    """
    if n_samples < 2:
        msg = f"At least 2 samples are needed for a neighbor embedding; got {n_samples}."
        raise ValueError(msg)
    if needed >= n_samples:
        msg = f"{what} must be smaller than the number of samples ({n_samples})."
        raise ValueError(msg)


def missing_dependency(backend: str, package: str, extra: str) -> ImportError:
    """Build the error raised when an optional backend package is not installed."""
    msg = (
        f"backend={backend!r} needs the {package} package: "
        f"pip install \"torchdr-sc[{extra}]\", or use backend='torch'."
    )
    return ImportError(msg)
