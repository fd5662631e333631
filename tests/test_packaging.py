"""The release artefacts: the sdist and the wheel build, pass ``twine check`` and install.

What the release workflow publishes is built here the same way (``python -m build``: the
sdist first, then the wheel from the unpacked sdist, so a file missing from the sdist breaks
the wheel). The wheel is installed with its ``anndata`` extra into a new virtual environment
that sees nothing of this checkout, and embeds scanpy's bundled ``pbmc68k_reduced`` there.
Marked ``slow``: the build and the clean install take a minute or two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

#: Files a packager needs from the sdist to test and document a release.
SDIST_MUST_HOLD = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "src/torchdr_sc/__init__.py",
    "src/torchdr_sc/py.typed",
    "tests/conftest.py",
    "tests/test_packaging.py",
    "docs/conf.py",
    "docs/index.md",
    "tutorials/01_first_embedding.md",
    "benchmarks/run.py",
)


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out)
    return out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_twine_accepts_both_artefacts(dist):
    files = [str(_one(dist, "*.tar.gz")), str(_one(dist, "*.whl"))]
    out = _run([sys.executable, "-m", "twine", "check", "--strict", *files], cwd=dist)
    assert out.count("PASSED") == 2, out


def test_the_sdist_holds_the_tests_and_the_docs_sources(dist):
    with tarfile.open(_one(dist, "*.tar.gz")) as sdist:
        names = sdist.getnames()
    top = names[0].split("/")[0]
    inside = {name.removeprefix(f"{top}/") for name in names}
    missing = [path for path in SDIST_MUST_HOLD if path not in inside]
    assert not missing, missing
    assert not [n for n in inside if ".venv" in n or "_build/" in n or n.endswith(".pyc")]


def test_the_wheel_holds_the_package_and_its_command(dist):
    with zipfile.ZipFile(_one(dist, "*.whl")) as wheel:
        names = wheel.namelist()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        entry_points = wheel.read(entry).decode()
    assert "torchdr_sc/tl/__init__.py" in names
    assert "torchdr_sc/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "benchmarks/"))]
    assert "torchdr-sc = torchdr_sc.cli:main" in entry_points


def test_the_wheel_embeds_pbmc68k_reduced_in_a_clean_environment(dist, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    import torch

    # The same torch as this environment (a CPU build), then the wheel with its AnnData extra.
    _run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__}"], cwd=tmp_path)
    wheel = _one(dist, "*.whl")
    _run([python, "-m", "pip", "install", "-q", f"{wheel}[anndata]"], cwd=tmp_path)
    script = (
        "import scanpy as sc, torchdr_sc\n"
        f"assert str(torchdr_sc.__file__).startswith({str(venv)!r}), torchdr_sc.__file__\n"
        "adata = sc.datasets.pbmc68k_reduced()\n"
        "torchdr_sc.tl.umap(adata, maxiter=50, random_state=0)\n"
        "assert adata.obsm['X_umap'].shape == (adata.n_obs, 2)\n"
        "print(torchdr_sc.__version__)\n"
    )
    version = _run([python, "-c", script], cwd=tmp_path).strip()
    assert version == wheel.name.split("-")[1]
