"""The GitHub workflows: valid, free of the known security mistakes, and in step with the project.

Two linters check the files: ``check-jsonschema`` against the published schema of GitHub
workflows (the schema ships inside the package, so the check needs no network), and
``zizmor`` for unsafe patterns (unpinned actions, credentials left in the checkout, template
injection, over-broad permissions). The remaining tests tie the workflows to the files they
must agree with: the Python versions of ``pyproject.toml``, its lower version bounds (the
"oldest" job installs exactly those) and README's test commands.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def _load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _tool(name: str) -> str:
    """The path of a linter installed with the test extras, next to this Python."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test extras (pip install -e '.[test]')"
    return found


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_the_three_workflows_exist():
    assert {f.name for f in FILES} == {"tests.yml", "docs.yml", "release.yml"}


def test_workflows_match_the_github_schema():
    cmd = [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    done = subprocess.run(cmd + [str(f) for f in FILES], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_zizmor_finds_nothing():
    done = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", str(WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_action_is_pinned_to_a_commit():
    for path in FILES:
        for step in _steps(yaml.safe_load(path.read_text())):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), (
                    path.name,
                    step["uses"],
                )


def _python_range() -> list[str]:
    """Every minor Python version from ``requires-python``'s lower bound to 3.13."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = int(re.fullmatch(r">=3\.(\d+)", spec).group(1))
    return [f"3.{minor}" for minor in range(low, 14)]


def test_the_test_matrix_covers_every_supported_python_with_oldest_and_newest():
    matrix = _load("tests.yml")["jobs"]["test"]["strategy"]["matrix"]["include"]
    assert sorted(entry["python"] for entry in matrix) == _python_range()
    oldest = [e for e in matrix if e["deps"] == "oldest"]
    assert [e["python"] for e in oldest] == [_python_range()[0]]
    assert any(e["deps"] == "newest" and e["python"] == _python_range()[-1] for e in matrix)


def _lower_bounds() -> dict[str, str]:
    """The ``>=`` bound of each dependency the oldest job pins (core and AnnData stack)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["anndata"]
    bounds = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", spec)
        if match:
            bounds[match.group(1).lower()] = match.group(2)
    return bounds


def test_the_oldest_job_installs_the_lower_bounds_of_pyproject():
    text = (WORKFLOWS / "tests.yml").read_text()
    pinned = dict(re.findall(r'"([a-z-]+)==([0-9.]+)\.\*"', text))
    bounds = _lower_bounds()
    assert set(bounds) - {"tqdm"} <= set(pinned), sorted(set(bounds) - set(pinned))
    for name, version in pinned.items():
        assert bounds[name] == version, (name, bounds[name], version)


def test_the_test_jobs_run_readme_test_commands():
    readme = (ROOT / "README.md").read_text()
    runs = " ".join(step.get("run", "") for step in _steps(_load("tests.yml")))
    for command in ("python -m pytest -q tests", "python -m pytest -q -m slow tests"):
        assert command in readme
        assert command in runs


def test_torch_comes_from_pytorchs_cpu_index_in_every_workflow():
    for name in ("tests.yml", "docs.yml"):
        runs = " ".join(step.get("run", "") for step in _steps(_load(name)))
        assert "--index-url https://download.pytorch.org/whl/cpu" in runs, name


def test_the_release_publishes_by_trusted_publishing_from_a_tag():
    release = _load("release.yml")
    # PyYAML reads the key `on` as True (YAML 1.1).
    trigger = release.get("on", release.get(True))
    assert trigger["push"]["tags"] == ["v*"]
    assert release["permissions"] == {"contents": "read"}
    build, publish = release["jobs"]["build"], release["jobs"]["publish"]
    build_runs = " ".join(step.get("run", "") for step in build["steps"])
    assert "python -m build" in build_runs
    assert "twine check --strict" in build_runs
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}
    assert any("gh-action-pypi-publish" in step.get("uses", "") for step in publish["steps"])
    assert not any("password" in step.get("with", {}) for step in publish["steps"])


def test_every_checkout_fetches_the_tags_the_version_comes_from():
    for path in FILES:
        for step in _steps(yaml.safe_load(path.read_text())):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["fetch-depth"] == 0, path.name
                assert step["with"]["persist-credentials"] is False, path.name
