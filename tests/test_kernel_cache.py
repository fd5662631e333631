"""The on-disk cache of compiled kernels: whose files are loaded, digests, the build lock,
temporaries, and where the cache is.

The kernels here are stand-ins (a few bytes written by a Python function), so that the rules of
the cache are tested without a C compiler; ``test_native_attraction.py`` and
``test_native_epoch.py`` build real kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from torchdr_sc.objective import kernel_cache

KEY = {"torch": "x", "source": "abc", "variant": 1}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "kernels"
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, str(folder))
    monkeypatch.setattr(kernel_cache, "_WARNED", set())
    monkeypatch.setattr(kernel_cache, "_PRIVATE", {})  # each test its own fallback folder
    return folder


class Builder:
    """Counts builds; each writes ``content`` and records the build environment."""

    def __init__(self, content: bytes = b"kernel v1"):
        self.content, self.calls, self.env = content, 0, {}

    def __call__(self, path: Path) -> None:
        self.calls += 1
        self.env = {
            "inductor": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
            "tmp": tempfile.gettempdir(),
        }
        path.write_bytes(self.content)


def _get(builder, key=KEY, name="k"):
    return kernel_cache.cached_kernel(name, key, builder, lambda p: p.read_bytes())


def _plant(folder: Path, content: bytes, key=KEY, name="k") -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{name}.so"
    path.write_bytes(content)
    digest = kernel_cache.file_digest(path)
    path.with_suffix(".json").write_text(json.dumps({"key": key, "sha256": digest}))
    return path


def test_built_once_then_loaded_with_its_record(cache):
    builder = Builder()
    assert _get(builder) == b"kernel v1"
    assert _get(builder) == b"kernel v1"
    assert builder.calls == 1
    record = json.loads((cache / "k.json").read_text())
    assert record["key"] == KEY
    assert record["sha256"] == kernel_cache.file_digest(cache / "k.so")
    assert oct((cache / "k.so").stat().st_mode & 0o777) == "0o644"
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    assert not list(cache.glob(f"{kernel_cache.BUILD_PREFIX}*"))  # no temporaries left


def test_the_build_runs_with_a_private_compile_cache_and_tmpdir(cache, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/shared-inductor")
    builder = Builder()
    _get(builder)
    assert builder.env["inductor"].startswith(str(cache / kernel_cache.BUILD_PREFIX))
    assert builder.env["tmp"].startswith(str(cache / kernel_cache.BUILD_PREFIX))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/tmp/shared-inductor"  # restored
    assert tempfile.gettempdir() != builder.env["tmp"]


def test_a_package_writable_by_others_is_not_loaded(cache):
    path = _plant(cache, b"planted code")
    path.chmod(0o666)
    builder = Builder()
    assert _get(builder) == b"kernel v1"
    assert builder.calls == 1


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_package_owned_by_another_user_is_not_loaded(cache):
    path = _plant(cache, b"planted code")
    os.chown(path, 12345, -1)
    os.chown(path.with_suffix(".json"), 12345, -1)
    builder = Builder()
    assert _get(builder) == b"kernel v1"
    assert builder.calls == 1


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_not_used(cache, caplog):
    _plant(cache, b"planted code")
    os.chown(cache, 12345, -1)
    builder = Builder()
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        assert _get(builder) == b"kernel v1"
    assert "owned by uid 12345" in caplog.text
    assert (cache / "k.so").read_bytes() == b"planted code"  # untouched, and not loaded


def test_a_folder_writable_by_others_is_left_alone_and_said_once(cache, caplog):
    cache.mkdir(mode=0o700)
    cache.chmod(0o777)
    builder = Builder()
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        assert _get(builder) == b"kernel v1"
        assert _get(builder, name="other") == b"kernel v1"
    assert builder.calls == 2
    assert not list(cache.iterdir())  # nothing written into the shared folder
    warnings = [r for r in caplog.records if "not using the kernel cache" in r.message]
    assert len(warnings) == 1
    assert "writable by group or others" in warnings[0].getMessage()
    assert kernel_cache.CACHE_DIR_ENV in warnings[0].getMessage()


def test_a_read_only_cache_builds_privately_and_says_so_once(cache, monkeypatch, caplog):
    cache.mkdir(mode=0o700)
    real_access = os.access
    monkeypatch.setattr(
        kernel_cache.os, "access", lambda p, m: False if Path(p) == cache else real_access(p, m)
    )
    builder = Builder()
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        for _ in range(3):
            assert _get(builder) == b"kernel v1"
    assert sum("it is not writable" in r.getMessage() for r in caplog.records) == 1
    assert not list(cache.iterdir())


def test_a_tampered_package_is_rebuilt(cache):
    builder = Builder()
    _get(builder)
    (cache / "k.so").write_bytes(b"kernel v1, changed on disk")
    assert _get(builder) == b"kernel v1"
    assert builder.calls == 2


def test_another_variant_under_the_same_name_is_rebuilt(cache):
    _plant(cache, b"a kernel of another variant", key={**KEY, "variant": 2})
    builder = Builder()
    assert _get(builder) == b"kernel v1"
    assert builder.calls == 1


def test_a_package_without_record_is_rebuilt(cache):
    cache.mkdir(mode=0o700)
    (cache / "k.so").write_bytes(b"no record")
    builder = Builder()
    assert _get(builder) == b"kernel v1"


def test_a_failed_build_leaves_no_temporaries(cache):
    def broken(path):
        path.write_bytes(b"half")
        (Path(tempfile.gettempdir()) / "aotinductor_scratch").mkdir()
        raise RuntimeError("compiler died")

    with pytest.raises(RuntimeError, match="compiler died"):
        _get(broken)
    assert sorted(p.name for p in cache.iterdir()) == ["k.failed.json", "k.lock"]


def test_leftovers_of_a_killed_build_are_removed_at_the_next_build(cache):
    cache.mkdir(mode=0o700)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    stale_file = cache / f"{kernel_cache.BUILD_PREFIX}{pid}-abc.so"
    stale_dir = cache / f"{kernel_cache.BUILD_PREFIX}{pid}-xyz"
    stale_file.write_bytes(b"half a package")
    (stale_dir / "aotinductor_1").mkdir(parents=True)
    _get(Builder())
    assert not stale_file.exists()
    assert not stale_dir.exists()


_CONCURRENT = """
import sys, time
from pathlib import Path
from torchdr_sc.objective import kernel_cache

