"""Fixtures shared by every package's tests."""

from __future__ import annotations

import pytest

LIGHTNING_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")


@pytest.fixture(params=LIGHTNING_NAMESPACES, ids=["lightning", "pytorch_lightning"])
def pl(request):
    """The Lightning namespace under test (``lightning.pytorch`` or ``pytorch_lightning``), skipped when absent."""
    return pytest.importorskip(request.param)
