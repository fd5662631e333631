"""Package logger: ``logging.getLogger('torchdr_sc')`` with a NullHandler.

The library never configures the root logger. ``verbose=True`` on an estimator attaches one
stream handler to the package logger (once) and lowers its level to INFO for that run.
:func:`notice` is for the few things a user must see at default verbosity (a one-time
kernel build that takes a minute, a compiler that is missing): logged as a warning, and
written to stderr as well when nothing would show the log.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

logger = logging.getLogger("torchdr_sc")
logger.addHandler(logging.NullHandler())

_HANDLER_NAME = "torchdr_sc.verbose"


def get_logger(name: str) -> logging.Logger:
    """Child logger of the package logger, e.g. ``get_logger(__name__)``."""
    return logging.getLogger(name)


def _shown(log: logging.Logger) -> bool:
    """Whether a WARNING of ``log`` reaches a handler that writes it somewhere (the package's
    NullHandler does not count)."""
    current: logging.Logger | None = log
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def notice(log: logging.Logger, message: str, *args: object) -> None:
    """Log ``message % args`` as a warning and, when logging is not configured (so that the
    warning would reach no one), also write it to stderr as ``[torchdr_sc] ...``.

    Parameters
    ----------
    log : logging.Logger
        A logger of the package (``get_logger(__name__)``).
    message : str
        A %-format string, as for :meth:`logging.Logger.warning`.
    *args
        Its arguments.
    """
    log.warning(message, *args)
    if log.isEnabledFor(logging.WARNING) and not _shown(log):
        sys.stderr.write(f"[torchdr_sc] {message % args if args else message}\n")
        sys.stderr.flush()


def _ensure_handler() -> None:
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("[torchdr_sc] %(message)s"))
    logger.addHandler(handler)


@contextlib.contextmanager
def verbosity(verbose: bool) -> Iterator[None]:
    """Within the block, show INFO messages of the package on stderr if ``verbose``."""
    if not verbose:
        yield
        return
    _ensure_handler()
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(old)
