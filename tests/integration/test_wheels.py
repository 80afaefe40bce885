"""The built wheels carry the right metadata and only their own package's code."""

from __future__ import annotations

import re

import pytest

from tests._dists import PACKAGES, REPO_ROOT, wheel_metadata, wheel_of

pytestmark = pytest.mark.packaging


def _source_version(distribution: str) -> str:
    about = REPO_ROOT / "packages" / distribution / "src" / PACKAGES[distribution] / "__about__.py"
    return re.search(r'__version__ = "([^"]+)"', about.read_text()).group(1)


@pytest.mark.parametrize("distribution", list(PACKAGES), ids=list(PACKAGES))
def test_wheel_name_and_version(dists, distribution):
    _, headers = wheel_metadata(wheel_of(dists, distribution))
    assert headers["Name"] == [distribution]
    assert headers["Version"] == [_source_version(distribution)]
    assert headers["License-Expression"] == ["MIT"]
    assert any(value.startswith("torch") for value in headers["Requires-Dist"])


@pytest.mark.parametrize("distribution", ["bn-verify", "batch-mix-verify"], ids=["bn-verify", "batch-mix-verify"])
def test_check_wheels_depend_on_a_compatible_verify_common_range_and_offer_lightning(dists, distribution):
    from packaging.requirements import Requirement

    _, headers = wheel_metadata(wheel_of(dists, distribution))
    requirements = [Requirement(value) for value in headers["Requires-Dist"]]
    (common,) = [r for r in requirements if r.name == "verify-common"]
    assert common.marker is None
    assert common.specifier.contains(_source_version("verify-common"))
    assert not common.specifier.contains("0.2.0") and not common.specifier.contains("1.0.0")
    assert headers["Provides-Extra"] == ["lightning"]
    (lightning,) = [r for r in requirements if r.name == "lightning"]
    assert str(lightning.marker) == 'extra == "lightning"'
    assert not any(r.name in {"bn-verify", "batch-mix-verify"} for r in requirements)


def test_verify_common_wheel_has_no_extras_and_no_lightning(dists):
    _, headers = wheel_metadata(wheel_of(dists, "verify-common"))
    assert "Provides-Extra" not in headers
    assert not any("lightning" in value for value in headers["Requires-Dist"])


@pytest.mark.parametrize("distribution", list(PACKAGES), ids=list(PACKAGES))
def test_wheel_holds_only_its_own_package(dists, distribution):
    names, _ = wheel_metadata(wheel_of(dists, distribution))
    own = PACKAGES[distribution]
    top_levels = {name.split("/")[0] for name in names}
    assert top_levels == {own, f"{own}-{_source_version(distribution)}.dist-info"}
    assert f"{own}/py.typed" in names
    assert f"{own}/__init__.py" in names
    others = [other for other in PACKAGES.values() if other != own]
    assert not [name for name in names if any(other in name for other in others)]
    assert not [name for name in names if "test" in name.split("/")[-1]]
