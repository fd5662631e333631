"""CPU thread policy under contention (torchdr_sc._threads, _device.cpu_threads)."""

from __future__ import annotations

import logging

import pytest
import torch

from torchdr_sc import _threads
from torchdr_sc._device import cpu_threads

_REAL_READ_RUNNABLE = _threads._read_runnable


def _two_core_machine(monkeypatch) -> int:
    """2 cores, 2 torch threads, no user thread variables; returns torch's former setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    for name in (*_threads.USER_THREAD_VARS, _threads.POLICY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(_threads, "_online_cores", lambda: 2)
    return before


@pytest.fixture
def two_cores(monkeypatch):
    """A 2-core machine with a 2-thread torch, no user thread variables; returns a setter.

    ``set_others(k)`` makes the runnable-count reader report ``k`` tasks of other processes
    (plus our one running thread).
    """
    before = _two_core_machine(monkeypatch)
    monkeypatch.setattr(_threads, "_own_running", lambda: 1)
    monkeypatch.setattr(_threads, "_yielding_running", lambda: 0)
    monkeypatch.setattr(_threads.time, "sleep", lambda s: None)
    others = {"k": 0}
    monkeypatch.setattr(_threads, "_read_runnable", lambda: others["k"] + 1)

    def set_others(k: int) -> None:
        others["k"] = k

    yield set_others
    torch.set_num_threads(before)


def test_free_machine_keeps_threads(two_cores):
    two_cores(0)
    choice = _threads.choose_threads()
    assert (choice.threads, choice.busy, choice.reason) == (2, 0, "free")
    with _threads.free_core_threads():
        assert torch.get_num_threads() == 2


def test_one_busy_core_uses_one_thread(two_cores, caplog):
    two_cores(1)
    with caplog.at_level(logging.INFO, logger="torchdr_sc"):
        with _threads.free_core_threads() as choice:
            assert torch.get_num_threads() == 1
    assert (choice.threads, choice.busy, choice.reason) == (1, 1, "contention")
    assert torch.get_num_threads() == 2
    assert "1 of 2 cores busy with other processes: using 1 torch thread" in caplog.text


def test_all_cores_busy_keeps_one_thread(two_cores):
    two_cores(5)
    with _threads.free_core_threads() as choice:
        assert torch.get_num_threads() == 1
    assert choice.threads == 1


def test_never_raises_threads(two_cores):
    two_cores(0)
    torch.set_num_threads(1)
    with _threads.free_core_threads() as choice:
        assert torch.get_num_threads() == 1
    assert choice.reason == "single"


def test_median_of_samples(two_cores, monkeypatch):
    readings = iter([1, 2, 2, 1, 9])  # one spike: median of others (0, 1, 1, 0, 8) is 1
    monkeypatch.setattr(_threads, "_read_runnable", lambda: next(readings))
    assert _threads.busy_cores(samples=5) == 1


def test_own_threads_are_not_others(two_cores, monkeypatch):
    monkeypatch.setattr(_threads, "_read_runnable", lambda: 2)
    monkeypatch.setattr(_threads, "_own_running", lambda: 2)  # our spinning worker
    assert _threads.choose_threads().threads == 2


def _fail_inside(block) -> None:
    with block:
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")


def test_restored_on_exception(two_cores):
    two_cores(1)
    with pytest.raises(RuntimeError, match="boom"):
        _fail_inside(_threads.free_core_threads())
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"):
        _fail_inside(cpu_threads(None))
    assert torch.get_num_threads() == 2


def test_cpu_threads_none_applies_policy(two_cores):
    two_cores(1)
    with cpu_threads(None):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("name", _threads.USER_THREAD_VARS)
def test_user_thread_variable_respected(two_cores, monkeypatch, name):
    two_cores(1)
    monkeypatch.setenv(name, "2")
    with cpu_threads(None):
        assert torch.get_num_threads() == 2
    assert _threads.choose_threads().reason == "environment"


def test_policy_can_be_disabled(two_cores, monkeypatch):
    two_cores(1)
    monkeypatch.setenv(_threads.POLICY_ENV, "off")
    with _threads.free_core_threads() as choice:
        assert torch.get_num_threads() == 2
    assert choice.reason == "disabled"


def test_explicit_n_jobs_respected(two_cores):
    two_cores(1)
    with cpu_threads(2):
        assert torch.get_num_threads() == 2
        # the estimators' own policy block inside keeps the explicit choice
        with _threads.free_core_threads() as choice:
            assert torch.get_num_threads() == 2
        assert choice.reason == "decided"
    with cpu_threads(-1):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


def test_nested_policy_blocks_decide_once(two_cores, monkeypatch):
    two_cores(1)
    calls = []
    real = _threads.busy_cores
    monkeypatch.setattr(_threads, "busy_cores", lambda: calls.append(1) or real())
    with _threads.free_core_threads():
        with _threads.free_core_threads() as inner:
            assert torch.get_num_threads() == 1
    assert inner.reason == "decided"
    assert len(calls) == 1
    assert torch.get_num_threads() == 2


def test_decorator(two_cores):
    two_cores(1)

    @_threads.thread_policy
    def work(x: int) -> tuple[int, int]:
        return x, torch.get_num_threads()

    assert work(3) == (3, 1)
    assert torch.get_num_threads() == 2


def test_no_proc_loadavg_leaves_setting(two_cores, monkeypatch):
    monkeypatch.setattr(_threads, "_LOADAVG", "/nonexistent/loadavg")
    monkeypatch.setattr(_threads, "_read_runnable", _REAL_READ_RUNNABLE)
    assert _threads.busy_cores() is None
    with cpu_threads(None):
        assert torch.get_num_threads() == 2
    assert _threads.choose_threads().reason == "unmeasurable"


def test_cpu_subset_leaves_setting(two_cores, monkeypatch):
    two_cores(1)
    monkeypatch.setattr(_threads, "_online_cores", lambda: 64)
    assert _threads.choose_threads().reason == "cpu_subset"


def test_real_readers_are_sane():
    busy = _threads.busy_cores()
    assert busy is None or busy >= 0
    assert _threads._own_running() >= 1
    assert _threads.usable_cores() >= 1


def test_recheck_follows_a_competitor_that_comes_and_goes(two_cores, caplog):
    two_cores(0)
    with _threads.free_core_threads():
        assert torch.get_num_threads() == 2
        two_cores(1)  # a competitor starts during the fit
        assert _threads.recheck_threads(min_interval=3600) is None  # too soon: not measured
        assert torch.get_num_threads() == 2
        with caplog.at_level(logging.INFO, logger="torchdr_sc"):
            assert _threads.recheck_threads(min_interval=0) == 1
        assert torch.get_num_threads() == 1
        assert "2 -> 1 torch threads" in caplog.text
        two_cores(0)  # it ends: back to the block's starting setting, never above
        assert _threads.recheck_threads(min_interval=0) == 2
        torch.set_num_threads(2)
    assert torch.get_num_threads() == 2


def test_recheck_keeps_explicit_and_pinned_counts(two_cores):
    two_cores(1)
    assert _threads.recheck_threads(min_interval=0) is None  # outside any policy block
    with cpu_threads(2):  # explicit n_jobs
        assert _threads.recheck_threads(min_interval=0) is None
        assert torch.get_num_threads() == 2
    two_cores(0)
    with _threads.free_core_threads():
        with _threads.pinned_threads(1):  # e.g. a small epoch on one thread
            assert _threads.recheck_threads(min_interval=0) is None
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2


def test_recheck_during_a_fit_lowers_the_threads(two_cores, monkeypatch):
    """A competitor that starts after the kNN search: the optimisation runs on 1 thread."""
    import numpy as np

    import torchdr_sc as tdr
    from torchdr_sc import optimize
    from torchdr_sc.estimators import contrastive

    monkeypatch.setattr(contrastive, "SINGLE_THREAD_WORK", 0)  # not pinned to one thread
    two_cores(0)
    seen = []
    real_recheck = optimize.recheck_threads

    def spy():
        two_cores(1)
        seen.append(real_recheck(min_interval=0))
        return seen[-1]

    monkeypatch.setattr(optimize, "recheck_threads", spy)
    x = np.random.default_rng(0).normal(size=(200, 5)).astype("float32")
    tdr.LargeVis(max_iter=5, random_state=0, compile=False).fit_transform(x)
    assert seen == [1] * 5
    assert torch.get_num_threads() == 2


_SPIN = "import time\nend = time.time() + 30\nwhile time.time() < end:\n    pass\n"


def _competitor(niceness: int):
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(["nice", "-n", str(niceness), sys.executable, "-c", _SPIN])
    time.sleep(0.5)  # started and spinning
    return proc


@pytest.mark.parametrize(("niceness", "expected"), [(19, 2), (0, 1)])
def test_a_niced_competitor_leaves_the_threads_alone(monkeypatch, niceness, expected):
    """Real readings: a ``nice -n 19`` spinner yields its core to us, an ordinary one does not
    (the control). Needs an otherwise quiet machine, as the test suite is."""
    before = _two_core_machine(monkeypatch)
    proc = _competitor(niceness)
    try:
        choices = [_threads.choose_threads().threads for _ in range(3)]
    finally:
        proc.kill()
        proc.wait()
        torch.set_num_threads(before)
    assert max(set(choices), key=choices.count) == expected, choices
