"""The atlas job: embed the cells of an ``.h5ad`` / ``.zarr`` file on one or ``N`` processes.

The job reads the input's skeleton, runs the ``tl`` function of the method (sharded across
the processes of a torchrun group when there is one; ``X`` itself is streamed from disk by
row chunks) and lets rank 0 write the input plus the results to a new file (the input is
only read). Its command line, ``torchdr-sc embed``, lives in :mod:`torchdr_sc.cli.embed`;
each torchrun worker runs ``python -m torchdr_sc.atlas.worker``.

- :class:`JobSpec`, :func:`check_spec`, :func:`run_job`: the job and its checks.
- :func:`inspect_input`, :func:`file_format`, :class:`InputError`: reading the input.
- :func:`launch`: the job on several torchrun processes (no orphaned worker, output moved
  into place only when every process succeeded); :func:`raise_on_signals`,
  :class:`Interrupted`: SIGTERM / SIGINT as an exception, for the job in one process.
- :func:`check_free_space`, :func:`estimated_output_bytes`, :func:`reporting_write_errors`,
  :class:`OutputError`: room for the output checked before the work, write failures in one
  line (exit status 1).
- :data:`METHODS`, :data:`SHARDED`: the methods and those that shard across processes
  (:mod:`~torchdr_sc.atlas.methods`, plain data).

Only :data:`METHODS` and :data:`SHARDED` are imported with the package; the other names are
imported on first access (:pep:`562`), so that the command line builds its parsers without
loading torch, anndata or scanpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .methods import METHODS, SHARDED

if TYPE_CHECKING:
    from ._io import InputError, InputInfo, file_format, inspect_input
    from ._job import JobSpec, check_neighbors_key, check_spec, fail, resolve_use_rep, run_job
    from ._launch import launch
    from ._signals import Interrupted, raise_on_signals
    from ._space import (
        OutputError,
        check_free_space,
        estimated_output_bytes,
        reporting_write_errors,
    )

#: Name -> the module of this package that defines it (imported on first access).
_LAZY: dict[str, str] = {
    **dict.fromkeys(("InputError", "InputInfo", "file_format", "inspect_input"), "._io"),
    **dict.fromkeys(
        ("JobSpec", "check_neighbors_key", "check_spec", "fail", "resolve_use_rep", "run_job"),
        "._job",
    ),
    "launch": "._launch",
    **dict.fromkeys(("Interrupted", "raise_on_signals"), "._signals"),
    **dict.fromkeys(
        ("OutputError", "check_free_space", "estimated_output_bytes", "reporting_write_errors"),
        "._space",
    ),
}

__all__ = [
    "METHODS",
    "SHARDED",
    "InputError",
    "InputInfo",
    "Interrupted",
    "JobSpec",
    "OutputError",
    "check_free_space",
    "check_neighbors_key",
    "check_spec",
    "estimated_output_bytes",
    "fail",
    "file_format",
    "inspect_input",
    "launch",
    "raise_on_signals",
    "reporting_write_errors",
    "resolve_use_rep",
    "run_job",
]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module on first access (:pep:`562`)."""
    if name not in _LAZY:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The package's names, loaded or not."""
    return sorted({*globals(), *__all__})
