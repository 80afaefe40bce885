"""Prepare the release of one package: bump its version, date its changelog, print the tag to push.

    python tools/release.py bn-verify 0.2.0 [--dry-run] [--date 2026-03-01]

Each package is released on its own, from a tag ``<distribution>-v<version>``
that .github/workflows/release.yml turns into a PyPI upload.  This tool edits
only that package's ``__about__.py`` and ``CHANGELOG.md``, and refuses --
writing nothing -- when the release would be wrong: an unknown package, a
version that is not PEP 440 or not above the current one, an empty
``## Unreleased`` section, or a ``verify-common`` version that a package in this
repository requires a range of and would not accept.

    python tools/release.py --check-tag bn-verify-v0.2.0

is the workflow's side: it fails unless the tag names a package whose version
is the tag's, and prints ``distribution=``/``import-name=``/``version=`` lines
for ``$GITHUB_OUTPUT``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _packages import (  # noqa: E402
    COMMON_DISTRIBUTION,
    REPO_ROOT,
    Package,
    PackageError,
    admits,
    dependents,
    get_package,
    load_packages,
    parse_version,
    read_version,
    replace_version,
    write_atomic,
)

_UNRELEASED = re.compile(r"^## (?P<open>\[?)Unreleased\]?[ \t]*$", re.MULTILINE | re.IGNORECASE)
_NEXT_SECTION = re.compile(r"^## ", re.MULTILINE)


class ReleaseError(Exception):
    """The release is refused; nothing was written.  The message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Edit:
    path: Path
    old: str
    new: str


def tag_for(distribution: str, version: str) -> str:
    return f"{distribution}-v{version}"


def date_changelog(text: str, version: str, date: str, changelog: str) -> str:
    """Turn the ``## Unreleased`` section into ``## <version> - <date>`` under a fresh, empty one."""
    heading = _UNRELEASED.search(text)
    if heading is None:
        raise ReleaseError(f"{changelog} has no `## Unreleased` section; add one listing the changes in {version}")
    following = _NEXT_SECTION.search(text, heading.end())
    section = text[heading.end() : following.start() if following else len(text)]
    entries = [
        line
        for line in section.splitlines()
        if line.strip() and not line.startswith("### ") and not line.strip().startswith("<!--")
    ]
    if not entries:
        raise ReleaseError(
            f"the `## Unreleased` section of {changelog} is empty; list the changes of {version} there first"
        )
    bracket = heading["open"]  # keep the file's style: "## [Unreleased]" / "## [0.2.0] - date"
    for existing in re.finditer(r"^## \[?([^\]\s]+)\]?", text, re.MULTILINE):
        if existing.group(1) == version:
            raise ReleaseError(f"{changelog} already has a section for {version}")
    released = f"## {bracket}{version}{']' if bracket else ''} - {date}"
    unreleased = f"## {bracket}Unreleased{']' if bracket else ''}"
    return f"{text[: heading.start()]}{unreleased}\n\n{released}{text[heading.end() :]}"


def _suggested_range(version: object) -> str:
    major, minor = (tuple(version.release) + (0, 0))[:2]
    upper = f"0.{minor + 1}" if major == 0 else f"{major + 1}"
    return f">={version},<{upper}"


def _check_ranges(root: Path, packages: dict[str, Package], package: Package, version: object) -> None:
    if package.distribution == COMMON_DISTRIBUTION:
        refused = [
            (other, spec) for other, spec in dependents(packages, COMMON_DISTRIBUTION) if not admits(spec, str(version))
        ]
        if refused:
            lines = [
                f"{other.distribution} requires {COMMON_DISTRIBUTION}{spec} "
                f"({other.pyproject.relative_to(root).as_posix()}), which does not admit {version}"
                for other, spec in refused
            ]
            ranges = "that range" if len(refused) == 1 else "those ranges"
            raise ReleaseError(
                f"refusing to release {COMMON_DISTRIBUTION} {version}: " + "; ".join(lines) + ". "
                f'Update {ranges} first (e.g. "{COMMON_DISTRIBUTION}{_suggested_range(version)}"), run the tests, '
                f"and release {' and '.join(other.distribution for other, _ in refused)} after {COMMON_DISTRIBUTION}."
            )
        return
    common = packages.get(COMMON_DISTRIBUTION)
    spec = package.requirement_on(COMMON_DISTRIBUTION)
    if common is not None and spec is not None and not admits(spec, common.version):
        raise ReleaseError(
            f"{package.distribution} requires {COMMON_DISTRIBUTION}{spec}, which does not admit this repository's "
            f"{COMMON_DISTRIBUTION} {common.version} that it is tested with; release {COMMON_DISTRIBUTION} first "
            "or correct the range"
        )


