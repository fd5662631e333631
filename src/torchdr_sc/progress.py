"""Feedback on long runs: a line on stderr per stage, a tqdm bar over iterations.

An estimator with ``progress_bar=True`` (on rank 0 only) makes a :class:`Progress` and
makes it the active one for the duration of its fit (:func:`reporting`). Every stage of
the pipeline then says when it starts and how long it took::

    UMAP: kNN search (70,000 cells, k=14, backend torch exact)...
    UMAP: kNN search done in <time>
    UMAP: input affinity (UMAPAffinity, n_neighbors=15)...
    UMAP: input affinity done in <time>
    UMAP: initialisation (spectral)...
    UMAP: initialisation done in <time>
    UMAP: optimisation (200 epochs)...
    UMAP: optimisation done in <time> (200 epochs, <rate> epochs/s)

and loops report their steps on a ``tqdm.auto.tqdm`` bar (a widget in a notebook,
a text bar in a terminal) that is updated every step, so its first update comes after
the first step rather than after a batch of them.

Code deep in the pipeline (the optimisation loop, the kNN search) does not need the
:class:`Progress` object passed down: :func:`stage` and :func:`iterations` reach the active
one and do nothing when there is none, at no cost. This module is pure Python; ``tqdm`` is
imported when a bar is first shown.

:func:`default_progress` is the rule, used by the AnnData layer, for showing progress when
the user did not say: in a notebook, or for a large run in a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, TextIO

#: Samples from which a run in a terminal shows progress by default (:func:`default_progress`).
#: From about this size a run on a small CPU takes more than a few seconds (the benchmarks'
#: size sweep) and silence starts to look like a hang; smaller runs keep a terminal quiet.
LARGE_RUN_SAMPLES = 10_000

UpdateFn = Callable[[int], Any]

_ACTIVE: ContextVar[Progress | None] = ContextVar("torchdr_sc_progress", default=None)


class Progress:
    """Progress of one fit: stage lines on stderr and bars over the steps of a stage.

    Parameters
    ----------
    label
        Prefix of every line and bar, e.g. the estimator's name ``'UMAP'``.
    stream
        Where the lines and text bars go; ``None``: ``sys.stderr`` at the time of writing.
    leave
        Keep a finished bar on screen. ``False`` (default): the bar disappears when its
        stage ends and the stage's last line records the steps done and their rate, so a
        notebook cell or a terminal keeps one line per stage.

    Examples
    --------
    >>> progress = Progress("UMAP")
    >>> with reporting(progress), progress.stage("optimisation", "200 epochs"):
    ...     update = progress.iterations(200, unit="epochs")
    ...     for _ in range(200):
    ...         update(1)
    """

    def __init__(self, label: str, *, stream: TextIO | None = None, leave: bool = False) -> None:
        self.label = label
        self.stream = stream
        self.leave = leave
        self._bars: list[Any] = []
        self._stage: str | None = None

    def write(self, text: str) -> None:
        """Write one line ``'<label>: <text>'`` now (flushed)."""
        print(f"{self.label}: {text}", file=self.stream or sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        """Report a stage: a line when it starts, its duration when it ends.

        Bars opened by :meth:`iterations` during the stage are closed when it ends, and
        the steps they counted are added to the closing line.

        Parameters
        ----------
        name
            What the stage does, e.g. ``'kNN search'``.
        detail
            Its size and settings, shown in parentheses on the first line.
        """
        self.write(f"{name} ({detail})..." if detail else f"{name}...")
        outer, outer_bars = self._stage, self._bars
        self._stage, self._bars = name, []
        t0 = time.perf_counter()
        try:
            yield
        except BaseException as err:
            self._close_bars()
            self.write(f"{name} stopped after {_duration(time.perf_counter() - t0)} ({err!r})")
            raise
        else:
            steps = self._close_bars()
            elapsed = time.perf_counter() - t0
            self.write(f"{name} done in {_duration(elapsed)}{_rate(steps, elapsed)}")
        finally:
            self._stage, self._bars = outer, outer_bars

    def iterations(
        self, total: int, *, unit: str = "iterations", desc: str | None = None
    ) -> UpdateFn:
        """A bar over ``total`` steps; returns its update function, ``update(k)``.

        ``update`` is cheap (tqdm redraws at most ten times a second), so a loop
        may call it every step. The bar is closed when the current stage ends.

        Parameters
        ----------
        total
            Number of steps expected (a loop that stops early leaves the bar short).
        unit
            Name of the steps, plural, e.g. ``'iterations'`` (``it`` on the bar),
            ``'epochs'``, ``'blocks'``.
        desc
            Text before the bar; default ``'<label>: <stage>'``.
        """
        from tqdm.auto import tqdm

        if desc is None:
            desc = f"{self.label}: {self._stage}" if self._stage else self.label
        bar = tqdm(
            total=total,
            desc=desc,
            unit="it" if unit == "iterations" else f" {unit}",
            leave=self.leave,
            file=self.stream,
            dynamic_ncols=True,
        )
        self._bars.append((bar, unit))
        return bar.update

    def _close_bars(self) -> list[tuple[int, str]]:
        """Close the stage's bars; ``(steps done, unit)`` of each."""
        done = [(int(bar.n), unit) for bar, unit in self._bars]
        for bar, _ in self._bars:
            bar.close()
        self._bars = []
        return done


