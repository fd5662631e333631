"""The launcher of a ``torchdr-sc embed`` job on several processes.

It starts ``torchrun`` (through :mod:`torchdr_sc.atlas.torchrun`, which ends with the
launcher) in its own session, forwards SIGTERM / SIGINT to it (torchrun then stops the
workers), and moves rank 0's staged output into place only once torchrun has exited
successfully, that is once every worker has. A failure or an interrupt leaves no output
and no process behind; the final line names the rank that failed first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ._io import InputError, commit_staged, remove_path, staging_path
from ._reports import first_failure
from ._signals import LAUNCHER_PID, Interrupted

if TYPE_CHECKING:
    from ._job import JobSpec

#: The command that starts torchrun (its arguments follow).
TORCHRUN = [sys.executable, "-m", "torchdr_sc.atlas.torchrun"]
#: Seconds torchrun gets to stop its workers after a forwarded signal before it is killed.
STOP_GRACE_S = 60.0


def torchrun_command(spec: JobSpec) -> list[str]:
    """The torchrun command line of ``spec`` (the job as JSON is the workers' argument)."""
    import json

    return [
        *TORCHRUN, "--standalone", "--nproc_per_node", str(spec.nproc),
        "--max-restarts", "0", "-m", "torchdr_sc.atlas.worker", json.dumps(spec.to_dict()),
    ]  # fmt: skip


def _environment(spec: JobSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // spec.nproc)))
    env[LAUNCHER_PID] = str(os.getpid())
    return env


def _run_torchrun(spec: JobSpec) -> tuple[int, int | None]:
    """Run torchrun to its end; ``(exit status, signal received or None)``.

    SIGTERM and SIGINT are forwarded to torchrun, which stops its workers; a second
    signal, or torchrun still running :data:`STOP_GRACE_S` seconds after the first, kills
    it (its workers then end too).
    """
    proc = subprocess.Popen(torchrun_command(spec), env=_environment(spec), start_new_session=True)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            proc.send_signal(signum)
        else:
            proc.kill()

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = proc.wait(timeout=STOP_GRACE_S if received else None)
                break
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code, (received[0] if received else None)


def launch(spec: JobSpec) -> int:
    """Run the job on ``spec.nproc`` torchrun workers; the exit status of the command.

    Returns
    -------
    int
        0 on success (the output is in place and the summary printed), 1 when a worker
        failed (the first failure is named), ``128 + signal`` when interrupted.
    """
    from ._job import SUMMARY_FILE, fail

    target = Path(spec.output)
    staging = staging_path(target)
    with tempfile.TemporaryDirectory(prefix="torchdr-sc-embed-") as folder:
        spec.error_dir, spec.staging = folder, str(staging)
        try:
            code, signum = _run_torchrun(spec)
            if signum is not None:
                stopped = Interrupted(signum)
                return fail(
                    f"interrupted by {stopped.name}; nothing was written.", stopped.exit_code
                )
            if code != 0:
                return fail(first_failure(folder, spec.nproc, code), 1)
            if not staging.exists():
                return fail("the workers exited without writing the output.", 1)
            try:
                commit_staged(staging, target, overwrite=spec.overwrite)
            except InputError as err:
                return fail(str(err), 1)
            summary = Path(folder, SUMMARY_FILE)
            if summary.exists():
                print(summary.read_text(), flush=True)
            return 0
        finally:
            remove_path(staging)
