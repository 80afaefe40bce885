"""Test-run wiring that must happen before anything imports a check.

``VERIFY_VENDORED_DIR``: when set, the checks are imported from the
single-file copies that ``tools/vendor.py`` writes there, instead of from
installed packages.  The checks' tests then run unchanged against the
vendored files, in an environment where ``verify_common`` is not installed;
the package sources (doctests), the tests of ``verify_common`` itself, the
tools and the cross-package integration tests are not collected.
"""

from __future__ import annotations

import importlib.abc
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
VENDORED_DIR = os.environ.get("VERIFY_VENDORED_DIR")

collect_ignore: list[str] = []

if VENDORED_DIR:
    collect_ignore += ["packages", "tools", "tests/verify_common", "tests/integration", "tests/tools"]
    _target = Path(VENDORED_DIR).resolve()
    _target.mkdir(parents=True, exist_ok=True)
    for _distribution in ("bn-verify", "batch-mix-verify"):
        subprocess.run(
            [sys.executable, str(REPO_ROOT / "tools" / "vendor.py"), _distribution, str(_target)],
            check=True,
        )
    sys.path.insert(0, str(_target))

    class _HideVerifyCommon(importlib.abc.MetaPathFinder):
        """Refuse ``verify_common``: a vendored check must not need it, installed or not."""

        def find_spec(self, name, path=None, target=None):
            if name == "verify_common" or name.startswith("verify_common."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden in the vendored test run)", name=name)
            return None

    sys.meta_path.insert(0, _HideVerifyCommon())
