"""What a benchmark ran on: machine, package versions, command line, source revision."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "torchdr-sc",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "faiss-cpu",
    "faiss-gpu",
    "pykeops",
    "anndata",
    "scanpy",
    "umap-learn",
    "pynndescent",
    "numba",
    "openTSNE",
    "matplotlib",
    "psutil",
    "threadpoolctl",
)
# Environment variables that change how fast the numerical libraries run.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "CUDA_VISIBLE_DEVICES",
)
REPO_ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpus() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _cuda_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.version.cuda


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the benchmarked packages (absent ones are left out).

    Parameters
    ----------
    packages : tuple of str
        Distribution names.

    Returns
    -------
    dict
        ``{name: version}``, plus ``'python'``.
    """
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "torchdr-sc" and _source_version():
                out[name] = f"{_source_version()} (source tree)"
    return out


def _source_version() -> str | None:
    """Version in pyproject.toml, for a checkout that is not pip-installed."""
    try:
        text = (REPO_ROOT / "pyproject.toml").read_text()
    except OSError:
        return None
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    return match.group(1) if match else None


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty-src" if dirty else "")


def _command_line() -> str:
    """The command as typed, e.g. ``python -m benchmarks.run --quick``."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    argv[0] = Path(argv[0]).name
    return " ".join(argv)


def describe(extra_versions: dict | None = None) -> dict:
    """Describe the machine, software and command line of this run.

    Parameters
    ----------
    extra_versions : dict, optional
        Versions found elsewhere (e.g. inside the TorchDR virtual environment).

    Returns
    -------
    dict
        JSON-serialisable.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        import numpy  # noqa: F401  (loads the BLAS that threadpoolctl reports)
        from threadpoolctl import threadpool_info

        blas = [
            {k: v for k, v in info.items() if k in ("internal_api", "num_threads", "architecture")}
            for info in threadpool_info()
        ]
    except ImportError:
        blas = []
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": _memory_gb(),
        "gpus": _gpus(),
        "cuda": _cuda_version(),
        "os": platform.platform(),
        "versions": {**versions(), **(extra_versions or {})},
        "threadpools": blas,
        "env": {k: os.environ[k] for k in THREAD_VARS if k in os.environ},
        "git": _git_revision(),
        "command": _command_line(),
    }
