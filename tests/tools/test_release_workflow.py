""".github/workflows/release.yml: one tag prefix per package, tested, built, published alone."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "release.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


def test_runs_on_each_package_tag(workflow, packages_tool):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert set(triggers) == {"push"}
    expected = {f"{name}-v*" for name in packages_tool.load_packages(REPO_ROOT)}
    assert set(triggers["push"]["tags"]) == expected


def test_checks_the_tag_then_builds_tests_and_publishes_in_that_order(workflow):
    jobs = workflow["jobs"]
    assert 'python tools/release.py --check-tag "$GITHUB_REF_NAME"' in _steps(jobs["build"])
    assert 'python -m build "packages/${DISTRIBUTION}"' in _steps(jobs["build"])
    assert "twine check --strict dist/*" in _steps(jobs["build"])
    assert jobs["test"]["needs"] == "build"
    assert 'python -m pytest "tests/${IMPORT_NAME}"' in _steps(jobs["test"])
    assert set(jobs["publish"]["needs"]) == {"build", "test"}


def test_a_failing_command_in_a_pipe_fails_its_step(workflow):
    # The tag check pipes into tee; only an explicit `shell: bash` runs with pipefail.
    assert "| tee" in _steps(workflow["jobs"]["build"])
    assert workflow["defaults"]["run"]["shell"] == "bash"


def test_torch_is_pinned_to_the_cpu_wheel(workflow):
    install = _steps(workflow["jobs"]["test"])
    assert '"torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu' in install
    assert workflow["env"]["TORCH_VERSION"].count(".") == 2


def test_publishes_with_trusted_publishing_only_from_the_pypi_environment(workflow):
    publish = workflow["jobs"]["publish"]
    assert workflow["permissions"] == {"contents": "read"}
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    assert [step["uses"] for step in publish["steps"]][-1] == "pypa/gh-action-pypi-publish@release/v1"
    assert "password" not in str(publish)
