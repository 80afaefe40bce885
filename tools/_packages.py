"""What the release and vendoring tools know about the packages under ``packages/``.

Each package describes itself: ``pyproject.toml`` gives the distribution name,
its dependencies and (``[tool.hatch.version] path``) the ``__about__.py`` that
holds the version, whose folder is the import name.  Reading that, rather than
keeping a second list here, lets the tools run on fixture trees in tests and
on a fourth package without edits.

Only the standard library is required: ``tomllib`` (or ``tomli`` on Python
3.10) reads the TOML, and ``packaging`` is used for versions and ranges when
installed, else the small PEP 440 subset below.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        tomllib = None  # type: ignore[assignment]

COMMON_DISTRIBUTION = "verify-common"
REPO_ROOT = Path(__file__).resolve().parent.parent


class PackageError(Exception):
    """A package folder, version or range is not what the tools need; the message says which."""


@dataclasses.dataclass(frozen=True)
class Package:
    """One package folder: ``packages/<distribution>/``."""

    distribution: str
    import_name: str
    folder: Path
    version_file: Path
    requirements: tuple[str, ...]
    source_url: str

    @property
    def src(self) -> Path:
        """The import package's folder, ``src/<import_name>``."""
        return self.version_file.parent

    @property
    def changelog(self) -> Path:
        return self.folder / "CHANGELOG.md"

    @property
    def pyproject(self) -> Path:
        return self.folder / "pyproject.toml"

    @property
    def license_file(self) -> Path:
        return self.folder / "LICENSE"

    @property
    def version(self) -> str:
        return read_version(self.version_file)

    def requirement_on(self, distribution: str) -> str | None:
        """The version range this package requires of ``distribution`` (``">=0.1.0,<0.2"``), or None."""
        for requirement in self.requirements:
            match = _REQUIREMENT.match(requirement)
            if match and _normalize_name(match["name"]) == _normalize_name(distribution):
                return match["specifier"].strip()
        return None


_REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<specifier>[^;]*)")
_VERSION_ASSIGNMENT = re.compile(r'^__version__\s*=\s*["\'](?P<version>[^"\']+)["\']\s*$', re.MULTILINE)


def _normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_version(version_file: Path) -> str:
    """The string assigned to ``__version__`` in ``version_file`` (checked with ``ast``)."""
    tree = ast.parse(version_file.read_text(encoding="utf-8"), filename=str(version_file))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(target, "id", None) for target in node.targets] == ["__version__"]
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise PackageError(f"{version_file}: no `__version__ = \"X.Y.Z\"` line")


