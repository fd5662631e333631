"""The atlas job: embed the cells of an ``.h5ad`` / ``.zarr`` file on one or ``N`` processes.

The job reads the input's skeleton, runs the ``tl`` function of the method (sharded across
the processes of a torchrun group when there is one; ``X`` itself is streamed from disk by
row chunks) and lets rank 0 write the input plus the results to a new file (the input is
only read). Its command line, ``torchdr-sc embed``, lives in :mod:`torchdr_sc.cli.embed`;
each torchrun worker runs ``python -m torchdr_sc.atlas.worker``.

- :class:`JobSpec`, :func:`check_spec`, :func:`run_job`: the job and its checks.
- :func:`inspect_input`, :func:`file_format`, :class:`InputError`: reading the input.
- :data:`METHODS`, :data:`SHARDED`: the methods and those that shard across processes.
"""

from ._io import InputError, InputInfo, file_format, inspect_input
from ._job import METHODS, SHARDED, JobSpec, check_spec, fail, resolve_use_rep, run_job

__all__ = [
    "METHODS",
    "SHARDED",
    "InputError",
    "InputInfo",
    "JobSpec",
    "check_spec",
    "fail",
    "file_format",
    "inspect_input",
    "resolve_use_rep",
    "run_job",
]
