"""Installing one check into a fresh virtual environment installs neither the other check nor Lightning."""

from __future__ import annotations

import subprocess
import textwrap
import venv

import pytest
import torch

from tests._dists import wheel_of

pytestmark = pytest.mark.packaging

PROBE = {
    "bn-verify": """
        import importlib.util, torch
        from torch import nn
        from bn_verify import BatchNormVerification, BatchNormVerificationCallback
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        verification = BatchNormVerification(model)
        assert verification.check(input_array=torch.rand(2, 3, 8, 8)) is False
        assert verification.detected_pairs == [("0", "1")], verification.detected_pairs
        for name in ("batch_mix_verify", "lightning", "pytorch_lightning"):
            assert importlib.util.find_spec(name) is None, name
        try:
            BatchNormVerificationCallback()
        except ImportError as error:
            assert 'pip install "bn-verify[lightning]"' in str(error), error
        else:
            raise AssertionError("the callback must need Lightning")
        print("PROBE OK")
    """,
    "batch-mix-verify": """
        import importlib.util, torch
        from torch import nn
        from batch_mix_verify import BatchGradientVerification, BatchGradientVerificationCallback

        class Mixer(nn.Module):
            def forward(self, x):
                return x - x.mean(dim=0, keepdim=True)

        assert BatchGradientVerification(Mixer()).check(input_array=torch.rand(4, 3)) is False
        assert BatchGradientVerification(nn.Linear(3, 2)).check(input_array=torch.rand(4, 3)) is True
        for name in ("bn_verify", "lightning", "pytorch_lightning"):
            assert importlib.util.find_spec(name) is None, name
        try:
            BatchGradientVerificationCallback()
        except ImportError as error:
            assert 'pip install "batch-mix-verify[lightning]"' in str(error), error
        else:
            raise AssertionError("the callback must need Lightning")
        print("PROBE OK")
    """,
}


@pytest.fixture(scope="module")
def venv_with_torch(tmp_path_factory):
    """A fresh virtual environment with only the torch version of this run installed."""
    root = tmp_path_factory.mktemp("alone") / "venv"
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    _pip(python, "install", "--quiet", f"torch=={torch.__version__}")
    return python


def _pip(python, *args):
    return subprocess.run([str(python), "-m", "pip", *args], check=True, capture_output=True, text=True)


@pytest.mark.parametrize("distribution", list(PROBE), ids=list(PROBE))
def test_one_check_installs_alone_and_works(venv_with_torch, dists, distribution):
    python = venv_with_torch
    _pip(python, "install", "--quiet", "--no-index", "--find-links", str(dists), str(wheel_of(dists, distribution)))
    try:
        installed = _pip(python, "list", "--format=freeze").stdout.lower()
        assert f"{distribution}==" in installed and "verify-common==" in installed
        for other in {"bn-verify", "batch-mix-verify", "lightning", "pytorch-lightning"} - {distribution}:
            assert f"\n{other}==" not in "\n" + installed, other
        probe = subprocess.run(
            [str(python), "-c", textwrap.dedent(PROBE[distribution])], capture_output=True, text=True
        )
        assert probe.returncode == 0, probe.stderr
        assert "PROBE OK" in probe.stdout
    finally:
        _pip(python, "uninstall", "--yes", distribution, "verify-common")