def replace_version(text: str, version: str, version_file: Path) -> str:
    """``text`` of an ``__about__.py`` with its one ``__version__`` line set to ``version``."""
    new_text, count = _VERSION_ASSIGNMENT.subn(f'__version__ = "{version}"', text)
    if count != 1:
        raise PackageError(f"{version_file}: expected exactly one `__version__ = \"...\"` line, found {count}")
    return new_text


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (LF line ends) to a temporary file beside ``path``, then rename it over ``path``.

    A reader never sees half a file, and an existing file keeps its permissions.
    """
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_toml(path: Path) -> dict:
    if tomllib is None:
        raise PackageError(f"reading {path} needs Python 3.11+ or the `tomli` package (pip install tomli)")
    with path.open("rb") as file:
        return tomllib.load(file)


def load_package(folder: Path) -> Package:
    """Describe the package in ``folder`` from its ``pyproject.toml``."""
    pyproject = folder / "pyproject.toml"
    data = read_toml(pyproject)
    project = data.get("project", {})
    version_path = data.get("tool", {}).get("hatch", {}).get("version", {}).get("path")
    if not project.get("name") or not version_path:
        raise PackageError(f"{pyproject}: needs [project] name and [tool.hatch.version] path")
    version_file = folder / version_path
    return Package(
        distribution=project["name"],
        import_name=version_file.parent.name,
        folder=folder,
        version_file=version_file,
        requirements=tuple(project.get("dependencies", ())),
        source_url=project.get("urls", {}).get("Source", ""),
    )


def load_packages(root: Path = REPO_ROOT) -> dict[str, Package]:
    """Every package under ``root/packages``, by distribution name, in name order."""
    packages_dir = root / "packages"
    folders = sorted(path.parent for path in packages_dir.glob("*/pyproject.toml"))
    if not folders:
        raise PackageError(f"no packages found under {packages_dir}")
    packages = [load_package(folder) for folder in folders]
    return {package.distribution: package for package in packages}


def get_package(packages: dict[str, Package], distribution: str) -> Package:
    """``packages[distribution]``, or a ``PackageError`` listing the known names."""
    try:
        return packages[distribution]
    except KeyError:
        known = ", ".join(packages)
        raise PackageError(f"unknown distribution {distribution!r}; the packages are: {known}") from None


def dependents(packages: dict[str, Package], distribution: str) -> list[tuple[Package, str]]:
    """``(package, range)`` for every package that requires ``distribution``."""
    found = []
    for package in packages.values():
        specifier = package.requirement_on(distribution)
        if specifier is not None:
            found.append((package, specifier))
    return found


# -- versions and ranges ---------------------------------------------------------
# PEP 440 through ``packaging`` when it is installed; otherwise the subset the
# release tool needs: N(.N)*[{a|b|rc}N][.postN][.devN] and the comparison
# operators in a comma-separated range.

_FALLBACK_VERSION = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)(?:(?P<pre_l>a|b|rc)(?P<pre_n>\d+))?"
    r"(?:\.post(?P<post>\d+))?(?:\.dev(?P<dev>\d+))?$"
)


class _FallbackVersion:
    def __init__(self, text: str) -> None:
        match = _FALLBACK_VERSION.match(text.strip().lower())
        if not match:
            raise ValueError(f"Invalid version: {text!r}")
        release = [int(part) for part in match["release"].split(".")]
        while len(release) > 1 and release[-1] == 0:
            release.pop()
        self.release = tuple(release)
        self.is_prerelease = match["pre_l"] is not None or match["dev"] is not None
        inf = float("inf")
        pre = (("a", "b", "rc").index(match["pre_l"]), int(match["pre_n"])) if match["pre_l"] else (inf, 0)
        if match["dev"] is not None and not match["pre_l"] and match["post"] is None:
            pre = (-inf, 0)  # 1.0.dev0 sorts before 1.0a0
        post = int(match["post"]) if match["post"] is not None else -inf
        dev = int(match["dev"]) if match["dev"] is not None else inf
        self._key = (self.release, pre, post, dev)
        self._text = match.group(0).lstrip("v")

    def __str__(self) -> str:
        return self._text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FallbackVersion) and self._key == other._key

    def __lt__(self, other: _FallbackVersion) -> bool:
        return self._key < other._key

    def __le__(self, other: _FallbackVersion) -> bool:
        return self._key <= other._key

    def __gt__(self, other: _FallbackVersion) -> bool:
        return self._key > other._key

    def __ge__(self, other: _FallbackVersion) -> bool:
        return self._key >= other._key

    def __hash__(self) -> int:
        return hash(self._key)


def _fallback_admits(specifier: str, version: str) -> bool:
    candidate = _FallbackVersion(version)
    for clause in filter(None, (part.strip() for part in specifier.split(","))):
        match = re.match(r"^(~=|==|!=|<=|>=|<|>)\s*(\S+)$", clause)
        if not match:
            raise ValueError(f"Invalid specifier: {clause!r}")
        operator, bound_text = match.groups()
        bound = _FallbackVersion(bound_text)
        if operator == "~=":
            upper = list(bound.release[:-1]) if len(bound.release) > 1 else list(bound.release)
            upper[-1] += 1
            ok = candidate >= bound and candidate < _FallbackVersion(".".join(map(str, upper)) + ".dev0")
        elif operator == "<":
            # PEP 440: "<V" excludes pre-releases of V itself unless V is one.
            ok = candidate < bound and not (
                candidate.is_prerelease and not bound.is_prerelease and candidate.release == bound.release
            )
        else:
            ok = {
                "==": candidate == bound,
                "!=": candidate != bound,
                "<=": candidate <= bound,
                ">=": candidate >= bound,
                ">": candidate > bound,
            }[operator]
        if not ok:
            return False
    return True


try:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
except ImportError:  # pragma: no cover - exercised through the fallback tests
    HAVE_PACKAGING = False
else:
    HAVE_PACKAGING = True


def parse_version(text: str, use_packaging: bool = HAVE_PACKAGING) -> object:
    """A comparable version, or ``PackageError`` when ``text`` is not PEP 440."""
    try:
        return Version(text) if use_packaging else _FallbackVersion(text)
    except ValueError:  # packaging's InvalidVersion is a ValueError too
        raise PackageError(f"{text!r} is not a valid PEP 440 version (e.g. 0.2.0, 1.0.0rc1)") from None


def admits(specifier: str, version: str, use_packaging: bool = HAVE_PACKAGING) -> bool:
    """Whether the range ``specifier`` admits ``version`` (pre-releases follow PEP 440's rules)."""
    try:
        if use_packaging:
            return SpecifierSet(specifier).contains(Version(version), prereleases=True)
        return _fallback_admits(specifier, version)
    except ValueError as exc:  # InvalidSpecifier / InvalidVersion included
        raise PackageError(f"cannot read the version range {specifier!r}: {exc}") from None
