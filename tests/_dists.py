"""Building the three packages' distributions, and reading the wheels.

The session fixture ``dists`` (tests/conftest.py) builds them once for every
test that needs them: the wheel tests, the fresh-venv installs, the README check.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "verify-common": "verify_common",
    "bn-verify": "bn_verify",
    "batch-mix-verify": "batch_mix_verify",
}


def build_dists(outdir: Path) -> Path:
    """Build a wheel and an sdist of every package into ``outdir``.

    Without build isolation when the backend is installed already: no download, and much faster.
    """
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-isolation"]
    for distribution in PACKAGES:
        subprocess.run(
            [sys.executable, "-m", "build", *isolation, "--sdist", "--wheel", "--outdir", str(outdir),
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
