"""Fixtures for the tests of tools/: the tools loaded by path, and package trees in tmp_path.

A fixture tree is a ``packages/`` folder like the repository's: a copy of the
real ``verify-common`` plus small check packages written by the tests, so the
vendoring and release tools are tested on code that does not change under
them while the real checks are being written.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / "tools"
HIDE_VERIFY_COMMON = Path(__file__).resolve().parent / "hide_verify_common"

# The blocker is a sitecustomize for subprocesses; importing it here would hide verify_common from pytest itself.
collect_ignore = ["hide_verify_common"]

_IGNORED = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc", "dist", "build")


def load_tool(name: str):
    """Import ``tools/<name>.py`` by path (tools/ is not a package)."""
    module_name = f"_tool_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def run_tool(name: str, *args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python tools/<name>.py args...`` the way a developer does, capturing its output."""
    return subprocess.run(
        [sys.executable, str(TOOLS / f"{name}.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )


def run_hidden(code: str, *path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where ``verify_common`` cannot be imported.

    ``path`` folders go first on ``sys.path`` (the vendored files).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HIDE_VERIFY_COMMON), *map(str, path)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)


PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "{distribution}"
dynamic = ["version"]
description = "A fixture package."
readme = "README.md"
license = "MIT"
requires-python = ">=3.10"
dependencies = [{dependencies}]

[project.urls]
Source = "https://example.invalid/{distribution}"

[tool.hatch.version]
path = "src/{import_name}/__about__.py"
"""

CHANGELOG = """\
# Changelog

## Unreleased

### Added

- First release.
"""


def write_package(
    packages_dir: Path,
    distribution: str,
    modules: dict[str, str],
    version: str = "0.1.0",
    dependencies: tuple[str, ...] = ('"verify-common>=0.1.0,<0.2"', '"torch>=2.1"'),
) -> Path:
    """Write ``packages_dir/<distribution>`` with ``modules`` (file name -> source, dedented)."""
    import_name = distribution.replace("-", "_")
    folder = packages_dir / distribution
    src = folder / "src" / import_name
    src.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        PYPROJECT.format(distribution=distribution, import_name=import_name, dependencies=", ".join(dependencies))
    )
    (folder / "README.md").write_text(f"# {distribution}\n")
    (folder / "CHANGELOG.md").write_text(CHANGELOG)
    shutil.copy(REPO_ROOT / "packages" / "verify-common" / "LICENSE", folder / "LICENSE")
    (src / "__about__.py").write_text(f'__version__ = "{version}"\n')
    for filename, source in modules.items():
        (src / filename).write_text(textwrap.dedent(source).lstrip("\n"))
    return folder


TINY_CHECK = {
    "__init__.py": '''
        """A tiny check that uses most of verify_common, for the vendoring tests."""

        from ._callback import TinyCallback
        from ._check import TinyCheck, TinyError, TinyWarning
        from .__about__ import __version__

        __all__ = ["TinyCallback", "TinyCheck", "TinyError", "TinyWarning", "__version__"]
        ''',
    "_names.py": '''
        """Names the modules that ran."""

        from __future__ import annotations

        from torch import nn

        from verify_common import describe_module


        def _tiny_label(name: str, module: nn.Module) -> str:
            return describe_module(name, module)
        ''',
    "_check.py": '''
        """Fails when a Dropout runs in the forward pass."""

        from __future__ import annotations

        from typing import Any

        import torch
        from torch import nn

        from verify_common import (
            VerificationError,
            call_model,
            forward_hooks,
            preserved_state,
            resolve_input,
        )
        from ._names import _tiny_label


        class TinyWarning(UserWarning):
            """A dropout ran."""


        class TinyError(VerificationError):
            """The tiny check could not run."""


        class TinyCheck:
            """Runs the model once and records the modules that ran.

            Keeps blank lines inside strings as they are:


            (two above)
            """

            def __init__(self, model: nn.Module) -> None:
                self.model = model
                self.seen: list[str] = []

            def check(self, input_array: Any = None) -> bool:
                call_args = resolve_input(self.model, input_array, error=TinyError)
                hook = lambda name, module, args, output: self.seen.append(_tiny_label(name, module))
                with preserved_state(self.model), torch.no_grad():
                    with forward_hooks(self.model.named_modules(), hook=hook):
                        call_model(self.model, call_args, "TinyCheck", error=TinyError)
                return not any("Dropout" in label for label in self.seen)
        ''',
    "_callback.py": '''
        """The Lightning callback of the tiny check."""

        from __future__ import annotations

        from verify_common import CallArgs, VerificationCallback
        from ._check import TinyCheck, TinyWarning


        class TinyCallback(VerificationCallback):
            """Runs TinyCheck at the start of training."""

            install_command = 'pip install "tiny-check[lightning]"'
            warning_category = TinyWarning

            def run_check(self, pl_module, call_args: CallArgs) -> tuple[bool, str]:
                check = TinyCheck(pl_module)
                ok = check.check(call_args)
                return ok, f"a dropout ran in {type(pl_module).__name__}"
        ''',
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A repository root in tmp_path: a copy of the real verify-common and the ``tiny-check`` package."""
    root = tmp_path / "repo"
    packages_dir = root / "packages"
    packages_dir.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "packages" / "verify-common", packages_dir / "verify-common", ignore=_IGNORED)
    write_package(packages_dir, "tiny-check", TINY_CHECK)
    return root


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A repository root in tmp_path holding a copy of the repository's real packages."""
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "packages", root / "packages", ignore=_IGNORED)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, to assert what a tool did (not) write."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# Test modules use these through fixtures rather than importing this conftest.


@pytest.fixture(scope="session")
def vendor_tool():
    return load_tool("vendor")


@pytest.fixture(scope="session")
def release_tool():
    return load_tool("release")


@pytest.fixture(scope="session")
def packages_tool():
    # The tools import their helper as the top-level module `_packages`; share that one module.
    load_tool("vendor")
    return sys.modules["_packages"]


@pytest.fixture(name="run_tool", scope="session")
def _run_tool():
    return run_tool


@pytest.fixture(name="run_hidden", scope="session")
def _run_hidden():
    return run_hidden


@pytest.fixture(name="write_package", scope="session")
def _write_package():
    return write_package


@pytest.fixture(name="snapshot", scope="session")
def _snapshot():
    return snapshot


@pytest.fixture
def tiny_check_modules() -> dict[str, str]:
    return dict(TINY_CHECK)
