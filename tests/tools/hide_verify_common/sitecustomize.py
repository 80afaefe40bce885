"""Make ``verify_common`` unimportable in this interpreter, installed or not.

Put this folder on ``PYTHONPATH`` to run code as in a project that took a
vendored check but never installed ``verify-common``::

    PYTHONPATH=tests/tools/hide_verify_common VERIFY_VENDORED_DIR=/tmp/vendored \\
        python -m pytest tests/bn_verify tests/batch_mix_verify

Python imports ``sitecustomize`` at start-up; the finder below then refuses
``verify_common`` and its submodules before any other finder sees them.
"""

import importlib.abc
import sys

HIDDEN = "verify_common"


class _HideVerifyCommon(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == HIDDEN or name.startswith(HIDDEN + "."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by {__file__})", name=name)
        return None


sys.meta_path.insert(0, _HideVerifyCommon())
