"""Compiled kernels kept on disk, safe on shared machines and under concurrent starts.

A compiled kernel is native code: loading one runs it. So a package is loaded only when it
can be trusted and is what this process would have built:

- **Where.** ``$TORCHDR_SC_CACHE_DIR``, else ``$XDG_CACHE_HOME/torchdr_sc/kernels`` (a
  relative ``XDG_CACHE_HOME`` is ignored, as the XDG specification asks), else
  ``~/.cache/torchdr_sc/kernels``; ``~`` is expanded and a relative path made absolute once,
  so that a later ``chdir`` does not move the cache (:func:`cache_dir`).
- **Whose.** The folder is used only if it is owned by this user and not writable by group or
  others; a package only if it is owned by this user and not writable by group or others.
  Otherwise (a cache on a shared volume, a folder another user can write) the kernels are
  built into a private folder of this process instead, and the reason is logged once
  (:func:`usable_folder`). A folder that cannot be written (read-only) is treated the same.
- **What.** Next to each package ``NAME.so`` is a record ``NAME.json`` holding its build key
  (compiler version, exact CPU, kernel source, flags: whatever changes the machine code) and
  the SHA-256 of the package. A package is loaded only if the record exists, names the
  expected key, and the digest matches: a package of another variant under the right name, or
  one changed after it was written, is rebuilt, not loaded (:func:`package_problem`).
- **When.** Building holds an exclusive lock on ``NAME.lock`` (:func:`fcntl.flock`): of several
  processes that start on an empty cache, one builds and the others wait, then load what it
  built. The build writes to temporary names in the folder and renames them into place (a
  reader never sees half a file); PyTorch's compile cache and the temporary folder
  (``TMPDIR``) point into a private build folder during the build, which is removed after, and
  leftovers of killed builds (their process gone) are removed at the next build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .._logging import get_logger, notice

logger = get_logger(__name__)

#: Environment variable naming the folder of compiled kernels.
CACHE_DIR_ENV = "TORCHDR_SC_CACHE_DIR"
#: Prefix of the temporary files and build folders of a build in progress (``PREFIX<pid>-...``).
BUILD_PREFIX = ".building-"

T = TypeVar("T")
_PRIVATE: dict[str, Path] = {}
_RESOLVED: dict[str, Path] = {}
_WARNED: set[str] = set()


def cache_dir() -> Path:
    """The kernel cache folder this process uses (absolute; resolved once per setting).

    ``$TORCHDR_SC_CACHE_DIR``, else ``$XDG_CACHE_HOME/torchdr_sc/kernels`` when that variable
    holds an absolute path, else ``~/.cache/torchdr_sc/kernels``. ``~`` is expanded.
    """
    explicit = os.environ.get(CACHE_DIR_ENV, "").strip()
    if explicit:
        raw = explicit
    else:
        xdg = os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "").strip())
        base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        raw = os.path.join(base, "torchdr_sc", "kernels")
    if raw not in _RESOLVED:
        _RESOLVED[raw] = Path(os.path.abspath(os.path.expanduser(raw)))
    return _RESOLVED[raw]


def ownership_problem(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (another owner, writable by group or others), or None."""
    info = path.stat()
    if info.st_uid != os.getuid():
        return f"it is owned by uid {info.st_uid}, not by this user ({os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.filemode(info.st_mode)})"
    return None


def _private_folder() -> Path:
    """A folder of this process only (mode 0700), removed with the temporary files."""
    if "dir" not in _PRIVATE:
        _PRIVATE["dir"] = Path(tempfile.mkdtemp(prefix="torchdr_sc-kernels-"))
    return _PRIVATE["dir"]


