"""Bad input gets a clear error; a check changes nothing, also when it raises."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from bn_verify import BatchNormVerification, BatchNormVerificationError


@pytest.mark.parametrize(
    ("input_array", "match"),
    [
        ("not a tensor", r"The input holds no tensor \(got 'not a tensor'\)"),
        ((1, 2.0), r"The input holds no tensor"),
        ({"x": None}, r"The input holds no tensor"),
        (None, r"No input to check Sequential with: pass input_array=\.\.\. or set model\.example_input_array"),
    ],
    ids=["string", "tuple-of-numbers", "dict-without-tensor", "no-input-at-all"],
)
def test_input_without_tensor(input_array, match):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with pytest.raises(BatchNormVerificationError, match=match):
        BatchNormVerification(model).check(input_array=input_array)


def test_forward_that_raises_is_reraised_naming_the_check():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with pytest.raises(BatchNormVerificationError, match=r"BatchNormVerification: the forward pass of Sequential raised RuntimeError") as info:
        BatchNormVerification(model).check(torch.randn(5, 7))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)


def test_model_without_parameters():
    with pytest.raises(BatchNormVerificationError, match=r"ReLU has no parameters, so it has no bias to check"):
        BatchNormVerification(nn.ReLU()).check(torch.randn(2, 3))


def test_not_a_module():
    with pytest.raises(TypeError, match=r"needs a torch.nn.Module, got function"):
        BatchNormVerification(lambda x: x)


ITEMS = ["parameters", "buffers", "grads", "requires_grad", "training", "hooks", "inputs", "rng"]


@pytest.mark.parametrize("item", ITEMS)
@pytest.mark.parametrize("fail", [False, True], ids=["check-returns", "check-raises"])
def test_no_side_effects(busy_model, state, item, fail):
    model = busy_model(fail=fail)
    inputs = torch.randn(3, 3, 6, 6, requires_grad=True)
    torch.manual_seed(123)
    before = state.snapshot(model, inputs)
    verification = BatchNormVerification(model)
    if fail:
        with pytest.raises(BatchNormVerificationError, match="boom in forward"):
            verification.check(inputs)
    else:
        assert not verification.check(inputs)
        assert verification.detected_pairs == [("conv", "bn")]
    state.assert_same(item, before, state.snapshot(model, inputs))


def test_model_output_unchanged_by_a_check(busy_model):
    model = busy_model().eval()
    x = torch.randn(3, 3, 6, 6)
    torch.manual_seed(5)
    expected = model(x)
    BatchNormVerification(model).check(x)
    torch.manual_seed(5)
    assert torch.equal(model(x), expected)


def test_importing_does_not_import_lightning_or_transformers():
    code = "import sys, bn_verify; print(sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_module_is_refused_clearly():
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    with pytest.raises(BatchNormVerificationError, match=r"'<root>' is a TorchScript module"):
        BatchNormVerification(scripted).check(torch.randn(2, 3, 8, 8))


class _RewritesWeights(nn.Module):
    """A forward pass that rewrites a parameter in place (embedding max_norm, weight clipping)."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        if kind == "embedding-bag":
            self.embed = nn.EmbeddingBag(10, 4, max_norm=0.5)
        else:
            self.embed = nn.Embedding(10, 4, max_norm=0.5 if kind == "embedding" else None)
        self.linear = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, ids):
        if self.kind == "clamp":
            with torch.no_grad():
                self.linear.weight.clamp_(-0.01, 0.01)
        return self.bn(self.linear(self.embed(ids)))


@pytest.mark.parametrize(
    "kind",
    ["embedding", "embedding-bag", "clamp"],
    ids=["embedding-max-norm", "embedding-bag-max-norm", "clamp_-in-forward"],
)
def test_parameters_rewritten_by_the_forward_pass_are_put_back(kind):
    torch.manual_seed(0)
    model = _RewritesWeights(kind)
    ids = torch.randint(0, 10, (6, 3) if kind == "embedding-bag" else (6,))
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    objects = dict(model.named_parameters())
    assert BatchNormVerification(model).check(ids) is False
    for name, param in model.named_parameters():
        assert param is objects[name]
        assert torch.equal(param, before[name]), name
