"""Entry point of the ``torchrun`` workers of ``torchdr-sc embed``.

``python -m torch.distributed.run --nproc_per_node N -m torchdr_sc.atlas.worker SPEC``
where ``SPEC`` is the job as JSON (:class:`~torchdr_sc.atlas._job.JobSpec`). Each worker
starts the process group (gloo on CPU, NCCL on CUDA), runs its part of the job and exits.
A worker that fails writes ``rank R of W failed: <error>`` to the job's error folder (read
by the launcher) and on stderr, and exits at once with status 1: torchrun then stops the
other workers, so a failure never leaves the job waiting.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker; returns 0 (a failure ends the process with status 1)."""
    from ..distributed import current_rank, failure_message, init_from_env
    from ._job import JobSpec, run_job

    argv = sys.argv[1:] if argv is None else list(argv)
    spec = JobSpec(**json.loads(argv[0]))
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    try:
        init_from_env(spec.device, timeout_s=spec.timeout)
        run_job(spec)
        torch.distributed.destroy_process_group()
    except BaseException as err:
        message = failure_message(err, current_rank())
        if spec.verbose:
            traceback.print_exc(file=sys.stderr)
        if spec.error_dir:
            Path(spec.error_dir, f"rank{current_rank()}.txt").write_text(message)
        print(f"torchdr-sc embed: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
