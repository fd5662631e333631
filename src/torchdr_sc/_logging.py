"""Package logger: ``logging.getLogger('torchdr_sc')`` with a NullHandler.

The library never configures the root logger. ``verbose=True`` on an estimator attaches one
stream handler to the package logger (once) and lowers its level to INFO for that run.
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
