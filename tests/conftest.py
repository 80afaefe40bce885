"""Fixtures and collection rules shared by every package's tests."""

from __future__ import annotations

import os

import pytest

from tests._dists import build_dists

LIGHTNING_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")


@pytest.fixture(params=LIGHTNING_NAMESPACES, ids=["lightning", "pytorch_lightning"])
def pl(request):
    """The Lightning namespace under test (``lightning.pytorch`` or ``pytorch_lightning``), skipped when absent."""
    return pytest.importorskip(request.param)


def pytest_collection_modifyitems(config, items):
    # Wheel builds and fresh virtual environments are slow: they run in one
    # matrix cell (hatch.toml sets VERIFY_PACKAGING_TESTS=1 in the
    # Lightning-free cell, where "Lightning is not importable" is testable).
    if os.environ.get("VERIFY_PACKAGING_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="packaging tests run where VERIFY_PACKAGING_TESTS=1 (the lightning=none matrix cell)")
    for item in items:
        if "packaging" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def dists(tmp_path_factory):
    """A folder holding a freshly built wheel and sdist of every package (built once per session)."""
    pytest.importorskip("build", reason="the 'build' package is needed to build distributions")
    return build_dists(tmp_path_factory.mktemp("dist"))
