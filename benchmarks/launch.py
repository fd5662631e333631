"""Start one worker process per run and read back its result, wall time and peak memory.

Peak resident memory is the child's own ``ru_maxrss``, read with :func:`os.wait4` on that child
(not ``RUSAGE_CHILDREN``, which is a maximum over every child the harness has waited for).
A run that passes its time limit is killed with its whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Launched:
    """Outcome of one worker process.

    Attributes
    ----------
    returncode : int
        Exit code (negative: killed by that signal).
    wall_s : float
        Wall time of the whole process (start-up, imports, data loading, warm-up, fit, saving).
    peak_rss_mb : float
        Peak resident memory of the process, in MiB.
    timed_out : bool
        Killed for passing the time limit.
    stalled : bool
        Killed because no fit finished within ``fit_timeout`` seconds.
    result : dict or None
        The worker's JSON result, when it wrote one.
    log_tail : str
        The last lines of the worker's output.
    """

    returncode: int
    wall_s: float
    peak_rss_mb: float
    timed_out: bool
    result: dict | None
    log_tail: str
    stalled: bool = False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _hiwater_kb(pid: int) -> float:
    """Peak resident memory (``VmHWM``, kB) of a live process; 0 when unreadable.

    Read while the worker runs, because ``ru_maxrss`` from ``wait4`` is not the worker's own:
    Linux keeps the high-water mark across ``fork`` + ``exec``, so it starts at this harness's
    RSS at the time of the fork (2 GB once the reference neighbours of a large dataset are
    held here), whereas ``VmHWM`` belongs to the memory map the worker got at ``exec``.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def launch(
    spec: dict,
    run_dir: Path,
    run_id: str,
    *,
    python: str = sys.executable,
    timeout: float | None = None,
    fit_timeout: float | None = None,
    env: dict | None = None,
) -> Launched:
    """Run ``python -m benchmarks.worker`` on ``spec`` and wait for it.

    Parameters
    ----------
    spec : dict
        The run spec, without ``result_path`` (set here).
    run_dir : pathlib.Path
        Folder for the spec, result and log files of this run.
    run_id : str
        Stem of those files.
    python : str, default=sys.executable
        Interpreter of the worker (e.g. the TorchDR virtual environment's).
    timeout : float, optional
        Seconds after which the worker is killed.
    fit_timeout : float, optional
        Seconds after which the worker is killed if it has not finished a fit since it started
        or since its last finished fit (it rewrites its result file after each fit).
    env : dict, optional
        Extra environment variables for the worker.

    Returns
    -------
    Launched
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir / f"{run_id}.spec.json"
    result_path = run_dir / f"{run_id}.result.json"
    log_path = run_dir / f"{run_id}.log"
    result_path.unlink(missing_ok=True)
    spec = dict(spec, result_path=str(result_path))
    spec_path.write_text(json.dumps(spec, indent=1))

    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), child_env.get("PYTHONPATH", "")) if p
    )
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [python, "-m", "benchmarks.worker", str(spec_path)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
        )
        timed_out, stalled, peak_kb, last_fit = False, False, 0.0, time.time()
        while True:
            peak_kb = max(peak_kb, _hiwater_kb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if result_path.exists():
                last_fit = max(last_fit, result_path.stat().st_mtime)
            stalled = fit_timeout is not None and time.time() - last_fit > fit_timeout
            if stalled or (timeout is not None and time.perf_counter() - t0 > timeout):
                os.killpg(proc.pid, signal.SIGKILL)  # the worker's own process group
                _, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen

    result = None
    if result_path.exists():
        try:
            result = json.loads(result_path.read_text())
        except json.JSONDecodeError:
            result = None
    return Launched(
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss_mb=(peak_kb or usage.ru_maxrss) / 1024.0,
        timed_out=timed_out,
        result=result,
        log_tail=_tail(log_path),
        stalled=stalled and timed_out,
    )
