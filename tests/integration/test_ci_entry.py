"""``.ci/run`` runs exactly the test command that README.md shows, and fails when it fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _readme_command() -> str:
    block = re.search(r"<!-- test-command -->(.*?)<!-- /test-command -->", (REPO_ROOT / "README.md").read_text(), re.S)
    lines = [line.strip() for line in block.group(1).splitlines()]
    (command,) = [line for line in lines if line and not line.startswith("```")]
    return command


def _run_ci_with_fake_hatch(tmp_path: Path, exit_code: int, readme: str | None = None) -> subprocess.CompletedProcess:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO_ROOT / ".ci" / "run", repo / ".ci" / "run")
    (repo / "README.md").write_text(readme if readme is not None else (REPO_ROOT / "README.md").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "hatch"
    fake.write_text(f'#!/bin/sh\necho "FAKE HATCH $*"\nexit {exit_code}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=env)


def test_readme_test_command_is_a_hatch_test_of_the_local_cells():
    assert _readme_command() == "hatch test --python 3.11 --include torch=2.13.0"


def test_ci_runs_the_readme_command(tmp_path):
    result = _run_ci_with_fake_hatch(tmp_path, exit_code=0)
    assert result.returncode == 0, result.stderr
    assert f"+ {_readme_command()}" in result.stdout
    assert "FAKE HATCH " + _readme_command().removeprefix("hatch ") in result.stdout


def test_ci_fails_when_the_tests_fail(tmp_path):
    assert _run_ci_with_fake_hatch(tmp_path, exit_code=3).returncode == 3


@pytest.mark.parametrize(
    "readme",
    ["# no markers\n", "<!-- test-command -->\n```bash\na\nb\n```\n<!-- /test-command -->\n"],
    ids=["no-markers", "two-commands"],
)
def test_ci_refuses_a_readme_without_exactly_one_command(tmp_path, readme):
    result = _run_ci_with_fake_hatch(tmp_path, exit_code=0, readme=readme)
    assert result.returncode == 2
    assert "exactly one test command" in result.stderr


def test_github_matrix_matches_the_hatch_matrix():
    yaml = pytest.importorskip("yaml")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")

    hatch = tomllib.loads((REPO_ROOT / "hatch.toml").read_text())
    cells = hatch["envs"]["hatch-test"]["matrix"]
    github = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())["jobs"]["test"]
    matrix = github["strategy"]["matrix"]
    for variable, key in (("python", "python"), ("torch", "torch"), ("lightning", "lightning")):
        declared = {value for cell in cells for value in cell[variable]}
        assert set(matrix[key]) == declared, variable
    command = github["steps"][-1]["run"]
    assert command.startswith("hatch test ") and "-i torch=" in command and "-i lightning=" in command
