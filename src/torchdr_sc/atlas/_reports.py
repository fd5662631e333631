"""What each worker of a ``torchdr-sc embed`` job reports when it fails, and which failure
the launcher names.

A worker that fails writes ``rank<R>.json`` to the job's folder: its one-line message and
its kind: ``'error'`` (its own failure), ``'peer'`` (it lost a peer: a communication error
such as gloo's "Connection reset by peer", a consequence of another rank's end) or
``'signal'`` (torchrun stopped it after another rank failed). The launcher names the first
cause (:func:`first_failure`): the earliest ``'error'``; else the ranks that wrote nothing
(they died without a word: killed by a signal, out of memory); else the earliest report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

#: Messages of communication errors caused by the end of another rank (gloo, NCCL, store).
PEER_LOSS = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "remote worker crash",
    "remote process exited",
    "communicator was aborted",
    "socket timeout",
    "timed out",
    "connection refused",
)
#: Exception types of torch.distributed that report a lost peer.
PEER_ERRORS = ("DistBackendError", "DistNetworkError", "DistStoreError")


def failure_kind(err: BaseException) -> str:
    """``'signal'``, ``'peer'`` or ``'error'`` for the exception that ended a worker."""
    from ._signals import Interrupted

    if isinstance(err, Interrupted):
        return "signal"
    text = str(err).lower()
    if type(err).__name__ in PEER_ERRORS or any(marker in text for marker in PEER_LOSS):
        return "peer"
    return "error"


def write_report(folder: str | Path, rank: int, message: str, kind: str) -> None:
    """Write the report of ``rank`` to ``folder`` (one small JSON file)."""
    report = {"rank": rank, "message": message, "kind": kind, "time": time.time()}
    Path(folder, f"rank{rank}.json").write_text(json.dumps(report))


def read_reports(folder: str | Path) -> list[dict]:
    """The reports written to ``folder``, earliest first (unreadable files are skipped)."""
    reports = []
    for path in Path(folder).glob("rank*.json"):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(reports, key=lambda r: (r.get("time", 0.0), r.get("rank", 0)))


def first_failure(folder: str | Path, nproc: int, returncode: int) -> str:
    """The one line that names the rank that failed first, and why.

    Parameters
    ----------
    folder
        The job's folder, where the workers write their reports.
    nproc
        Number of workers.
    returncode
        torchrun's exit status (named when no worker reported anything).
    """
    reports = read_reports(folder)
    own = [r for r in reports if r.get("kind") == "error"]
    if own:
        return str(own[0]["message"])
    silent = sorted(set(range(nproc)) - {int(r.get("rank", -1)) for r in reports})
    if reports and silent:
        ranks = ", ".join(map(str, silent))
        label = "rank" if len(silent) == 1 else "ranks"
        then = str(reports[0]["message"])
        return (
            f"{label} {ranks} of {nproc} ended without reporting an error (killed by a "
            f"signal, or out of memory?); then {then}"
        )
    if reports:
        return str(reports[0]["message"])
    return (
        f"the worker processes failed (torchrun exit status {returncode}); see the messages above."
    )
