"""``torchdr-sc embed`` under signals: no orphaned worker, the right rank named, no litter.

Items 10-12 of the reliability issue. Each test runs the command in new processes, as a
user would, and sends real signals: to the launcher's PID only (a ``kill PID``, or a
SIGKILL from an out-of-memory killer), to one worker, or to the process itself while it
writes its output. The processes of a job are found by the unique output path that every
one of them carries on its command line (``/proc/<pid>/cmdline``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ad = pytest.importorskip("anndata")
sc = pytest.importorskip("scanpy")

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")

#: A job far longer than the tests: it only ends when it is stopped.
ENDLESS = ["--max-iter", "1000000", "--device", "cpu"]
#: Bound on the time the processes of a stopped job may take to end.
BOUND_S = 30.0
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def pbmc_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "pbmc.h5ad"
    sc.datasets.pbmc68k_reduced().write_h5ad(path)
    return path


def job_processes(tag: str) -> dict[int, dict[str, str]]:
    """PID -> environment of every process whose command line holds ``tag``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
            if tag.encode() not in cmdline:
                continue
            raw = Path("/proc", entry, "environ").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile, or not ours
            continue
        env = dict(item.decode(errors="replace").partition("=")[::2] for item in raw if item)
        found[int(entry)] = env
    return found


def wait_until_gone(tag: str, bound: float = BOUND_S) -> dict[int, dict[str, str]]:
    """Wait until no process of the job is left (at most ``bound`` s); those left."""
    deadline = time.monotonic() + bound
    left = job_processes(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = job_processes(tag)
    return left


class Job:
    """``torchdr-sc embed`` started in a new process, its output lines collected."""

    def __init__(self, source: Path, target: Path, *extra: str) -> None:
        self.target = target
        self.tag = str(target)
        cmd = [sys.executable, "-m", "torchdr_sc.cli", "embed", str(source), "--out", self.tag]
        self.proc = subprocess.Popen(
            [*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(s, lines), daemon=True)
            for s, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        """Wait until ``text`` appears on stdout (the job has started its workers)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.out):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{text!r} never came:\n{''.join(self.out + self.err)}")
            time.sleep(0.1)

    def finish(self, timeout: float = BOUND_S) -> int:
        """The launcher's exit status (after its output is read)."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop_everything(self) -> None:
        """End whatever is left of the job (the test's own processes only)."""
        for pid in job_processes(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()


@pytest.fixture
def job_factory(tmp_path):
    jobs: list[Job] = []

    def start(source: Path, *extra: str) -> Job:
        folder = tmp_path / f"job{len(jobs)}"
        folder.mkdir()
        jobs.append(Job(source, folder / "o.h5ad", *extra))
        return jobs[-1]

    yield start
    for job in jobs:
        job.stop_everything()


# ---- 10. no orphaned workers ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signal_to_the_launcher_ends_the_whole_job(pbmc_file, job_factory, signum):
    job = job_factory(pbmc_file, "--nproc", "2", *ENDLESS)
    job.wait_for("UMAP of 700 cells")
    assert len(job_processes(job.tag)) == 4  # launcher, torchrun, 2 workers
    os.kill(job.proc.pid, signum)
    code = job.finish()
    assert wait_until_gone(job.tag) == {}  # the workers did not outlive the launcher
    time.sleep(1.0)
    assert os.listdir(job.target.parent) == []  # no output, no staged or partial file
    if signum != signal.SIGKILL:
        assert code == 128 + signum
        name = signal.Signals(signum).name
        assert job.err[-1].strip() == (
            f"torchdr-sc embed: error: interrupted by {name}; nothing was written."
        )


# ---- 11. the rank that died first is named ------------------------------------------------
@pytest.mark.slow
def test_a_killed_worker_is_named_not_the_rank_it_disconnected(pbmc_file, job_factory):
    job = job_factory(pbmc_file, "--nproc", "2", *ENDLESS)
    job.wait_for("UMAP of 700 cells")
    time.sleep(0.5)  # both ranks in the optimisation loop
    ranks = {env.get("RANK"): pid for pid, env in job_processes(job.tag).items()}
    os.kill(ranks["1"], signal.SIGKILL)
    assert job.finish() == 1
    assert re.match(
        r"torchdr-sc embed: error: rank 1 of 2 ended without reporting an error", job.err[-1]
    ), "".join(job.err[-5:])
    assert wait_until_gone(job.tag) == {}
    assert os.listdir(job.target.parent) == []


# ---- 12. an interrupt during the write leaves nothing -------------------------------------
INTERRUPT_DURING_WRITE = textwrap.dedent(
    """
    import os, signal, sys, time

    from torchdr_sc.atlas import _io

    copy = _io._copy_and_add

    def copy_then_signal(source, tmp, fmt, changes):
        copy(source, tmp, fmt, changes)  # the temporary output is there, complete or not
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        time.sleep(60)  # the signal lands here

    _io._copy_and_add = copy_then_signal
    from torchdr_sc.cli.main import main

    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_during_the_write_leaves_no_partial_file(pbmc_file, tmp_path, name):
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_DURING_WRITE)
    target = tmp_path / "out" / "o.h5ad"
    target.parent.mkdir()
    args = ["embed", str(pbmc_file), "--out", str(target), "--max-iter", "5", "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, str(script), name, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert os.listdir(target.parent) == []  # neither the output nor a hidden .tmp file
    assert done.returncode == 128 + getattr(signal, name)
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"torchdr-sc embed: error: interrupted by {name}; nothing was written."
    )