log = Path(sys.argv[1])

def build(path):
    with open(log, "a") as fh:
        fh.write("build\\n")
    time.sleep(2.0)
    path.write_bytes(b"built once")

print(kernel_cache.cached_kernel("k", {"v": 1}, build, lambda p: p.read_bytes()).decode())
"""


def test_concurrent_cold_processes_build_once(cache, tmp_path):
    log = tmp_path / "builds.log"
    env = dict(os.environ, **{kernel_cache.CACHE_DIR_ENV: str(cache)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, str(log)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outputs == ["built once"] * 3
    assert log.read_text().count("build") == 1


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel_cache, "_RESOLVED", {})
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, "~/my-kernels")
    assert kernel_cache.cache_dir() == Path(os.path.expanduser("~")) / "my-kernels"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, "relative/kernels")
    resolved = kernel_cache.cache_dir()
    assert resolved == tmp_path / "relative" / "kernels"
    monkeypatch.chdir(tmp_path.parent)
    assert kernel_cache.cache_dir() == resolved  # a later chdir does not move the cache
    monkeypatch.delenv(kernel_cache.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernel_cache.cache_dir() == tmp_path / "xdg" / "torchdr_sc" / "kernels"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative-xdg")  # not absolute: ignored (XDG spec)
    home = Path(os.path.expanduser("~"))
    assert kernel_cache.cache_dir() == home / ".cache" / "torchdr_sc" / "kernels"


def test_cpu_signature_names_the_instruction_set():
    sig = kernel_cache.cpu_signature()
    if Path("/proc/cpuinfo").exists():
        assert "[" in sig  # the flags
        assert any(flag in sig for flag in ("sse2", "neon", "asimd", "fp"))


def test_a_build_is_announced_at_default_verbosity(cache, monkeypatch, capsys):
    """Logging unconfigured (pytest's own handlers aside): the one-time build is written to
    stderr, with where it is cached; a load from the cache says nothing."""
    from torchdr_sc import _logging

    monkeypatch.setattr(_logging, "_shown", lambda log: False)
    _get(Builder())
    err = capsys.readouterr().err
    assert "[torchdr_sc] compiling the kernel once for this machine" in err
    assert str(cache) in err
    _get(Builder())
    assert capsys.readouterr().err == ""


def test_notice_is_written_once_whether_or_not_logging_is_configured(capsys):
    import logging

    from torchdr_sc._logging import notice

    bare = logging.Logger("bare")  # no parent: as an application that set up no logging
    bare.addHandler(logging.NullHandler())
    notice(bare, "the %s failed", "build")
    assert capsys.readouterr().err == "[torchdr_sc] the build failed\n"
    configured = logging.Logger("configured")
    configured.addHandler(logging.StreamHandler())  # writes to stderr itself
    notice(configured, "the %s failed", "build")
    assert capsys.readouterr().err == "the build failed\n"  # once, by the user's handler


def test_a_failed_build_is_remembered_not_retried_by_every_process(cache):
    calls = []

    def broken(path):
        calls.append(path)
        raise RuntimeError("no C++ compiler found\nlong traceback")

    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        _get(broken)
    record = cache / "k.failed.json"
    assert json.loads(record.read_text())["reason"] == "RuntimeError: no C++ compiler found"
    with pytest.raises(kernel_cache.KernelBuildError, match=r"did not build.*Delete .*k\.failed"):
        _get(broken)  # as a new process would: the record, not a second attempt
    assert len(calls) == 1
    assert _get(Builder(), key={**KEY, "torch": "y"}) == b"kernel v1"  # another key: built
    record.unlink()
    assert _get(Builder()) == b"kernel v1"  # deleted: tried again, and built
