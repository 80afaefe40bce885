"""Tiny models for the bn_verify tests, and a snapshot of everything a check must leave alone."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class Parallel(nn.Module):
    """``bn(conv1(x)) + conv2(x)``: only conv1's bias is cancelled."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv1(x)) + self.conv2(x)


class Between(nn.Module):
    """conv -> ``op`` -> BatchNorm2d, for any op given as a function."""

    def __init__(self, op):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.op = op

    def forward(self, x):
        return self.bn(self.op(self.conv(x)))


class SkipConnection(nn.Module):
    """The biased output is normalized and also added back: its bias is needed."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class CalledTwice(nn.Module):
    """One conv run twice; normalized both times, or only the first time."""

    def __init__(self, normalize_second: bool):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)
        self.normalize_second = normalize_second

    def forward(self, x):
        y = self.conv(self.bn1(self.conv(x)))
        return self.bn2(y) if self.normalize_second else y


class SequenceLinear(nn.Module):
    """Linear on ``(B, T, F)`` then BatchNorm1d, over T as is or over F after a transpose."""

    def __init__(self, transpose: bool, steps: int = 7, features: int = 5):
        super().__init__()
        self.lin = nn.Linear(6, features)
        self.transpose = transpose
        self.bn = nn.BatchNorm1d(features if transpose else steps)

    def forward(self, x):
        y = self.lin(x)
        return self.bn(y.transpose(1, 2) if self.transpose else y)


class CustomAffine(nn.Module):
    """A hand-written linear layer holding its own ``bias`` parameter."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight.t() + self.bias


class FunctionalBlock(nn.Module):
    """A block that normalizes with a functional call in its own forward."""

    def __init__(self, norm: str):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = norm

    def forward(self, x):
        y = self.conv(x)
        if self.norm == "batch_norm":
            return F.batch_norm(y, None, None, training=True)
        if self.norm == "instance_norm":
            return F.instance_norm(y)
        if self.norm == "group_norm":
            return F.group_norm(y, 4)
        return F.layer_norm(y, y.shape[-2:])


class FunctionalBiased(nn.Module):
    """A biased functional call (``F.linear`` / ``F.conv2d`` with the parent's parameters)."""

    def __init__(self, conv: bool):
        super().__init__()
        self.conv = conv
        shape = (4, 3, 3, 3) if conv else (4, 3)
        self.weight = nn.Parameter(torch.randn(shape) * 0.1)
        self.bias = nn.Parameter(torch.zeros(4))
        self.bn = nn.BatchNorm2d(4) if conv else nn.BatchNorm1d(4)

    def forward(self, x):
        y = F.conv2d(x, self.weight, self.bias) if self.conv else F.linear(x, self.weight, self.bias)
        return self.bn(y)


class BasicBlock(nn.Module):
    """A ResNet basic block built the right way (no bias before BatchNorm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return F.relu(out)


class Fails(nn.Module):
    """Raises in forward after BatchNorm ran and random numbers were drawn."""

    def forward(self, x):
        torch.rand(3)
        raise RuntimeError("boom in forward")


class Busy(nn.Module):
    """Has everything a check could disturb: running stats, dropout, randomness, frozen and mixed flags."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 2)
        self.fail = Fails() if fail else nn.Identity()

    def forward(self, x):
        y = self.drop(torch.relu(self.bn(self.conv(x))))
        y = y + 0.01 * torch.randn_like(y)
        return self.fail(self.head(y.mean((2, 3))))


def vgg_bn(channels=(8, "M", 16, "M", 16)) -> nn.Sequential:
    """A VGG-BN-style stack: every conv has a bias and is followed by BatchNorm."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in channels:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            in_channels = item
    return nn.Sequential(*layers)


@pytest.fixture
def busy_model():
    """A Busy model with grads, a user hook, a frozen bias and mixed train/eval flags."""

    def build(fail: bool = False) -> nn.Module:
        torch.manual_seed(0)
        model = Busy(fail=False)
        model(torch.randn(4, 3, 6, 6)).sum().backward()  # .grad tensors exist
        if fail:
            model.fail = Fails()
        model.eval()
        model.drop.train()
        model.head.bias.requires_grad_(False)
        model.register_forward_hook(lambda module, args, output: None)
        model.conv.register_forward_pre_hook(lambda module, args: None)
        return model

    return build


def snapshot(model: nn.Module, inputs: torch.Tensor) -> dict:
    """Everything the contract says a check leaves as it was, item by item."""
    return {
        "parameters": {n: (p, p.detach().clone()) for n, p in model.named_parameters()},
        "buffers": {n: (b, b.clone()) for n, b in model.named_buffers()},
        "grads": {n: (p.grad, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
            for n, m in model.named_modules()
        },
        "inputs": (inputs, inputs.detach().clone(), inputs.requires_grad, inputs.grad),
        "rng": (torch.get_rng_state(), random.getstate()),
    }


def assert_same(item: str, before: dict, after: dict) -> None:
    """Compare one snapshot item: same objects and same values."""
    old, new = before[item], after[item]
    if item in ("parameters", "buffers"):
        assert old.keys() == new.keys()
        for name, (obj, value) in old.items():
            assert new[name][0] is obj, name
            assert torch.equal(new[name][0], value), name
    elif item == "grads":
        for name, (grad, value) in old.items():
            assert new[name][0] is grad, name
            assert grad is None or torch.equal(grad, value), name
    elif item == "inputs":
        obj, value, requires_grad, grad = old
        assert new[0] is obj and torch.equal(obj, value) and obj.requires_grad == requires_grad and obj.grad is grad
    elif item == "rng":
        assert torch.equal(old[0], new[0]) and old[1] == new[1]
    else:
        assert old == new


@pytest.fixture
def nets():
    """The model classes above, by name."""
    import types

    return types.SimpleNamespace(
        Parallel=Parallel,
        Between=Between,
        SkipConnection=SkipConnection,
        CalledTwice=CalledTwice,
        SequenceLinear=SequenceLinear,
        CustomAffine=CustomAffine,
        FunctionalBlock=FunctionalBlock,
        FunctionalBiased=FunctionalBiased,
        BasicBlock=BasicBlock,
        Busy=Busy,
        vgg_bn=vgg_bn,
    )


@pytest.fixture
def state():
    """``state.snapshot(model, inputs)`` and ``state.assert_same(item, before, after)``."""
    import types

    return types.SimpleNamespace(snapshot=snapshot, assert_same=assert_same)
