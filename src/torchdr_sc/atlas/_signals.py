"""Signals and process lifetimes of the ``torchdr-sc embed`` job.

- :func:`raise_on_signals`: SIGTERM and SIGINT raise :class:`Interrupted` in the main thread,
  so that ``finally`` blocks run (a partial output is removed) and the command ends with one
  line and the shell's status ``128 + signal``, as for an interrupt.
- :func:`die_with_parent`: the kernel sends this process a signal when its parent ends
  (Linux ``prctl(PR_SET_PDEATHSIG)``), so that no worker of a job outlives the launcher.

No heavy import: the launcher uses this module before it knows whether the job runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

#: Environment variable holding the launcher's PID (read by the torchrun wrapper).
LAUNCHER_PID = "TORCHDR_SC_LAUNCHER_PID"
#: Environment variable holding the torchrun wrapper's PID (read by the workers).
TORCHRUN_PID = "TORCHDR_SC_TORCHRUN_PID"

_PR_SET_PDEATHSIG = 1


class Interrupted(KeyboardInterrupt):
    """The job was stopped by SIGTERM or SIGINT (a KeyboardInterrupt: ``except Exception``
    clauses let it through).

    Attributes
    ----------
    signum
        The signal received.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        """``'SIGTERM'`` or ``'SIGINT'``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by the signal: ``128 + signum``."""
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def raise_on_signals(
    signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[None]:
    """Inside the block, the signals ``signums`` raise :class:`Interrupted`.

    The previous handlers are restored on exit. Outside the main thread (where Python
    cannot install handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def die_with_parent(signum: int = signal.SIGTERM, parent_env: str | None = None) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent ends.

    Parameters
    ----------
    signum
        The signal sent when the parent ends.
    parent_env
        Environment variable holding the PID the parent should have: if the parent has
        already changed (it ended before the request was made), exit at once.

    Returns
    -------
    bool
        Whether the request was made (Linux only; elsewhere nothing is done).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    expected = os.environ.get(parent_env or "")
    if done and expected and os.getppid() != int(expected):
        os._exit(128 + int(signum))  # the parent ended before the request: end now
    return done
