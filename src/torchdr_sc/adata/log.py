"""scanpy-style logging for the AnnData layer.

When scanpy is importable, messages go through ``scanpy.logging`` so that they honour
``sc.settings.verbosity`` and look like scanpy's own (``computing UMAP`` ... ``finished
(0:00:02)`` followed, at verbosity >= 3, by what was added). Without scanpy they go to the
package logger ``torchdr_sc.tl`` in the same format. Only rank 0 of a distributed run logs.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..distributed import is_rank_zero

try:  # scanpy is optional for the layer, required for its plotting story
    import scanpy.logging as _logg
    from scanpy import settings as _settings
except ImportError:  # pragma: no cover - scanpy is installed in the test environment
    _logg = None
    _settings = None

_fallback = logging.getLogger("torchdr_sc.tl")

#: scanpy's ``Verbosity`` levels.
ERROR, WARNING, INFO, HINT, DEBUG = 0, 1, 2, 3, 4


def verbosity() -> int:
    """Current verbosity as scanpy's integer level (0 error ... 4 debug)."""
    if _settings is not None:
        return int(_settings.verbosity)
    level = _fallback.getEffectiveLevel()
    if level <= logging.DEBUG:
        return DEBUG
    return INFO if level <= logging.INFO else WARNING


def _elapsed(start: datetime) -> str:
    seconds = int((datetime.now() - start).total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _emit(level: str, msg: str, time: datetime | None, deep: str | None) -> datetime:
    now = datetime.now()
    if not is_rank_zero():
        return now
    if _logg is not None:
        kwargs: dict[str, Any] = {"time": time, "deep": deep}
        if level == "warning":
            kwargs = {"time": time}
        return getattr(_logg, level)(msg, **kwargs)
    text = msg
    if time is not None:
        text += f" ({_elapsed(time)})"
    if deep is not None and verbosity() >= HINT:
        text += f": {deep}"
    numeric = {"warning": logging.WARNING, "info": logging.INFO, "hint": logging.INFO}
    _fallback.log(numeric.get(level, logging.DEBUG), text)
    return now


def info(msg: str, *, time: datetime | None = None, deep: str | None = None) -> datetime:
    """Log at info level; return the current time (pass it as ``time`` to report a duration).

    Parameters
    ----------
    msg
        The message, e.g. ``'computing UMAP'``.
    time
        Start time: appends the elapsed time, as in ``finished (0:00:02)``.
    deep
        Detail shown only at higher verbosity (scanpy shows it at ``verbosity >= 3``).
    """
    return _emit("info", msg, time, deep)


def hint(msg: str, *, time: datetime | None = None, deep: str | None = None) -> datetime:
    """Log at scanpy's hint level (between info and debug)."""
    return _emit("hint", msg, time, deep)


def debug(msg: str, *, time: datetime | None = None, deep: str | None = None) -> datetime:
    """Log at debug level."""
    return _emit("debug", msg, time, deep)


def warning(msg: str) -> datetime:
    """Log a warning (shown at the default scanpy verbosity)."""
    return _emit("warning", msg, None, None)
