"""No side effects: the model, the caller's inputs and the RNG are exactly as before, also on errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batch_mix_verify import BatchGradientVerification, BatchGradientVerificationError


class Busy(nn.Module):
    """BatchNorm in training mode, dropout, a frozen layer, an eval-mode submodule and user hooks."""

    def __init__(self, mode="clean"):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.bn_no_stats = nn.BatchNorm2d(4, track_running_stats=False)
        self.drop = nn.Dropout(0.3)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(4, 2).eval()

    def forward(self, x):
        h = self.drop(torch.relu(self.bn_no_stats(self.bn(self.conv(x))))).mean(dim=(2, 3))
        h = self.head(self.frozen(h))
        if self.mode == "mixing":
            h = h.cumsum(0)
        elif self.mode == "raises":
            raise RuntimeError("boom after the BatchNorm ran")
        elif self.mode == "no-grad":
            h = h.detach()
        return h


def prepare(model):
    model.train()
    model.head.eval()
    model.conv.weight.grad = torch.full_like(model.conv.weight, 0.5)  # the user's own gradients
    model.head.bias.grad = torch.ones_like(model.head.bias)
    seen = []
    model.conv.register_forward_hook(lambda m, a, o: seen.append("hook"))
    model.register_forward_pre_hook(lambda m, a: seen.append("pre"))
    torch.manual_seed(123)
    return seen


@pytest.mark.parametrize(
    ("mode", "kwargs", "error"),
    [
        ("clean", {}, None),
        ("mixing", {}, None),
        ("mixing", {"sample_idx": 3}, None),
        ("raises", {}, "boom after the BatchNorm ran"),
        ("no-grad", {}, "not differentiable"),
        ("clean", {"sample_idx": 9}, "sample_idx=9 is out of range"),
    ],
    ids=["clean", "mixing", "mixing-sample-idx", "forward-raises", "output-not-differentiable", "bad-sample-idx"],
)
def test_model_state_and_rng_are_restored(snapshot, mode, kwargs, error):
    model = Busy(mode)
    x = torch.randn(4, 3, 5, 5)
    seen = prepare(model)
    state = snapshot(model)
    if error is None:
        BatchGradientVerification(model).check(input_array=x, **kwargs)
    else:
        with pytest.raises(BatchGradientVerificationError, match=error):
            BatchGradientVerification(model).check(input_array=x, **kwargs)
    state.assert_unchanged()
    seen.clear()
    try:
        model(x)
    except RuntimeError:
        assert mode == "raises"
    assert seen == ["pre", "hook"]  # the user's hooks still fire, exactly once each, and no hook of the check


def test_training_after_a_check_is_unchanged():
    def train(run_check):
        torch.manual_seed(0)
        model = Busy("clean")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(3):
            x = torch.randn(4, 3, 5, 5)
            if run_check:
                assert BatchGradientVerification(model).check(input_array=x)
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return model.state_dict()

    with_check, without = train(True), train(False)
    assert all(torch.equal(with_check[key], without[key]) for key in without)


@pytest.mark.parametrize("mode", ["clean", "mixing", "raises"])
def test_caller_inputs_are_untouched(mode):
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    nested = {"x": x, "meta": [torch.arange(4), "tag"]}
    before = x.detach().clone()

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Busy(mode)

        def forward(self, x, meta):
            x.mul_(1.0) if not x.requires_grad else None
            return self.inner(x) + meta[0].unsqueeze(1)

    try:
        BatchGradientVerification(Wrapper()).check(input_array=nested)
    except BatchGradientVerificationError:
        assert mode == "raises"
    assert nested["x"] is x and nested["meta"][1] == "tag" and torch.equal(nested["meta"][0], torch.arange(4))
    assert x.requires_grad and x.is_leaf and x.grad is None
    assert torch.equal(x.detach(), before)
    y = torch.randn(4, 2)
    BatchGradientVerification(nn.Linear(2, 2)).check(input_array=y)
    assert not y.requires_grad and y.grad is None


def test_integer_follower_is_gone_after_the_check():
    model = nn.Sequential(nn.Embedding(10, 3), nn.Flatten(), nn.Linear(12, 2))
    BatchGradientVerification(model).check(torch.randint(0, 10, (3, 4)))
    out = torch.randint(0, 10, (3,)).float()  # no mode left active: plain tensors, no grad
    assert not out.requires_grad


class _RenormalizingEmbedding(nn.Module):
    """``nn.Embedding(max_norm=...)`` rewrites its weight rows in place on every forward pass."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4, max_norm=0.5)
        self.head = nn.Linear(4, 2)

    def forward(self, ids):
        return self.head(self.emb(ids))


def test_parameters_rewritten_by_the_forward_pass_are_put_back():
    torch.manual_seed(0)
    model = _RenormalizingEmbedding()
    weight = model.emb.weight.detach().clone()
    assert BatchGradientVerification(model).check(torch.randint(0, 10, (4, 3)))
    assert torch.equal(model.emb.weight, weight)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (lambda: nn.Sequential(nn.LazyLinear(3), nn.ReLU()), True),
        (lambda: nn.Sequential(nn.LazyLinear(3), _MeanOverBatch()), False),
    ],
    ids=["clean", "mixing"],
)
def test_lazy_modules_are_checked_on_a_copy_and_stay_lazy(model, expected):
    lazy = model()
    assert BatchGradientVerification(lazy).check(torch.randn(4, 5)) is expected
    assert isinstance(lazy[0].weight, nn.parameter.UninitializedParameter)


class _MeanOverBatch(nn.Module):
    def forward(self, x):
        return x - x.mean(dim=0, keepdim=True)
