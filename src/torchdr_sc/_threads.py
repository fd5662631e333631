"""CPU thread policy: use only the cores that other processes leave free.

torch's OpenMP intra-op threads wait on each other at the end of every parallel region. When
another process holds one of the cores, the thread scheduled behind it stalls every region and
a run with all cores' worth of threads becomes many times slower than one with a single thread
(the measurement is in ``benchmarks/README.md``, "Thread policy").

The policy, applied when the user made no explicit choice:

- *free cores* = usable cores (``os.sched_getaffinity``) minus the runnable tasks of other
  processes that compete with us, read from the instantaneous ``running`` count of
  ``/proc/loadavg`` (4th field, ``running/total``), sampled a few times in a few
  milliseconds (median), less our own running threads and less the running tasks that
  yield to us: those at a nice value :data:`YIELDING_NICE` or more above ours (the
  scheduler gives such a task under a tenth of a core against one of our threads) or in the
  ``SCHED_IDLE`` class. Those are found in ``/proc/<pid>/task/<tid>/stat`` only when the
  load shows other running tasks at all, so a quiet machine costs no scan;
- threads = ``max(1, min(torch's current setting, free cores))``: never more than before;
- left unchanged where it cannot be measured (no ``/proc/loadavg``, i.e. not Linux), where the
  process is pinned to a subset of the machine's cores (a system-wide count cannot say which
  cores are busy), where ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` is set, inside a block whose
  thread count was chosen explicitly (``n_jobs``), or when ``TORCHDR_SC_THREAD_POLICY=off``.

A reduction is logged at INFO level. Inside a block where the policy measured (not where it
was left unchanged, nor under an explicit ``n_jobs``), :func:`recheck_threads` measures
again, at most every :data:`RECHECK_SECONDS`, and moves the count between 1 and the setting
the block started from: a competitor that starts (or ends) during a long fit is followed
at the next stage or the next epochs (a count fixed at the start of a fit leaves it slower
than one that follows the competitor: ``benchmarks/README.md``, "Thread policy").
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import torch

from ._logging import get_logger

log = get_logger(__name__)

#: Environment variable that turns the policy off (``off``, ``0``, ``false``, ``no``).
POLICY_ENV = "TORCHDR_SC_THREAD_POLICY"
#: Environment variables through which a user fixes the thread count themselves.
USER_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_OFF_VALUES = frozenset({"off", "0", "false", "no"})
_LOADAVG = "/proc/loadavg"
_OWN_TASKS = "/proc/self/task"

#: True inside a block whose thread count is already decided (explicit ``n_jobs`` or an outer
#: policy block): nested blocks then leave it alone.
_DECIDED: ContextVar[bool] = ContextVar("torchdr_sc_threads_decided", default=False)
#: Least seconds between two measurements of :func:`recheck_threads` (each one samples the
#: load a few times, so it is not free).
RECHECK_SECONDS = 2.0
#: A running task whose nice value is this much above ours does not take a core from us.
YIELDING_NICE = 10
#: Linux's ``SCHED_IDLE`` scheduling class (``policy`` field of ``/proc/<pid>/stat``).
_SCHED_IDLE = 5


@dataclass
class _Measured:
    """A policy block that measured: the count it may not exceed and its last measurement."""

    ceiling: int
    checked_at: float


#: The innermost policy block that measured (``None`` elsewhere): what
#: :func:`recheck_threads` updates.
_MEASURED: ContextVar[_Measured | None] = ContextVar("torchdr_sc_threads_measured", default=None)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class ThreadChoice:
    """The outcome of the thread policy.

    Attributes
    ----------
    threads
        torch intra-op threads to use.
    current
        torch's setting before the decision.
    cores
        Usable cores (the process's CPU affinity).
    busy
        Cores estimated busy with other processes, ``None`` where not measured.
    reason
        Why: ``'contention'`` (reduced), ``'free'`` (measured, unchanged), ``'single'``
        (already one thread or one core), ``'unmeasurable'``, ``'cpu_subset'``,
        ``'environment'`` (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``), ``'disabled'``
        (``TORCHDR_SC_THREAD_POLICY=off``) or ``'decided'`` (inside an explicit block).
    """

    threads: int
    current: int
    cores: int
    busy: int | None
    reason: str

    @property
    def reduced(self) -> bool:
        """Whether the policy lowers the thread count."""
        return self.threads < self.current


def usable_cores() -> int:
    """Number of cores this process may run on (its CPU affinity; else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _read_runnable() -> int | None:
    """System-wide runnable tasks right now (``/proc/loadavg`` 4th field), ``None`` if absent."""
    try:
        with open(_LOADAVG) as fh:
            fields = fh.read().split()
        return int(fields[3].split("/", 1)[0])
    except (OSError, IndexError, ValueError):
        return None


def _own_running() -> int:
    """Threads of this process that are running or runnable (state ``R``); at least 1.

    Our own threads (the caller, OpenMP workers still spinning after a parallel region) are
    in the system-wide count too and must not be taken for other processes.
    """
    count = 0
    try:
        tids = os.listdir(_OWN_TASKS)
    except OSError:
        return 1
    for tid in tids:
        try:
            with open(f"{_OWN_TASKS}/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:  # the thread ended meanwhile
            continue
        state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]
        count += state == "R"
    return max(1, count)


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a ``/proc/.../stat`` file after the command name, or ``None``."""
    try:
        with open(path) as fh:
            stat = fh.read()
    except OSError:  # the task ended meanwhile
        return None
    return stat[stat.rfind(")") + 2 :].split()


def _yielding_running() -> int:
    """Running tasks of other processes that yield to ours (much nicer, or ``SCHED_IDLE``).

    Fields after the command name (``man 5 proc``): state is the 1st, nice the 17th, the
    scheduling policy the 39th.
    """
    own = _stat_fields("/proc/self/stat")
    own_nice = int(own[16]) if own else 0
    me = str(os.getpid())
    count = 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and p != me]
    except OSError:
        return 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            if not fields or fields[0] != "R" or len(fields) < 39:
                continue
            nicer = int(fields[16]) >= own_nice + YIELDING_NICE
            count += nicer or int(fields[38]) == _SCHED_IDLE
    return count


def busy_cores(samples: int = 5, interval: float = 0.005) -> int | None:
    """Estimate how many cores other processes keep busy right now.

    Parameters
    ----------
    samples
        Readings of the runnable count (the median is kept).
    interval
        Seconds between readings.

    Returns
    -------
    int or None
        Runnable tasks of other processes that compete with ours (median over the
        readings), ``None`` where the count cannot be read.
    """
    values: list[int] = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        runnable = _read_runnable()
        if runnable is None:
            return None
        others = max(0, runnable - _own_running())
        if others:  # someone else runs: leave out the tasks that yield to us
            others = max(0, others - _yielding_running())
        values.append(others)
    return round(statistics.median(values))


def _online_cores() -> int:
    return max(1, os.cpu_count() or 1)


def _policy_disabled() -> bool:
    return os.environ.get(POLICY_ENV, "").strip().lower() in _OFF_VALUES


def _user_thread_var() -> str | None:
    for name in USER_THREAD_VARS:
        if os.environ.get(name, "").strip():
            return name
    return None


def choose_threads() -> ThreadChoice:
    """Decide torch's intra-op thread count for a block with no explicit ``n_jobs``.

    ``max(1, min(torch.get_num_threads(), usable cores - cores busy with other processes))``,
    or torch's current setting where the policy does not apply (see the module docstring).

    Returns
    -------
    ThreadChoice
    """
    current = torch.get_num_threads()
    cores = usable_cores()

    def keep(reason: str, busy: int | None = None) -> ThreadChoice:
        return ThreadChoice(current, current, cores, busy, reason)

    if _DECIDED.get():
        return keep("decided")
    if _policy_disabled():
        return keep("disabled")
    if _user_thread_var() is not None:
        return keep("environment")
    if current <= 1 or cores <= 1:
        return keep("single")
    if cores < _online_cores():
        return keep("cpu_subset")
    busy = busy_cores()
    if busy is None:
        return keep("unmeasurable")
    threads = max(1, min(current, cores - busy))
    return ThreadChoice(
        threads, current, cores, busy, "contention" if threads < current else "free"
    )


def _log_choice(choice: ThreadChoice) -> None:
    if not choice.reduced:
        log.debug(f"torch threads: {choice.current} ({choice.reason})")
        return
    busy = min(choice.busy or 0, choice.cores)
    plural = "s" if choice.threads != 1 else ""
    log.info(
        f"{busy} of {choice.cores} cores busy with other processes: using {choice.threads} "
        f"torch thread{plural} (pass n_jobs or set OMP_NUM_THREADS to choose)"
    )


@contextlib.contextmanager
def decided_threads() -> Iterator[None]:
    """Mark the block's thread count as chosen, so that nested policy blocks keep it."""
    token = _DECIDED.set(True)
    try:
        yield
    finally:
        _DECIDED.reset(token)


@contextlib.contextmanager
def free_core_threads() -> Iterator[ThreadChoice]:
    """Run the block with torch threads limited to the cores other processes leave free.

    torch's setting is restored on exit, also when the block raises. Nested blocks (and
    blocks inside an explicit ``n_jobs`` choice, see :func:`decided_threads`) keep the
    outer decision and cost nothing.

    Yields
    ------
    ThreadChoice
        The decision taken.
    """
    choice = choose_threads()
    if choice.reason == "decided":
        yield choice
        return
    _log_choice(choice)
    before = torch.get_num_threads()
    if choice.threads != before:
        torch.set_num_threads(choice.threads)
    measured = None
    if choice.reason in ("contention", "free"):
        measured = _MEASURED.set(_Measured(choice.current, time.perf_counter()))
    try:
        with decided_threads():
            yield choice
    finally:
        if measured is not None:
            _MEASURED.reset(measured)
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch threads, which :func:`recheck_threads` keeps;
    torch's setting is restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    token = _MEASURED.set(None)
    try:
        yield
    finally:
        _MEASURED.reset(token)
        torch.set_num_threads(before)


def recheck_threads(min_interval: float | None = None) -> int | None:
    """Measure the free cores again inside a policy block, and follow them.

    Does nothing outside a block where :func:`free_core_threads` measured (explicit
    ``n_jobs``, ``OMP_NUM_THREADS``, the policy turned off ...) or within ``min_interval``
    seconds (default :data:`RECHECK_SECONDS`) of the block's last measurement, so that loops
    may call it every iteration. Otherwise sets torch's count to
    ``max(1, min(the block's starting setting, usable cores - busy cores))``, lower or higher
    than now; a change is logged at INFO level.

    Returns
    -------
    int or None
        The thread count after a measurement; ``None`` when nothing was measured.
    """
    state = _MEASURED.get()
    interval = RECHECK_SECONDS if min_interval is None else min_interval
    if state is None or time.perf_counter() - state.checked_at < interval:
        return None
    busy = busy_cores()
    state.checked_at = time.perf_counter()
    if busy is None:
        return None
    threads = max(1, min(state.ceiling, usable_cores() - busy))
    now = torch.get_num_threads()
    if threads != now:
        log.info(
            f"{min(busy, usable_cores())} of {usable_cores()} cores now busy with other "
            f"processes: {now} -> {threads} torch threads"
        )
        torch.set_num_threads(threads)
    return threads


def thread_policy(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``func`` inside :func:`free_core_threads`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with free_core_threads():
            return func(*args, **kwargs)

    return wrapper
