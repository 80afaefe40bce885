"""Each package's README is its PyPI page: it renders there and tells a visitor what they need."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["verify-common", "bn-verify", "batch-mix-verify"]
REPOSITORY_URL = "https://github.com/model-verification/model-verification"


def _readme(distribution: str) -> str:
    return (REPO_ROOT / "packages" / distribution / "README.md").read_text(encoding="utf-8")


@pytest.mark.packaging
@pytest.mark.parametrize("distribution", PACKAGES)
def test_built_distributions_pass_twine_check(distribution, dists):
    if importlib.util.find_spec("twine") is None:
        pytest.skip("needs twine (pip install twine) to check the distributions")
    import_name = distribution.replace("-", "_")
    version = next((REPO_ROOT / "packages" / distribution / "src").glob("*/__about__.py")).read_text().split('"')[1]
    built = sorted(dists.glob(f"{import_name}-*"))
    assert [path.name for path in built] == [
        f"{import_name}-{version}-py3-none-any.whl",
        f"{import_name}-{version}.tar.gz",
    ]

    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, built)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2, check.stdout


@pytest.mark.parametrize("distribution", PACKAGES)
def test_readme_says_what_install_example_and_where(distribution):
    readme = _readme(distribution)
    lines = readme.splitlines()
    assert lines[0] == f"# {distribution}"
    what = next((line for line in lines[1:] if line.strip() and not line.startswith(("#", "[!", "!["))), "")
    assert len(what.split()) >= 5, "the first paragraph should say what the package does"
    assert re.search(rf"pip install [\"']?{re.escape(distribution)}", readme), "no `pip install` line"
    assert re.search(r"^```python\n.*?\bimport\b.*?^```", readme, re.MULTILINE | re.DOTALL), "no Python example"
    assert REPOSITORY_URL in readme, "no link to the repository"


@pytest.mark.parametrize("distribution", PACKAGES)
def test_readme_links_work_on_pypi(distribution):
    # PyPI shows the README outside the repository: a relative link or image is broken there.
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)", _readme(distribution))
    relative = [target for target in targets if not target.startswith(("https://", "http://", "#", "mailto:"))]
    assert relative == []
