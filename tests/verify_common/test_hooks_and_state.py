import random

import pytest
import torch
from torch import nn

from verify_common import ModelState, forward_hooks, preserved_state


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))


def test_forward_hooks_are_removed_when_the_body_raises():
    model = _model()
    with pytest.raises(KeyError):
        with forward_hooks(model.named_modules(), hook=lambda *a: None, pre_hook=lambda *a: None):
            assert len(model[0]._forward_hooks) == 1
            raise KeyError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_forward_pre_hook_sees_args_and_kwargs():
    seen = []

    class TwoInputs(nn.Module):
        def forward(self, x, *, scale):
            return x * scale

    module = TwoInputs()
    with forward_hooks([("root", module)], pre_hook=lambda n, m, a, k: seen.append((n, len(a), sorted(k)))):
        module(torch.ones(1), scale=2.0)
    assert seen == [("root", 1, ["scale"])]


def _snapshot(model):
    return {
        "params": {k: v.detach().clone() for k, v in model.named_parameters()},
        "buffers": {k: v.detach().clone() for k, v in model.named_buffers()},
        "grads": {k: (None if v.grad is None else v.grad.clone()) for k, v in model.named_parameters()},
        "requires_grad": {k: v.requires_grad for k, v in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {k: (len(m._forward_hooks), len(m._forward_pre_hooks)) for k, m in model.named_modules()},
    }


def _assert_same(before, after):
    assert before.keys() == after.keys()
    for key in ("requires_grad", "training", "hooks"):
        assert before[key] == after[key], key
    for key in ("params", "buffers", "grads"):
        for name, value in before[key].items():
            other = after[key][name]
            assert (value is None) == (other is None), (key, name)
            if value is not None:
                assert torch.equal(value, other), (key, name)


def test_preserved_state_undoes_everything_a_check_could_change():
    model = _model()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model.eval()
    before = _snapshot(model)
    grad_object = model[0].weight.grad
    running_mean = model[1].running_mean
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    py_before = random.getstate()

    with pytest.raises(RuntimeError, match="inside"):
        with preserved_state(model):
            model.train()
            for p in model.parameters():
                p.requires_grad_(False)
            model[0].weight.grad = None
            model[1].register_forward_hook(lambda *a: None)
            model(torch.randn(8, 4))  # updates BatchNorm running statistics, uses RNG
            random.random()
            torch.set_grad_enabled(False)
            raise RuntimeError("inside")

    _assert_same(before, _snapshot(model))
    assert model[0].weight.grad is grad_object
    assert model[1].running_mean is running_mean
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert random.getstate() == py_before
    assert torch.is_grad_enabled()


def test_model_state_capture_and_restore_keep_user_hooks():
    model = _model()
    handle = model[0].register_forward_hook(lambda *a: None)
    state = ModelState.capture(model)
    model[0].register_forward_hook(lambda *a: None)
    state.restore()
    assert list(model[0]._forward_hooks) == [handle.id]


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda m: nn.functional.embedding(torch.tensor([[0, 1]]), m.emb.weight, max_norm=0.1),
        lambda m: m.lin.weight.data.clamp_(-0.01, 0.01),
        lambda m: m.lin.bias.data.zero_(),
    ],
    ids=["embedding-max-norm", "clamp_", "zero_"],
)
def test_parameters_rewritten_in_place_are_put_back(rewrite):
    model = nn.Module()
    model.emb, model.lin = nn.Embedding(4, 3), nn.Linear(3, 3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with preserved_state(model), torch.no_grad():
        rewrite(model)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_untouched_parameters_keep_their_version_so_callers_graphs_stay_valid():
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    x = torch.ones(2, 3, requires_grad=True)
    loss = model(x).sum()  # the graph saves the weight (for the input's gradient)
    with preserved_state(model):
        model(torch.ones(2, 3))
    loss.backward()  # raises if a saved parameter's version moved
    assert x.grad is not None