@contextmanager
def reporting(progress: Progress | None) -> Iterator[Progress | None]:
    """Make ``progress`` the active reporter within the block (``None``: report nothing).

    ``None`` also silences the code inside, e.g. an estimator without a progress bar that
    is fitted inside the fit of one with a progress bar.
    """
    token = _ACTIVE.set(progress)
    try:
        yield progress
    finally:
        _ACTIVE.reset(token)


def active() -> Progress | None:
    """The active :class:`Progress`, or ``None`` when nothing is reported."""
    return _ACTIVE.get()


def stage(name: str, detail: str = "") -> AbstractContextManager[None]:
    """:meth:`Progress.stage` of the active reporter; a no-op without one."""
    progress = _ACTIVE.get()
    return nullcontext() if progress is None else progress.stage(name, detail)


def iterations(total: int, *, unit: str = "iterations", desc: str | None = None) -> UpdateFn | None:
    """:meth:`Progress.iterations` of the active reporter; ``None`` without one.

    A loop calls ``update(1)`` per step when it got a function, e.g.
    ``tick = iterations(n_blocks, unit="blocks")`` then ``if tick: tick(1)``.
    """
    progress = _ACTIVE.get()
    return None if progress is None else progress.iterations(total, unit=unit, desc=desc)


def in_notebook() -> bool:
    """Whether this process is a Jupyter (IPython kernel) process: Jupyter, VS Code, Colab.

    Looks only at modules already imported: never imports IPython.
    """
    if "ipykernel" not in sys.modules:
        return False
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    if shell is None:
        return False
    config = getattr(shell, "config", None)
    if config is not None and "IPKernelApp" in config:
        return True
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def default_progress(n_samples: int) -> bool:
    """Whether to show progress when the user did not say whether to.

    On when scanpy users expect feedback, off where it would flood a log:

    - in a notebook (an IPython kernel, :func:`in_notebook`): always;
    - elsewhere: when ``n_samples >= LARGE_RUN_SAMPLES`` (a run of more than a few seconds
      on a 2-core CPU, see :data:`LARGE_RUN_SAMPLES`) and stderr is a terminal, so CI
      logs, pipes and files stay quiet.

    Parameters
    ----------
    n_samples
        Number of cells to embed.
    """
    if in_notebook():
        return True
    return n_samples >= LARGE_RUN_SAMPLES and _stderr_is_terminal()


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _rate(steps: list[tuple[int, str]], elapsed: float) -> str:
    """`` (500 epochs, 96.2 epochs/s)`` for the first bar of a stage, else ``''``."""
    if not steps or elapsed <= 0:
        return ""
    n, unit = steps[0]
    return f" ({n:,} {unit}, {n / elapsed:.1f} {unit}/s)"