def usable_folder() -> Path:
    """The folder kernels are read from and built in: :func:`cache_dir` when it is (or can be
    made) ours, not writable by others, and writable by us; else a private folder of this
    process, with the reason logged once.

    Returns
    -------
    pathlib.Path
    """
    folder = cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        why = ownership_problem(folder)
        if why is None and not os.access(folder, os.W_OK | os.X_OK):
            why = "it is not writable"
    except OSError as err:
        why = f"it cannot be created ({err.strerror or err})"
    if why is None:
        return folder
    private = _private_folder()
    if str(folder) not in _WARNED:
        _WARNED.add(str(folder))
        notice(
            logger,
            "not using the kernel cache %s: %s. Kernels are compiled for this process only, in "
            "%s; set %s to a folder of your own to keep them.",
            folder,
            why,
            private,
            CACHE_DIR_ENV,
        )
    return private


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_signature() -> str:
    """The exact CPU the code is compiled for: model and instruction-set flags (Linux), else
    what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo") as fh:
            first = fh.read().split("\n\n")[0]
    except OSError:
        first = ""
    fields = {}
    for line in first.splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    if fields.get("model name") or fields.get("flags"):
        flags = " ".join(sorted(fields.get("flags", "").split()))
        return f"{platform.machine()} {fields.get('model name', '')} [{flags}]"
    return f"{platform.machine()} {platform.processor()}"


def package_problem(path: Path, key: dict) -> str | None:
    """Why the package ``path`` must not be loaded for build key ``key``, or None.

    Parameters
    ----------
    path : pathlib.Path
        The package (``NAME.so``); its record is ``NAME.json`` beside it.
    key : dict
        The build key this process expects.

    Returns
    -------
    str or None
    """
    record_path = path.with_suffix(".json")
    if not path.exists():
        return "it is not built yet"
    for item in (path, record_path):
        if item.exists():
            why = ownership_problem(item)
            if why is not None:
                return f"{item.name}: {why}"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return "it has no readable digest record"
    if record.get("key") != key:
        return "it was built for another configuration"
    if record.get("sha256") != file_digest(path):
        return "its content does not match its digest"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_builds(folder: Path) -> None:
    """Remove temporary files and build folders whose building process is gone."""
    for item in folder.glob(f"{BUILD_PREFIX}*"):
        pid_text = item.name[len(BUILD_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def private_build_environment(folder: Path) -> Iterator[Path]:
    """Point PyTorch's compile cache and the temporary folder into a private build folder.

    Yields the folder (inside ``folder``, named after this process); it is removed on exit,
    whatever happened, and ``TORCHINDUCTOR_CACHE_DIR``, ``TMPDIR`` and :mod:`tempfile`'s
    default folder are restored.
    """
    build = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{os.getpid()}-", dir=folder))
    saved = {name: os.environ.get(name) for name in ("TORCHINDUCTOR_CACHE_DIR", "TMPDIR")}
    saved_tempdir = tempfile.tempdir
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(build / "inductor")
    os.environ["TMPDIR"] = str(build)
    tempfile.tempdir = str(build)
    try:
        yield build
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(build, ignore_errors=True)


def _build_into(folder: Path, path: Path, key: dict, build: Callable[[Path], None]) -> None:
    """Build ``path`` and its record under temporary names, then rename them into place."""
    prefix = f"{BUILD_PREFIX}{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=folder)
    os.close(fd)
    tmp_record = Path(f"{tmp}.json")
    try:
        with private_build_environment(folder):
            build(Path(tmp))
        os.chmod(tmp, 0o644)  # readable like any cache file, writable by us alone
        tmp_record.write_text(json.dumps({"key": key, "sha256": file_digest(Path(tmp))}))
        os.chmod(tmp_record, 0o644)
        os.replace(tmp, path)
        os.replace(tmp_record, path.with_suffix(".json"))
    finally:
        for leftover in (Path(tmp), tmp_record):
            leftover.unlink(missing_ok=True)


def cached_kernel(
    name: str,
    key: dict,
    build: Callable[[Path], None],
    load: Callable[[Path], T],
    *,
    what: str = "kernel",
    suffix: str = ".so",
    expected: str = "about a second",
) -> T:
    """Load the kernel ``name`` from the cache, building it first (once, under a lock) when it
    is missing, untrusted, of another build key, or does not load.

    Parameters
    ----------
    name : str
        File stem of the package (``NAME.so``, ``NAME.json``, ``NAME.lock``).
    key : dict
        Its build key (JSON-serialisable): a package recorded with another key is rebuilt.
    build : callable
        ``build(path)`` writes the package to ``path``.
    load : callable
        ``load(path)`` returns the loaded kernel.
    what, suffix, expected : str
        How the messages name the kernel, the package's file extension, and how long the
        build takes (said while it runs).

    Returns
    -------
    The loaded kernel.

    Raises
    ------
    KernelBuildError
        When the build with this key failed before on this machine (recorded in
        ``NAME.failed.json``): a missing compiler is not retried by every process.
    Exception
        Whatever building or loading a freshly built package raised (the failure is
        recorded).
    """
    folder = usable_folder()
    path = folder / f"{name}{suffix}"
    if package_problem(path, key) is None:
        try:
            return load(path)
        except Exception as err:  # a package that passes the checks but does not load here
            logger.info("the cached %s %s does not load (%s)", what, path, type(err).__name__)
    with _lock(folder / f"{name}.lock"):
        why = package_problem(path, key)  # another process may have built it meanwhile
        if why is None:
            try:
                return load(path)
            except Exception as err:
                why = f"it does not load ({type(err).__name__})"
        remove_stale_builds(folder)
        failed = failed_before(folder / f"{name}.failed.json", key)
        if failed is not None:
            msg = (
                f"the {what} did not build on this machine before ({failed}); not trying "
                f"again. Delete {folder / (name + '.failed.json')} to retry (e.g. after "
                "installing a C++ compiler)."
            )
            raise KernelBuildError(msg)
        notice(
            logger,
            "compiling the %s once for this machine (%s); this takes %s and is cached in "
            "%s for later processes",
            what,
            why,
            expected,
            folder,
        )
        start = time.perf_counter()
        try:
            _build_into(folder, path, key, build)
        except Exception as err:  # remembered, so that later processes do not retry
            record_failure(folder / f"{name}.failed.json", key, err)
            raise
        logger.info("compiled the %s in %.0f s", what, time.perf_counter() - start)
        return load(path)


class KernelBuildError(RuntimeError):
    """A kernel that failed to build on this machine before, with the same build key."""


def record_failure(path: Path, key: dict, err: BaseException) -> None:
    """Write why the build of key ``key`` failed to ``path`` (best effort, mode 0644)."""
    first_line = str(err).splitlines()[0] if str(err) else ""
    reason = f"{type(err).__name__}: {first_line}"[:300]
    try:
        tmp = path.with_name(f"{BUILD_PREFIX}{os.getpid()}-{path.name}")
        tmp.write_text(json.dumps({"key": key, "reason": reason}))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        pass


def failed_before(path: Path, key: dict) -> str | None:
    """The recorded reason when the build of key ``key`` failed before (a record that is
    ours and not writable by others), else None. A new torch, source or CPU changes the key,
    and with it the verdict."""
    if not path.exists() or ownership_problem(path) is not None:
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return str(record.get("reason", "")) if record.get("key") == key else None


def describe_key(parts: dict[str, Any]) -> str:
    """A short stable digest of a build key (for file names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
