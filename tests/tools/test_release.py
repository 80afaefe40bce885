"""tools/release.py on a copy of the repository's packages: the edits it makes, and each refusal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DATE = "2026-03-14"


def _set_range(root: Path, distribution: str, specifier: str) -> None:
    pyproject = root / "packages" / distribution / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(re.sub(r'"verify-common[^"]*"', f'"verify-common{specifier}"', text))


def _about(root: Path, distribution: str) -> Path:
    return next((root / "packages" / distribution / "src").glob("*/__about__.py"))


@pytest.mark.parametrize("distribution", ["verify-common", "bn-verify", "batch-mix-verify"])
def test_release_bumps_version_dates_changelog_and_prints_tag(distribution, repo_copy, run_tool, snapshot):
    before = snapshot(repo_copy)
    about = _about(repo_copy, distribution)
    about.chmod(0o640)  # a file keeps its permissions
    changelog = repo_copy / "packages" / distribution / "CHANGELOG.md"
    changelog_before = changelog.read_text()

    result = run_tool("release", distribution, "0.1.1", "--date", DATE, "--root", repo_copy)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"Tag to push: {distribution}-v0.1.1"
    assert f"git tag {distribution}-v0.1.1" in result.stdout
    assert about.read_text().strip() == '__version__ = "0.1.1"'
    assert about.stat().st_mode & 0o777 == 0o640
    assert changelog.read_text() == changelog_before.replace(
        "## Unreleased\n", f"## Unreleased\n\n## 0.1.1 - {DATE}\n"
    )
    # Nothing else changed: not the other packages, not this package's other files.
    after = snapshot(repo_copy)
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    assert changed == {str(about.relative_to(repo_copy)), str(changelog.relative_to(repo_copy))}


def test_release_keeps_older_sections_and_bracket_style(repo_copy, release_tool):
    changelog = repo_copy / "packages" / "bn-verify" / "CHANGELOG.md"
    changelog.write_text(
        "# Changelog\n\n## [Unreleased]\n\n### Fixed\n\n- A thing.\n\n## [0.1.0] - 2026-01-01\n\n- First release.\n"
    )
    release_tool.release(repo_copy, "bn-verify", "0.1.1", DATE)
    assert changelog.read_text() == (
        "# Changelog\n\n## [Unreleased]\n\n## [0.1.1] - 2026-03-14\n\n### Fixed\n\n- A thing.\n\n"
        "## [0.1.0] - 2026-01-01\n\n- First release.\n"
    )


def test_dry_run_shows_the_edits_and_writes_nothing(repo_copy, run_tool, snapshot):
    before = snapshot(repo_copy)
    result = run_tool("release", "bn-verify", "0.2.0", "--dry-run", "--date", DATE, "--root", repo_copy)
    assert result.returncode == 0, result.stderr
    assert snapshot(repo_copy) == before
    assert "nothing was written" in result.stdout
    assert '+__version__ = "0.2.0"' in result.stdout
    assert f"+## 0.2.0 - {DATE}" in result.stdout
    assert result.stdout.splitlines()[-1] == "Tag to push: bn-verify-v0.2.0"


def test_default_date_is_today(repo_copy, release_tool):
    import datetime

    release_tool.main(["bn-verify", "0.1.1", "--root", str(repo_copy)])
    changelog = (repo_copy / "packages" / "bn-verify" / "CHANGELOG.md").read_text()
    assert f"## 0.1.1 - {datetime.date.today().isoformat()}" in changelog


def test_version_is_written_normalized(repo_copy, release_tool):
    report = release_tool.release(repo_copy, "bn-verify", "v0.2.0-rc.1", DATE)
    assert _about(repo_copy, "bn-verify").read_text().strip() == '__version__ = "0.2.0rc1"'
    assert "Tag to push: bn-verify-v0.2.0rc1" in report


def _empty_unreleased(root: Path) -> None:
    path = root / "packages" / "bn-verify" / "CHANGELOG.md"
    head, _, _ = path.read_text().partition("## Unreleased")
    path.write_text(head + "## Unreleased\n\n## 0.1.0 - 2026-01-01\n\n- Old.\n")


def _no_unreleased(root: Path) -> None:
    path = root / "packages" / "bn-verify" / "CHANGELOG.md"
    path.write_text(path.read_text().replace("## Unreleased", "## 0.0.9 - 2025-12-01"))


def _check_range_excludes_repo_common(root: Path) -> None:
    _set_range(root, "bn-verify", ">=0.3,<0.4")


REFUSALS = {
    "unknown-distribution": (
        ["bn_verify", "0.2.0"], None,
        r"unknown distribution 'bn_verify'; the packages are: batch-mix-verify, bn-verify, verify-common",
    ),
    "invalid-version": (["bn-verify", "0.2.banana"], None, r"'0\.2\.banana' is not a valid PEP 440 version"),
    "same-version": (
        ["bn-verify", "0.1.0"], None, r"bn-verify is at 0\.1\.0; the new version must be greater \(got 0\.1\.0\)"
    ),
    "older-version": (["bn-verify", "0.0.9"], None, r"bn-verify is at 0\.1\.0; the new version must be greater"),
    "pre-release-of-current": (["bn-verify", "0.1.0rc1"], None, r"the new version must be greater"),
    "no-unreleased-section": (
        ["bn-verify", "0.2.0"], _no_unreleased, r"packages/bn-verify/CHANGELOG\.md has no `## Unreleased` section"
    ),
    "empty-unreleased-section": (
        ["bn-verify", "0.2.0"], _empty_unreleased,
        r"the `## Unreleased` section of packages/bn-verify/CHANGELOG\.md is empty; list the changes of 0\.2\.0",
    ),
    "common-outside-dependent-ranges": (
        ["verify-common", "0.2.0"], None,
        r"refusing to release verify-common 0\.2\.0: batch-mix-verify requires verify-common>=0\.1\.0,<0\.2 "
        r"\(packages/batch-mix-verify/pyproject\.toml\), which does not admit 0\.2\.0; bn-verify requires "
        r"verify-common>=0\.1\.0,<0\.2 \(packages/bn-verify/pyproject\.toml\), which does not admit 0\.2\.0\. "
        r'Update those ranges first \(e\.g\. "verify-common>=0\.2\.0,<0\.3"\)',
    ),
    "common-outside-one-dependent-range": (
        ["verify-common", "0.2.0"], lambda root: _set_range(root, "batch-mix-verify", ">=0.1.0,<0.3"),
        r"refusing to release verify-common 0\.2\.0: bn-verify requires verify-common>=0\.1\.0,<0\.2 .*"
        r"Update that range first .* release bn-verify after verify-common",
    ),
    "common-pre-release-of-excluded-version": (
        ["verify-common", "0.2.0rc1"], None, r"which does not admit 0\.2\.0rc1",
    ),
    "check-range-excludes-repo-common": (
        ["bn-verify", "0.2.0"], _check_range_excludes_repo_common,
        r"bn-verify requires verify-common>=0\.3,<0\.4, which does not admit this repository's verify-common 0\.1\.0",
    ),
    "bad-date": (["bn-verify", "0.2.0", "--date", "14/03/2026"], None, r"--date '14/03/2026' is not a date"),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_refusals_write_nothing(case, repo_copy, release_tool, snapshot, capsys):
    argv, prepare, message = REFUSALS[case]
    if prepare is not None:
        prepare(repo_copy)
    before = snapshot(repo_copy)

    assert release_tool.main([*argv, "--root", str(repo_copy)]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("release.py: error: ")
    assert re.search(message, captured.err), captured.err
    assert snapshot(repo_copy) == before


def test_refusal_exits_non_zero_on_the_command_line(repo_copy, run_tool, snapshot):
    before = snapshot(repo_copy)
    result = run_tool("release", "verify-common", "0.2.0", "--root", repo_copy)
    assert result.returncode == 1
    assert "which does not admit 0.2.0" in result.stderr and result.stdout == ""
    assert snapshot(repo_copy) == before


def test_common_release_inside_the_ranges_is_accepted(repo_copy, release_tool):
    _set_range(repo_copy, "bn-verify", ">=0.1.0,<0.3")
    _set_range(repo_copy, "batch-mix-verify", "~=0.2")
    release_tool.release(repo_copy, "verify-common", "0.2.0", DATE)
    assert _about(repo_copy, "verify-common").read_text().strip() == '__version__ = "0.2.0"'


@pytest.mark.parametrize(
    ("argv", "message"),
    [([], "give a distribution and a version"), (["bn-verify", "0.2.0", "--check-tag", "x"], "takes no distribution")],
    ids=["nothing", "both-modes"],
)
def test_usage_errors(argv, message, release_tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        release_tool.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- the release workflow's tag check --------------------------------------------------


@pytest.mark.parametrize(
    ("distribution", "import_name"),
    [("verify-common", "verify_common"), ("bn-verify", "bn_verify"), ("batch-mix-verify", "batch_mix_verify")],
)
def test_check_tag_prints_outputs_for_a_matching_tag(distribution, import_name, run_tool):
    version = _about(Path(__file__).resolve().parents[2], distribution).read_text().split('"')[1]
    result = run_tool("release", "--check-tag", f"{distribution}-v{version}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"distribution={distribution}\nimport-name={import_name}\nversion={version}\n"


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("bn-verify-v9.9.9", r"tag bn-verify-v9\.9\.9 says version '9\.9\.9', but packages/bn-verify/src/bn_verify/"
                             r"__about__\.py says '0\.1\.0'"),
        ("verify-v0.1.0", r"tag 'verify-v0\.1\.0' names no package; release tags look like: batch-mix-verify-v<"),
        ("bn-verify-0.1.0", r"names no package"),
    ],
    ids=["version-mismatch", "unknown-prefix", "missing-v"],
)
def test_check_tag_refuses(tag, message, repo_copy, release_tool, capsys):
    assert release_tool.main(["--check-tag", tag, "--root", str(repo_copy)]) == 1
    assert re.search(message, capsys.readouterr().err)


# -- versions and ranges without `packaging` ------------------------------------------

RANGE_CASES = [
    (">=0.1.0,<0.2", "0.1.0"),
    (">=0.1.0,<0.2", "0.1.9"),
    (">=0.1.0,<0.2", "0.2.0"),
    (">=0.1.0,<0.2", "0.2.0rc1"),
    (">=0.1.0,<0.2", "0.2.0.dev3"),
    (">=0.1.0,<0.2", "0.1.1.post1"),
    (">=0.1.0,<0.2", "0.1.0a1"),
    ("~=0.2", "0.2.5"),
    ("~=0.2", "1.0"),
    ("~=0.2.1", "0.3.0"),
    ("==0.2.0", "0.2"),
    ("!=0.2.0", "0.2.0"),
    (">0.1,<=1.0", "1.0.0"),
    ("", "3.0"),
]


@pytest.mark.parametrize(("specifier", "version"), RANGE_CASES, ids=[f"{s or 'any'}:{v}" for s, v in RANGE_CASES])
def test_fallback_ranges_agree_with_packaging(specifier, version, packages_tool):
    expected = packages_tool.admits(specifier, version, use_packaging=True)
    assert packages_tool.admits(specifier, version, use_packaging=False) is expected


ORDER = ["0.1.0.dev1", "0.1.0a1", "0.1.0b2", "0.1.0rc1", "0.1.0", "0.1.0.post1", "0.1.1", "0.2", "1.0.0"]


def test_fallback_versions_order_as_pep_440(packages_tool):
    parsed = [packages_tool.parse_version(text, use_packaging=False) for text in ORDER]
    assert parsed == sorted(parsed)
    assert all(earlier < later for earlier, later in zip(parsed, parsed[1:]))
    same = [packages_tool.parse_version(text, use_packaging=False) for text in ("0.2.0", "0.2")]
    assert same[0] == same[1]


@pytest.mark.parametrize("use_packaging", [True, False], ids=["packaging", "fallback"])
def test_invalid_versions_are_refused(use_packaging, packages_tool):
    with pytest.raises(packages_tool.PackageError, match=r"'1\.x' is not a valid PEP 440 version"):
        packages_tool.parse_version("1.x", use_packaging=use_packaging)
