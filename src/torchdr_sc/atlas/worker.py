"""Entry point of the ``torchrun`` workers of ``torchdr-sc embed``.

``python -m torchdr_sc.atlas.torchrun --nproc_per_node N -m torchdr_sc.atlas.worker SPEC``
where ``SPEC`` is the job as JSON (:class:`~torchdr_sc.atlas._job.JobSpec`). Each worker
starts the process group (gloo on CPU, NCCL on CUDA), runs its part of the job and exits.

- A worker that fails writes ``rank R of W failed: <error>`` to the job's folder (a report
  the launcher reads, see :mod:`~torchdr_sc.atlas._reports`) and on stderr, and exits at
  once with status 1: torchrun then stops the other workers, so a failure never leaves the
  job waiting.
- SIGTERM or SIGINT (torchrun stopping the workers) ends a worker the same way, after
  removing rank 0's partial output.
- A worker ends when torchrun ends, however torchrun ends (the kernel sends it SIGTERM:
  Linux ``PR_SET_PDEATHSIG``), so no worker outlives its job.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import torch

from ._signals import TORCHRUN_PID, die_with_parent, raise_on_signals


def _fail(err: BaseException, spec: Any) -> None:
    """Report the failure of this worker, remove rank 0's staged output, end the process."""
    from ..distributed import current_rank, failure_message
    from ._io import remove_path
    from ._reports import failure_kind, write_report

    rank = current_rank()
    message = failure_message(err, rank)
    if getattr(spec, "verbose", False):
        traceback.print_exc(file=sys.stderr)
    staging = getattr(spec, "staging", None)
    if staging and rank == 0:
        remove_path(staging)
    folder = getattr(spec, "error_dir", None)
    if folder:
        write_report(folder, rank, message, failure_kind(err))
    print(f"torchdr-sc embed: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker; returns 0 (a failure ends the process with status 1)."""
    die_with_parent(signal.SIGTERM, TORCHRUN_PID)
    from ..distributed import init_from_env
    from ._job import JobSpec, run_job

    argv = sys.argv[1:] if argv is None else list(argv)
    spec = JobSpec(**json.loads(argv[0]))
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    try:
        with raise_on_signals():  # torchrun stops its workers with SIGTERM or SIGINT
            init_from_env(spec.device, timeout_s=spec.timeout)
            run_job(spec)
            torch.distributed.destroy_process_group()
    except BaseException as err:
        _fail(err, spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
