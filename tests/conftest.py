"""Test-suite wiring shared by every package's tests.

``VERIFY_VENDORED_DIR``: when set, the checks are imported from the
single-file copies that ``tools/vendor.py`` writes there, instead of from the
installed packages.  The check tests then run unchanged against the vendored
files, in an environment where ``verify_common`` is not installed; the tests of
``verify_common`` itself and the cross-package integration tests are skipped.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENDORED_DIR = os.environ.get("VERIFY_VENDORED_DIR")

collect_ignore_glob: list[str] = []
if VENDORED_DIR:
    collect_ignore_glob += ["verify_common/*", "integration/*", "tools/*", "../packages/*"]
    target = Path(VENDORED_DIR).resolve()
    target.mkdir(parents=True, exist_ok=True)
    for distribution in ("bn-verify", "batch-mix-verify"):
        subprocess.run(
            [sys.executable, str(REPO_ROOT / "tools" / "vendor.py"), distribution, str(target)],
            check=True,
        )
    sys.path.insert(0, str(target))


LIGHTNING_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")


@pytest.fixture(params=LIGHTNING_NAMESPACES, ids=["lightning", "pytorch_lightning"])
def pl(request):
    """The Lightning namespace under test (``lightning.pytorch`` or ``pytorch_lightning``), skipped when absent."""
    return pytest.importorskip(request.param)


def lightning_installed() -> bool:
    """True when at least one Lightning namespace can be imported."""
    return any(importlib.util.find_spec(name.split(".")[0]) is not None for name in LIGHTNING_NAMESPACES)
