"""The install instructions are true: the documented torch command resolves to a CPU build.

README's "Set up" keeps exactly two commands (the demo, the tests); both, and the
installation page, install torch first from PyTorch's index of CPU builds. From the public
index alone, ``pip install torch`` resolves to the CUDA build on Linux (several GB); the
dry run below resolves the documented command with the machine's pip configuration and
checks that it picks a ``+cpu`` build and no NVIDIA libraries. Where no index answers (an
offline machine) the dry run is skipped; the text checks always run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Set up") : readme.index("## Quickstart")]
    return [block.strip() for block in bash_blocks(section)]


def torch_command(command: str) -> str:
    """The first ``&&``-separated part of a set-up command: the torch install."""
    return command.split("&&")[0].strip()


def test_readme_has_exactly_two_setup_commands_each_on_one_line():
    commands = setup_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "torchdr-sc demo" in commands[0]
    assert "pytest" in commands[1]


def test_every_documented_install_takes_torch_from_the_cpu_index_first():
    commands = setup_commands()
    install_page = bash_blocks((ROOT / "docs" / "install.md").read_text())[0]
    contributing = bash_blocks((ROOT / "CONTRIBUTING.md").read_text())[0]
    firsts = {torch_command(c) for c in commands}
    firsts |= {install_page.splitlines()[0].strip(), contributing.splitlines()[0].strip()}
    assert len(firsts) == 1, firsts
    (first,) = firsts
    assert first.startswith("python -m pip install")
    assert CPU_INDEX in first


def test_the_documented_torch_command_resolves_to_a_cpu_build(tmp_path):
    args = shlex.split(torch_command(setup_commands()[0]))[3:]  # after "python -m pip"
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", *args, "--dry-run", "--ignore-installed", "--quiet"]
    cmd += ["--report", str(report), "--retries", "0", "--timeout", "10"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.skip(f"no package index answered the dry run: {done.stderr.strip()[-300:]}")
    installed = json.loads(report.read_text())["install"]
    names = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installed}
    assert names["torch"].endswith("+cpu"), names["torch"]
    assert not [name for name in names if name.startswith("nvidia")], sorted(names)