def plan_release(root: Path, distribution: str, version_text: str, date: str) -> tuple[Package, str, list[Edit]]:
    """Every check, then the edits to make; raises ``ReleaseError`` before anything is written."""
    try:
        datetime.date.fromisoformat(date)
    except ValueError:
        raise ReleaseError(f"--date {date!r} is not a date in the form YYYY-MM-DD") from None
    try:
        packages = load_packages(root)
        package = get_package(packages, distribution)
        version = parse_version(version_text)
        current_text = read_version(package.version_file)
        current = parse_version(current_text)
    except PackageError as exc:
        raise ReleaseError(str(exc)) from None
    if not version > current:
        raise ReleaseError(
            f"{distribution} is at {current_text}; the new version must be greater (got {version_text})"
        )
    normalized = str(version)
    _check_ranges(root, packages, package, version)
    about_old = package.version_file.read_text(encoding="utf-8")
    changelog_old = package.changelog.read_text(encoding="utf-8")
    try:
        about_new = replace_version(about_old, normalized, package.version_file)
    except PackageError as exc:
        raise ReleaseError(str(exc)) from None
    changelog_new = date_changelog(changelog_old, normalized, date, package.changelog.relative_to(root).as_posix())
    edits = [Edit(package.version_file, about_old, about_new), Edit(package.changelog, changelog_old, changelog_new)]
    return package, normalized, edits


def release(root: Path, distribution: str, version_text: str, date: str, dry_run: bool = False) -> str:
    """Make (or with ``dry_run`` only describe) the release edits; return the report to print."""
    package, version, edits = plan_release(root, distribution, version_text, date)
    relative = {edit.path: edit.path.relative_to(root).as_posix() for edit in edits}
    lines = []
    if dry_run:
        lines.append(f"Dry run: would release {distribution} {version}; nothing was written.")
        for edit in edits:
            name = relative[edit.path]
            diff = difflib.unified_diff(
                edit.old.splitlines(keepends=True), edit.new.splitlines(keepends=True), f"a/{name}", f"b/{name}"
            )
            lines.append("".join(diff).rstrip("\n"))
    else:
        for edit in edits:
            write_atomic(edit.path, edit.new)
        lines.append(f"Prepared {distribution} {version}: updated {' and '.join(relative.values())}.")
    tag = tag_for(distribution, version)
    if version != version_text:
        lines.append(f"(version {version_text!r} written in its normalized form {version})")
    lines += [
        "Review and commit, then push the tag; the release workflow tests, builds and publishes it:",
        f'    git commit -am "Release {distribution} {version}"',
        f"    git tag {tag}",
        f"    git push origin HEAD {tag}",
        f"Tag to push: {tag}",
    ]
    return "\n".join(lines)


def check_tag(root: Path, tag: str) -> str:
    """``distribution=``, ``import-name=`` and ``version=`` lines for a tag that matches its package."""
    try:
        packages = load_packages(root)
    except PackageError as exc:
        raise ReleaseError(str(exc)) from None
    # The longest prefix wins, so that "a-b-v1" is never read as package "a" at version "b-v1".
    matches = sorted((name for name in packages if tag.startswith(f"{name}-v")), key=len, reverse=True)
    if not matches:
        expected = ", ".join(f"{name}-v<version>" for name in packages)
        raise ReleaseError(f"tag {tag!r} names no package; release tags look like: {expected}")
    package = packages[matches[0]]
    version = tag[len(package.distribution) + 2 :]
    if version != package.version:
        raise ReleaseError(
            f"tag {tag} says version {version!r}, but {package.version_file.relative_to(root).as_posix()} says "
            f"{package.version!r}; tag the commit that tools/release.py prepared"
        )
    return f"distribution={package.distribution}\nimport-name={package.import_name}\nversion={version}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s [-h] [--dry-run] [--date YYYY-MM-DD] [--root ROOT] distribution version\n"
        "       %(prog)s --check-tag TAG [--root ROOT]",
    )
    parser.add_argument("distribution", nargs="?", help="distribution to release, e.g. bn-verify")
    parser.add_argument("version", nargs="?", help="the new version, e.g. 0.2.0")
    parser.add_argument("--dry-run", action="store_true", help="check and show the edits, write nothing")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="release date (default: today)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root holding packages/")
    parser.add_argument("--check-tag", metavar="TAG", help="verify a release tag against its package (for CI)")
    args = parser.parse_args(argv)
    if args.check_tag is None and (args.distribution is None or args.version is None):
        parser.error("give a distribution and a version (or --check-tag TAG)")
    if args.check_tag is not None and args.distribution is not None:
        parser.error("--check-tag takes no distribution or version")
    try:
        if args.check_tag is not None:
            print(check_tag(args.root, args.check_tag))
        else:
            print(release(args.root, args.distribution, args.version, args.date, args.dry_run))
    except ReleaseError as exc:
        print(f"release.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
