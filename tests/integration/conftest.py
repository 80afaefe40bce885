"""Fixtures that build the three packages' distributions once per test session."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "verify-common": "verify_common",
    "bn-verify": "bn_verify",
    "batch-mix-verify": "batch_mix_verify",
}

@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> Path:
    """A folder holding a freshly built wheel and sdist of every package."""
    pytest.importorskip("build", reason="the 'build' package is needed to build distributions")
    outdir = tmp_path_factory.mktemp("dist")
    for distribution in PACKAGES:
        subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(outdir),
             str(REPO_ROOT / "packages" / distribution)],
            check=True,
            capture_output=True,
            text=True,
        )
    return outdir


def wheel_of(dists: Path, distribution: str) -> Path:
    (wheel,) = dists.glob(f"{distribution.replace('-', '_')}-*.whl")
    return wheel


def wheel_metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The wheel's file names and its METADATA headers (each header name -> values)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(meta_name).decode()
    headers: dict[str, list[str]] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        if ": " in line and not line.startswith(" "):
            key, value = line.split(": ", 1)
            headers.setdefault(key, []).append(value)
    return names, headers
